"""Errors a user can cause. Each carries a one-line message that says what to do;
the CLI prints it without a traceback."""


class RagError(Exception):
    """Base class for every error rag raises on purpose."""

    exit_code = 2


class IndexError_(RagError):
    """The index directory is missing, corrupt, or built with other settings."""


class IndexLocked(RagError):
    """Another process is writing the same index."""


class UnreadableFile(RagError):
    """One input file could not be read; ingest records it and moves on."""


class ModelNotFound(RagError):
    """A model name or path could not be resolved to local files."""
