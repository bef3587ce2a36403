"""Split a Document into passages that fit the encoder: token-aware (the encoder's own
tokenizer), paragraphs first, then sentences, then words. A chunk never crosses a section,
so it has exactly one page and one heading path, and its character span points into the page."""

from __future__ import annotations

from dataclasses import dataclass

from .documents import Document

SEPARATORS = ["\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ", ""]


def _plain_tokenizer(tokenizer):
    """The Rust tokenizer behind a transformers tokenizer, without the truncation and padding
    its tokenizer.json may switch on (MiniLM's pads and truncates to 128), for cheap counting."""
    import copy

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    backend = copy.deepcopy(backend)
    backend.no_truncation()
    backend.no_padding()
    return backend


@dataclass
class Chunk:
    text: str
    ord: int
    page: int | None
    heading: str
    start: int  # character offset in the page (or whole document) text
    end: int


class Splitter:
    """Reusable splitter bound to one tokenizer and size (building it per file is wasteful)."""

    def __init__(self, tokenizer, chunk_size: int, chunk_overlap: int):
        import logging

        from langchain_text_splitters import RecursiveCharacterTextSplitter

        # counting a long section is fine; the "longer than the maximum" warning is not for us
        logging.getLogger("transformers.tokenization_utils_base").setLevel(logging.ERROR)

        if chunk_overlap >= chunk_size:
            raise ValueError(f"chunk_overlap ({chunk_overlap}) must be smaller than chunk_size ({chunk_size})")
        self.tokenizer = tokenizer
        self._fast = _plain_tokenizer(tokenizer)
        self.chunk_size = chunk_size
        self._splitter = RecursiveCharacterTextSplitter(
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            length_function=self.count,
            separators=SEPARATORS,
            keep_separator="end",
            add_start_index=True,
            strip_whitespace=True,
        )

    def count(self, text: str) -> int:
        """Word pieces, without the [CLS]/[SEP] the encoder adds."""
        return len(self._fast.encode(text, add_special_tokens=False).ids) if self._fast else len(
            self.tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"])

    def counts(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        if self._fast:
            return [len(e.ids) for e in self._fast.encode_batch(texts, add_special_tokens=False)]
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def split(self, document: Document) -> list[Chunk]:
        chunks: list[Chunk] = []
        for section in document.sections:
            for piece in self._splitter.create_documents([section.text]):
                text = piece.page_content.strip()
                if not text:
                    continue
                start = section.start + piece.metadata.get("start_index", 0)
                chunks.append(Chunk(text, len(chunks), section.page, section.heading, start, start + len(text)))
        return chunks
