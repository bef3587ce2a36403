"""Errors a user can cause. Each carries a one-line message that says what to do;
the CLI prints it without a traceback."""


class RagError(Exception):
    """Base class for every error rag raises on purpose."""

    exit_code = 2


class BadIndex(RagError):
    """The index directory is missing, damaged, of another format, or built with other settings."""


def damaged(root, what: str) -> str:
    """The message for a damaged index: what is wrong and the command that repairs it."""
    return (f"the index {root} is damaged: {what}. Rebuild it from your documents with "
            f"`rag rebuild --index {root}` (or `rag ingest PATH --index NEW`)")


class IndexLocked(RagError):
    """Another process is writing the same index."""


class UnreadableFile(RagError):
    """One input file could not be read; ingest records it and moves on. The reason is one
    line, whatever a parser put in it (lxml's messages carry newlines)."""

    def __init__(self, reason: str = ""):
        super().__init__(" ".join(str(reason).split()))


class ModelNotFound(RagError):
    """A model name or path could not be resolved to local files."""


class BadSetting(RagError):
    """A setting (rag.toml, RAG_* environment, argument) has a value outside what it allows."""


class BadDataset(RagError):
    """An evaluation dataset (`rag eval`) is not of a shape rag reads; the message names the first bad record."""


class CannotWrite(RagError):
    """The index cannot be changed (read-only file system, no permission); reading it still works."""


class DiskFull(CannotWrite):
    """No space left where the index is written; the index is as it was at its last commit."""
