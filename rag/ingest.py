"""Keep an index in step with folders: scan, diff by content hash, read -> split -> encode
-> store, one bad file never stopping the batch. Work is committed every
`commit_every_chunks` chunks, so a crash loses at most that much and never a file's half."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .chunking import Splitter
from .documents import Limits, read, supported
from .encoder import Encoder
from .errors import UnreadableFile
from .settings import Settings
from .store import Store, is_index_dir

log = logging.getLogger(__name__)
SKIP_DIRS = {"node_modules", "__pycache__", "site-packages"}


@dataclass
class IngestReport:
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    skipped: int = 0
    failed: list[dict] = field(default_factory=list)
    skipped_files: list[dict] = field(default_factory=list)  # {"path", "reason"}
    chunks: int = 0
    tokens: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        rate = f", {self.chunks / self.seconds:.0f} chunks/s" if self.chunks and self.seconds else ""
        return (f"added {self.added}, updated {self.updated}, removed {self.removed}, "
                f"unchanged {self.unchanged}, skipped {self.skipped}, failed {len(self.failed)} "
                f"in {self.seconds:.1f}s ({self.chunks} new chunks{rate})")


def absolute(path: str | Path) -> Path:
    """An absolute path whose folders are resolved but whose last part is kept as named, so a
    link is known by its own name (and pruned when it goes) rather than by its target."""
    path = Path(os.path.abspath(Path(path).expanduser()))
    return path.parent.resolve() / path.name if path.name else path.resolve()


@dataclass
class Scan:
    files: list[Path] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"}: nothing vanishes silently
    roots: list[Path] = field(default_factory=list)  # folders walked (prune looks only under these)


def scan(paths: list[Path], index_root: Path, follow_links: bool = False) -> Scan:
    """Files under `paths` (recursively). Hidden entries and index directories are passed over;
    links out of the folder (unless `follow_links`), link loops, FIFOs and other special files,
    and unsupported types are skipped with a reason."""
    result = Scan()
    seen_dirs: set[tuple[int, int]] = set()
    index_root = index_root.resolve()

    def skip(path: Path, reason: str) -> None:
        result.skipped.append({"path": str(path), "reason": reason})

    def admit(path: Path, root: Path | None) -> None:
        try:
            if path.is_symlink():
                target = path.resolve(strict=True)
                if root is not None and not follow_links and not _under(str(target), root):
                    return skip(path, f"link to {target}, outside the folder (--follow-links to include)")
            mode = path.stat().st_mode
        except RuntimeError:
            return skip(path, "symlink loop")
        except OSError:
            return skip(path, "broken link" if path.is_symlink() else "cannot be opened")
        if not stat.S_ISREG(mode):
            return skip(path, "not a regular file (FIFO, socket or device)")
        if not supported(path):
            return skip(path, f"unsupported file type {path.suffix or path.name!r}")
        result.files.append(path)

    for given in paths:
        root = absolute(given)
        if not root.is_dir():
            admit(root, None)  # a file named on purpose is read even through a link
            continue
        root = root.resolve()
        result.roots.append(root)
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            here = Path(dirpath)
            st = here.stat()
            if (st.st_dev, st.st_ino) in seen_dirs or here.resolve() == index_root or is_index_dir(here):
                if (st.st_dev, st.st_ino) in seen_dirs and here.is_symlink():
                    skip(here, "link to a folder already walked (a loop or a duplicate)")
                dirnames[:] = []
                continue
            seen_dirs.add((st.st_dev, st.st_ino))
            kept = []
            for d in sorted(dirnames):
                if d.startswith(".") or d in SKIP_DIRS:
                    continue
                sub = here / d
                if sub.is_symlink():
                    try:
                        target = sub.resolve(strict=True)
                    except (OSError, RuntimeError):
                        skip(sub, "broken link or symlink loop")
                        continue
                    if not follow_links and not _under(str(target), root):
                        skip(sub, f"link to {target}, outside the folder (--follow-links to include)")
                        continue
                kept.append(d)
            dirnames[:] = kept
            for name in sorted(filenames):
                if not name.startswith("."):
                    admit(here / name, root)
    result.files = list(dict.fromkeys(result.files))
    return result


def limits(settings: Settings) -> Limits:
    return Limits(settings.max_inflated_mb, settings.max_text_mb, settings.max_json_depth)


def sample_text(paths, limits: Limits = Limits(), files: int = 20, chars: int = 200_000,
                max_bytes: int = 2 * 2**20, per_file: int = 20_000) -> str:
    """Text of the first few small readable files under `paths`: enough to tell their
    language, cheap whatever the folder holds (large files are passed over)."""
    found = scan([Path(p).expanduser() for p in paths], Path("/nonexistent"))
    parts, size = [], 0
    for path in found.files[:files]:
        try:
            if path.stat().st_size > max_bytes:
                continue
            text = read(path, limits=limits).text
        except Exception:  # noqa: BLE001 - ingest reports it properly later
            continue
        parts.append(text[:min(per_file, chars - size)])  # no one file speaks for all
        size += len(parts[-1])
        if size >= chars:
            break
    return "\n".join(parts)


class Ingestor:
    def __init__(self, store: Store, encoder: Encoder, settings: Settings):
        self.store, self.encoder, self.settings = store, encoder, settings
        self.splitter = Splitter(encoder.tokenizer, settings.chunk_size, settings.chunk_overlap,
                                 settings.max_chunk_chars)
        self.limits = limits(settings)

    def run(self, paths: list[str | Path], prune: bool = True, progress: bool = True,
            wait: float = 0.0, on_file=None) -> IngestReport:
        """`on_file(done, total, path)` is called after each file (the web UI's progress bar)."""
        started = time.perf_counter()
        report = IngestReport()
        found = scan([Path(p).expanduser() for p in paths], self.store.root, self.settings.follow_links)
        files, roots = found.files, found.roots
        report.skipped_files, report.skipped = found.skipped, len(found.skipped)
        max_bytes = int(self.settings.max_file_mb * 1024 * 1024)
        with self.store.writer(wait=wait, ann_threshold=self.settings.ann_threshold) as w:
            known = w.documents()
            pending: list[tuple] = []  # (path, sha, mtime, size, is_new, chunks)
            pending_chunks = 0
            since_commit = 0
            bar = _progress(len(files), progress)
            for done, path in enumerate(files, 1):
                bar.set_postfix_str(path.name[-30:], refresh=False)
                key = str(path)
                old = known.get(key)
                try:
                    st = path.stat()
                    if old and old[3] == "ok" and old[4] is None and old[1] == st.st_mtime and old[2] == st.st_size:
                        report.unchanged += 1
                        continue
                    if st.st_size > max_bytes:
                        raise UnreadableFile(f"file is {st.st_size / 2**20:.1f} MB, over the "
                                             f"{self.settings.max_file_mb:g} MB limit (max_file_mb)")
                    data = _read_bytes(path)
                    sha = hashlib.sha256(data).hexdigest()
                    if old and old[0] == sha and old[3] == "ok":
                        w.put_document(key, sha, st.st_mtime, st.st_size)
                        report.unchanged += 1
                        continue
                    if w.has_content(sha) or any(p[1] == sha for p in pending):
                        chunks = None  # identical content already embedded: link, don't embed
                    else:
                        chunks = self.splitter.split(read(path, data, self.limits))
                        if not chunks:
                            raise UnreadableFile("no text found")
                except UnreadableFile as e:
                    self._fail(w, report, key, str(e), old)
                    continue
                except Exception as e:  # a reader bug must not abort the batch either
                    log.debug("reading %s failed", key, exc_info=True)
                    self._fail(w, report, key, f"{type(e).__name__}: {e}", old)
                    continue
                finally:
                    bar.update(1)
                    if on_file is not None:
                        on_file(done, len(files), key)
                pending.append((key, sha, st.st_mtime, st.st_size, old is None or old[3] != "ok", chunks))
                pending_chunks += len(chunks or ())
                if pending_chunks >= self.settings.encode_batch_size * 4:
                    since_commit += self._flush(w, pending, report)
                    pending, pending_chunks = [], 0
                    if since_commit >= self.settings.commit_every_chunks:
                        w.commit()
                        since_commit = 0
            since_commit += self._flush(w, pending, report)
            bar.close()
            if prune:
                seen = {str(f) for f in files}
                for key in known:
                    if key not in seen and any(_under(key, r) for r in roots):
                        w.drop_if_unused(w.delete_document(key))
                        report.removed += 1
            w.commit()
        report.seconds = round(time.perf_counter() - started, 3)
        return report

    def _flush(self, w, pending: list[tuple], report: IngestReport) -> int:
        """Encode the pending files' chunks in one batch and store them, file by file."""
        texts = [c.text for *_, chunks in pending if chunks for c in chunks]
        vectors = self.encoder.encode(texts)
        lengths = self.splitter.counts(texts)
        offset = 0
        for key, sha, mtime, size, is_new, chunks in pending:
            n = len(chunks or ())
            if chunks is not None and not w.has_content(sha):
                n_tokens = sum(lengths[offset:offset + n])
                w.add_content(sha, chunks, vectors[offset:offset + n], n_tokens)
                report.chunks += n
                report.tokens += n_tokens
            offset += n
            w.drop_if_unused(w.put_document(key, sha, mtime, size))
            if is_new:
                report.added += 1
            else:
                report.updated += 1
        return len(texts)

    @staticmethod
    def _fail(w, report: IngestReport, key: str, reason: str, old) -> None:
        report.failed.append({"path": key, "reason": reason})
        if old and old[3] == "ok" and old[0]:
            w.note_error(key, reason)  # the previous version stays searchable
        else:
            w.put_document(key, None, 0.0, 0, status="failed", error=reason)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise UnreadableFile(f"cannot read: {e.strerror or e}") from e


def _under(path: str, root: Path) -> bool:
    return path == str(root) or path.startswith(str(root) + os.sep)


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="file", desc="ingest", file=sys.stderr,
                disable=not enabled or total == 0, leave=False, dynamic_ncols=True)
