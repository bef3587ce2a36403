"""rag: local-first retrieval-augmented question answering over your own documents."""

from .chunking import Chunk
from .documents import Document, Section
from .errors import RagError
from .ingest import IngestReport
from .qa import RAG
from .retrieve import Hit
from .settings import Settings

__all__ = ["RAG", "Settings", "Document", "Section", "Chunk", "Hit", "IngestReport", "RagError"]
__version__ = "0.1.0"
