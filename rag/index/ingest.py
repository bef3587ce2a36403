"""Keep an index in step with folders: scan, diff by content hash, read -> split -> encode
-> store, one bad file never stopping the batch. Work is committed every
`commit_every_chunks` chunks, so a crash loses at most that much and never a file's half."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import sqlite3
import stat
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rag.core.errors import RagError, UnreadableFile
from rag.core.settings import Settings
from rag.index.cluster import connect, encode_on_ray
from rag.index.prepare import Preparer, embedded, reason
from rag.index.store import DocumentRow, FileProblem, Store, crash_point, is_index_dir
from rag.models.encoder import Encoder
from rag.readers.base import Limits
from rag.readers.documents import read, supported

log = logging.getLogger(__name__)
SKIP_DIRS = {"node_modules", "__pycache__", "site-packages"}


@dataclass
class IngestReport:
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    skipped: int = 0
    failed: list[FileProblem] = field(default_factory=list)
    skipped_files: list[FileProblem] = field(default_factory=list)
    chunks: int = 0
    tokens: int = 0
    seconds: float = 0.0
    files_per_node: dict[str, int] = field(default_factory=dict)  # --ray: where the files were encoded
    notes: list[str] = field(default_factory=list)  # what a person should know (files the encoder cannot read)

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
    skipped: list[FileProblem] = field(default_factory=list)  # nothing vanishes silently
    roots: list[Path] = field(default_factory=list)  # folders walked (prune looks only under these)
    seen: dict[Path, tuple[int, int]] = field(default_factory=dict)  # each file's (device, inode) when scanned


def scan(paths: list[Path], index_root: Path, follow_links: bool = False) -> Scan:
    """Files under `paths` (recursively). Hidden entries and index directories are passed over;
    links out of the folder (unless `follow_links`), link loops, FIFOs and other special files,
    and unsupported types are skipped with a reason."""
    result = Scan()
    seen_dirs: set[tuple[int, int]] = set()
    index_root = index_root.resolve()

    def skip(path: Path, reason: str) -> None:
        result.skipped.append(FileProblem(str(path), reason))

    def admit(path: Path, root: Path | None) -> None:
        try:
            if path.is_symlink():
                target = path.resolve(strict=True)
                if root is not None and not follow_links and not under(str(target), root):
                    return skip(path, f"link to {target}, outside the folder (--follow-links to include)")
            st = path.stat()
            mode = st.st_mode
        except RuntimeError:
            return skip(path, "symlink loop")
        except OSError:
            return skip(path, "broken link" if path.is_symlink() else "cannot be opened")
        if not stat.S_ISREG(mode):
            return skip(path, "not a regular file (FIFO, socket or device)")
        if not supported(path):
            return skip(path, f"unsupported file type {path.suffix or path.name!r}")
        result.files.append(path)
        result.seen[path] = (st.st_dev, st.st_ino)  # what the read must find there (a link's target)

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
                    if not follow_links and not under(str(target), root):
                        skip(sub, f"link to {target}, outside the folder (--follow-links to include)")
                        continue
                kept.append(d)
            dirnames[:] = kept
            for name in sorted(filenames):
                if not name.startswith("."):
                    admit(here / name, root)
    result.files = list(dict.fromkeys(result.files))
    return result


def sample_text(paths, limits: Limits = Limits(), files: int = 20, chars: int = 200_000,
                max_bytes: int = 2 * 2**20, per_file: int = 10_000) -> str:
    """Text of a few small readable files spread evenly over the files under `paths`: enough
    to tell their language, cheap whatever the folder holds (large files are passed over).
    Spread, not the first few: a folder of `en/` and `zh/` is a mixed corpus, not an English one."""
    found = scan([Path(p).expanduser() for p in paths], Path("/nonexistent"))
    every = found.files
    spread = [every[i * len(every) // files] for i in range(files)] if len(every) > files else every
    parts, size = [], 0
    for path in spread:
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


# Files are read until their chunks fill this many encoder batches, then encoded together.
BATCHES_PER_FLUSH = 4
ENGINES = ("local", "ray")


@dataclass
class Pending:
    """A changed file, hashed, waiting for its chunks to be made (read, split, encoded) and stored."""
    path: str
    sha256: str
    mtime: float
    size: int
    is_new: bool
    reuse: bool = False  # its content is already indexed (or pending) under another path
    chunks: list | None = None


class Ingestor:
    """Brings an index in step with folders: the one writer of its store."""

    def __init__(self, store: Store, encoder: Encoder, settings: Settings):
        self.store, self.encoder, self.settings = store, encoder, settings
        self.preparer = Preparer(encoder, settings)
        self._since_commit = 0  # new chunks written since the last commit
        self._progress = False
        self.ray_share = 1  # Ray pools running at once (shards.py: one per shard), each a share of the cluster

    def run(self, paths: list[str | Path], prune: bool = True, progress: bool = True,
            wait: float = 0.0, on_file=None, engine: str = "local", address: str | None = None,
            keep=None) -> IngestReport:
        """`on_file(done, total, path)` is called after each file is scanned (the web UI's
        progress bar). `engine="ray"`: chunks are made on a Ray cluster (cluster.py). `keep(path)`:
        only the files it accepts are this index's (a shard's, rag/index/shards.py); prune sees
        only this index's own documents either way."""
        if engine not in ENGINES:
            raise RagError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
        started = time.perf_counter()
        report = IngestReport()
        self._progress = progress
        found = scan([Path(p).expanduser() for p in paths], self.store.root, self.settings.follow_links)
        report.skipped_files, report.skipped = found.skipped, len(found.skipped)
        if keep is not None:
            found.files = [f for f in found.files if keep(str(f))]
        if engine == "ray":
            connect(address)  # a cluster that cannot be reached fails now, not with the lock held
        with self.store.writer(wait=wait, ann_threshold=self.settings.ann_threshold) as w:
            known = w.documents()
            todo: list[Pending] = []  # changed files whose chunks are still to be made
            pending_shas: set[str] = set()  # their contents (a second copy is linked, not embedded)
            waiting = 0  # chunks read and not yet encoded (local engine)
            bar = _progress(len(found.files), progress)
            for done, path in enumerate(found.files, 1):
                bar.set_postfix_str(path.name[-30:], refresh=False)
                old = known.get(str(path))
                try:
                    item, data = self._diff(w, path, found.seen.get(path), old, pending_shas, report)
                    if item is not None and engine == "local" and not item.reuse:
                        item.chunks = self.preparer.split(path, data)
                except sqlite3.Error:
                    raise  # the index's own database (a full disk): not this file's fault
                except Exception as e:  # a reader bug must not abort the batch either
                    self._fail(w, report, str(path), reason(e), old)
                    item = None
                finally:
                    bar.update(1)
                    if on_file is not None:
                        on_file(done, len(found.files), str(path))
                if item is None:
                    continue
                if todo and len(item.chunks or ()) >= self.settings.commit_every_chunks // 2:
                    # a large file: what waits is stored and committed first, so its neighbours
                    # are searchable while it encodes (and stay so if it never finishes)
                    self._flush(w, todo, report)
                    todo, pending_shas, waiting = [], set(), 0
                    self._commit(w)
                todo.append(item)
                pending_shas.add(item.sha256)
                waiting += len(item.chunks or ())
                if engine == "local" and waiting >= self.settings.encode_batch_size * BATCHES_PER_FLUSH:
                    self._flush(w, todo, report)
                    todo, pending_shas, waiting = [], set(), 0
            bar.close()
            if engine == "ray":
                self._on_ray(w, todo, known, report, address)
            else:
                self._flush(w, todo, report)
            if prune:
                seen = {str(f) for f in found.files}
                for key in known:
                    if key not in seen and any(under(key, r) for r in found.roots):
                        w.drop_if_unused(w.delete_document(key))
                        report.removed += 1
            w.commit()
        prep = self.preparer
        report.skipped_files += prep.skipped_pages  # never dropped silently: listed with the reason
        if prep.foreign:  # an index keeps its encoder: say what that costs these files (benchmarks/mixed.py)
            report.notes.append(f"{len(prep.foreign)} file(s) not in English, e.g. {prep.foreign[0]}: this index's "
                                f"encoder ({self.encoder.name}) reads English only, so only keyword search finds "
                                "them; for dense search put them in an index made with --encoder multilingual-e5-small")
            prep.foreign = []
        report.skipped += len(prep.skipped_pages)
        prep.skipped_pages = []
        report.seconds = round(time.perf_counter() - started, 3)
        return report

    def _diff(self, w, path: Path, scanned: tuple[int, int] | None, old: DocumentRow | None,
              pending_shas: set[str], report: IngestReport) -> tuple[Pending | None, bytes | None]:
        """Stat and hash one file against what the index holds: None when it is unchanged
        (counted), else the Pending file and its bytes. The file is opened as the scan saw it
        (`scanned`: its device and inode), so nothing swapped in since is read."""
        with open_scanned(path, scanned) as f:
            st = os.fstat(f.fileno())
            if old and old.current and old.mtime == st.st_mtime and old.size == st.st_size:
                report.unchanged += 1
                return None, None
            if st.st_size > self.settings.max_file_mb * 2**20:
                raise UnreadableFile(f"file is {st.st_size / 2**20:.1f} MB, over the "
                                     f"{self.settings.max_file_mb:g} MB limit (max_file_mb)")
            data = _read_all(f)
        sha = hashlib.sha256(data).hexdigest()
        if old and old.sha256 == sha and old.status == "ok":
            w.put_document(str(path), sha, st.st_mtime, st.st_size)  # touched, not changed
            report.unchanged += 1
            return None, None
        reuse = w.has_content(sha) or sha in pending_shas  # identical content: link, don't embed
        return Pending(str(path), sha, st.st_mtime, st.st_size, old is None or old.status != "ok", reuse), data

    def _flush(self, w, todo: list[Pending], report: IngestReport) -> None:
        """Encode the files' chunks in one batch and store them, file by file."""
        chunks = [c for p in todo if p.chunks for c in p.chunks]
        vecs = self.encoder.encode([embedded(c) for c in chunks])
        lengths = self.preparer.splitter.counts([c.text for c in chunks])
        offset = 0
        for p in todo:
            n = len(p.chunks or ())
            self._store(w, p, vecs[offset:offset + n], lengths[offset:offset + n], report)
            offset += n

    def _store(self, w, p: Pending, vecs, lengths: list[int], report: IngestReport) -> None:
        """Write one file's chunks (unless its content is already there) and its document row;
        commit once `commit_every_chunks` new chunks are waiting."""
        if p.chunks and not w.has_content(p.sha256):
            w.add_content(p.sha256, p.chunks, vecs, sum(lengths))
            crash_point("file-stored")  # a file's chunks written, not committed
            report.chunks += len(p.chunks)
            report.tokens += sum(lengths)
            self._since_commit += len(p.chunks)
        w.drop_if_unused(w.put_document(p.path, p.sha256, p.mtime, p.size))
        if p.is_new:
            report.added += 1
        else:
            report.updated += 1
        if self._since_commit >= self.settings.commit_every_chunks:
            self._commit(w)

    def _commit(self, w) -> None:
        w.commit()
        self._since_commit = 0

    def _on_ray(self, w, todo: list[Pending], known: dict, report: IngestReport, address: str | None) -> None:
        """Send the files with new content to Ray; store each result as it streams back."""
        sent = {p.path: p for p in todo if not p.reuse}
        failed: dict[str, str] = {}
        files = [(p.path, p.sha256) for p in sent.values()]
        bar = _progress(len(files), self._progress, "encode (ray)")
        for result in encode_on_ray(files, self.settings, self.encoder.name, address,
                                    self.ray_share) if files else ():
            bar.update(1)
            self.preparer.skipped_pages += result.skipped  # pages a worker's reader passed over, as locally
            if result.node:  # empty: no worker lived to finish it
                report.files_per_node[result.node] = report.files_per_node.get(result.node, 0) + 1
            if result.error is not None:
                failed[result.sha256] = result.error
                self._fail(w, report, result.path, result.error, known.get(result.path))
                continue
            p = sent[result.path]
            p.chunks = result.chunks
            self._store(w, p, result.vectors, result.n_tokens, report)
        bar.close()
        for p in todo:
            if p.reuse:
                if w.has_content(p.sha256):
                    self._store(w, p, None, [], report)
                else:
                    self._fail(w, report, p.path, failed.get(p.sha256, "its content failed to ingest"),
                               known.get(p.path))

    @staticmethod
    def _fail(w, report: IngestReport, key: str, reason: str, old: DocumentRow | None) -> None:
        report.failed.append(FileProblem(key, reason))
        if old and old.status == "ok" and old.sha256:
            w.note_error(key, reason)  # the previous version stays searchable
        else:
            w.put_document(key, None, 0.0, 0, status="failed", error=reason)


