"""Files a person hands over through the web page: kept in the index's `uploads/` folder
under safe names, so they can be ingested, rebuilt and removed like any other file."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from rag.index.store import FileProblem, writes_reported
from rag.readers.documents import supported

# bytes kept of an uploaded file's name (file systems allow 255; a Chinese character takes 3)
MAX_NAME_BYTES = 200


def safe_name(name: str) -> str:
    """A file name with no directory parts and no surprises; a long one keeps its type."""
    name = Path(name.replace("\\", "/")).name
    name = re.sub(r"[^\w.\- ]", "_", name).strip(" .") or "upload"
    stem, suffix = Path(name).stem, Path(name).suffix[:16]
    while stem and len((stem + suffix).encode()) > MAX_NAME_BYTES:
        stem = stem[:-1]
    return (stem or "upload") + suffix


def refusal(name: str, size: int, max_file_mb: float) -> str | None:
    """Why an upload is not accepted (None: accepted)."""
    if size > max_file_mb * 2**20:
        return f"over the {max_file_mb:g} MB limit"
    if not supported(Path(safe_name(name))):
        return f"unsupported file type {Path(name).suffix or name!r}"
    return None


def save(folder: Path, name: str, data: bytes, made: list[Path] | None = None) -> Path:
    """Save under `folder`; the same content reuses its file, a different file with the same
    name gets a numbered name instead of overwriting. Written whole or not at all: a full disk
    is DiskFull and leaves no part behind. A new file's path is added to `made`."""
    index = folder.parent
    with writes_reported(index):
        folder.mkdir(parents=True, exist_ok=True)
        base = safe_name(name)
        stem, suffix = Path(base).stem, Path(base).suffix
        target, n = folder / base, 1
        digest = hashlib.sha256(data).digest()
        while target.exists():
            if hashlib.sha256(target.read_bytes()).digest() == digest:
                return target
            target, n = folder / f"{stem}-{n}{suffix}", n + 1
        tmp = target.with_name("." + target.name + ".part")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a part left on a full disk would keep it full
            raise
    if made is not None:
        made.append(target)
    return target


def as_named(report, named: dict[str, str]):
    """The ingest report of uploaded files with each file named as it was handed over (the
    client's name, not where this machine keeps it)."""
    def name(path: str) -> str:
        for saved, given in named.items():
            if path == saved:
                return given
            if path.startswith(saved + ", page "):  # a page a reader passed over
                return given + path[len(saved):]
        return path

    report.failed = [FileProblem(name(f.path), f.reason) for f in report.failed]
    report.skipped_files = [FileProblem(name(f.path), f.reason) for f in report.skipped_files]
    for saved, given in named.items():
        report.notes = [note.replace(saved, given) for note in report.notes]
    return report
