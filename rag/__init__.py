"""rag: local-first retrieval-augmented question answering over your own documents.

The public face: `from rag import RAG, Settings, Answer, Hit`. The package is in layers that
only import downward (docs/architecture.md; pyproject.toml checks it): core, language,
readers and models, index, answer, then `qa.RAG`, evaluate, and the doors (cli, http)."""

from rag.core.errors import RagError
from rag.core.records import Answer, Hit
from rag.core.settings import Settings
from rag.index.chunking import Chunk
from rag.index.ingest import IngestReport
from rag.qa import RAG
from rag.readers.base import Document, Section

__all__ = ["RAG", "Settings", "Answer", "Hit", "Document", "Section", "Chunk", "IngestReport", "RagError"]
__version__ = "0.1.0"