def open_scanned(path: Path, scanned: tuple[int, int] | None):
    """`path` opened for reading if it is still the regular file the scan saw: a link put in
    its place since (to a file outside the folder, say) is not followed, a FIFO or device does
    not block the ingest, another file moved there is not read. `scanned`: the (device, inode)
    the scan found, a link's target for a link the scan let in (None: any regular file, not
    through a link)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if scanned is None or not path.is_symlink():
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnreadableFile("changed into a link since it was found; ingest again") from None
        raise UnreadableFile(f"cannot read: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnreadableFile("no longer a regular file (replaced since it was found); ingest again")
        if scanned is not None and (st.st_dev, st.st_ino) != scanned:
            raise UnreadableFile("replaced by another file since it was found; ingest again")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _read_all(f) -> bytes:
    try:
        return f.read()
    except OSError as e:
        raise UnreadableFile(f"cannot read: {e.strerror or e}") from e


def under(path: str, root: str | Path) -> bool:
    """`path` is `root` or inside it (by name, not by resolving links)."""
    root = str(root).rstrip(os.sep) or os.sep
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _progress(total: int, enabled: bool, desc: str = "ingest"):
    from tqdm import tqdm

    return tqdm(total=total, unit="file", desc=desc, file=sys.stderr,
                disable=not enabled or total == 0, leave=False, dynamic_ncols=True)
