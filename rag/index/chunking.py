"""Split a Document into passages that fit the encoder: token-aware (the encoder's own
tokenizer), paragraphs first, then sentences, then words. A chunk never crosses a section,
so it has exactly one page and one heading path, and its character span points into the page."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from rag.core.errors import UnreadableFile
from rag.language.text import (
    COMMA,
    EXCLAMATION_MARK,
    FULL_STOP,
    LIST_COMMA,
    QUESTION_MARK,
    SEMICOLON,
    clean,
    clean_with_offsets,
    full_width,
    latin,
)
from rag.readers.base import Document

# Paragraphs, lines, sentences (CJK ends need no space after them), clauses, words, and
# characters last (the marks: text.SENTENCE_ENDS, text.CLAUSE_ENDS). English text never holds
# the CJK marks, so it splits as before. The splitter tries them in this order: it is part of
# how every existing index was cut.
SEPARATORS = ["\n\n", "\n", *full_width(FULL_STOP, EXCLAMATION_MARK, QUESTION_MARK),
              *(mark + " " for mark in latin(FULL_STOP, QUESTION_MARK, EXCLAMATION_MARK)),
              SEMICOLON.cjk, SEMICOLON.latin + " ", COMMA.cjk, COMMA.latin + " ", LIST_COMMA.cjk, " ", ""]
# the marks the splitter can cut at, for a character class
_MARKS = re.escape("".join(s.strip() for s in SEPARATORS))


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


class TooManyChunks(UnreadableFile):
    """A file splits into more passages than `max_chunks_per_file`: it fails alone, early."""

    def __init__(self, limit: int):
        super().__init__(f"more than {limit:,} passages (max_chunks_per_file); split the file "
                         "or raise the limit")


@dataclass
class Chunk:
    text: str
    ord: int
    page: int | None
    heading: str
    start: int  # character offset in the page (or whole document) text
    end: int


class Splitter:
    """Reusable splitter bound to one tokenizer and size (building it per file is wasteful).
    Every chunk also fits `max_chars`: a word the tokenizer cannot split (a 40 MB line without
    spaces counted as one word piece) is cut on characters instead."""

    def __init__(self, tokenizer, chunk_size: int, chunk_overlap: int, max_chars: int = 2000):
        import logging

        from langchain_text_splitters import RecursiveCharacterTextSplitter

        # counting a long section is fine; the "longer than the maximum" warning is not for us
        logging.getLogger("transformers.tokenization_utils_base").setLevel(logging.ERROR)

        if chunk_overlap >= chunk_size:
            raise ValueError(f"chunk_overlap ({chunk_overlap}) must be smaller than chunk_size ({chunk_size})")
        self.tokenizer = tokenizer
        self._fast = _plain_tokenizer(tokenizer)
        self.chunk_size = chunk_size
        self.max_chars = max_chars
        self._count_short = functools.lru_cache(maxsize=200_000)(self._count)
        # a run this long with neither space nor punctuation is cut before the splitter sees it
        # (its last resort, one character at a time, would make millions of strings)
        self._run = re.compile(r"[^\s%s]{%d,}" % (_MARKS, max_chars + 1))
        self._splitter = RecursiveCharacterTextSplitter(
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            length_function=self.length,
            separators=SEPARATORS,
            keep_separator="end",
            strip_whitespace=True,
        )

    def count(self, text: str) -> int:
        """Word pieces, without the [CLS]/[SEP] the encoder adds. Short strings are cached: the
        splitter counts every word of a section that has no sentence ends (a CSV row, a long
        line), and words repeat (a 12 MB row took minutes uncached)."""
        if len(text) <= 24:
            return self._count_short(text)
        return self._count(text)

    def _count(self, text: str) -> int:
        return len(self._fast.encode(text, add_special_tokens=False).ids) if self._fast else len(
            self.tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"])

    def length(self, text: str) -> int:
        """What the splitter measures: word pieces, or characters scaled so that `max_chars`
        counts as a full chunk, whichever is larger."""
        return max(self.count(text), -(-len(text) * self.chunk_size // self.max_chars))

    def counts(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        if self._fast:
            return [len(e.ids) for e in self._fast.encode_batch(texts, add_special_tokens=False)]
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def split(self, document: Document, max_chunks: int | None = None) -> list[Chunk]:
        """The document's passages, cleaned of invisible characters (zero-width space, soft
        hyphen: both indexes see whole words) with offsets into the page as it was.
        More than `max_chunks` passages: TooManyChunks, found before the rest is split."""
        chunks: list[Chunk] = []
        for section in document.sections:
            body, where = clean_with_offsets(section.text)
            heading = clean(section.heading)
            for offset, block, is_run in self._blocks(body):
                pieces = self._cut(block) if is_run else self._pieces(block)
                for at, piece in pieces:
                    text = piece.strip()
                    if not text:
                        continue
                    if max_chunks is not None and len(chunks) >= max_chunks:
                        raise TooManyChunks(max_chunks)
                    start = offset + at + (len(piece) - len(piece.lstrip()))
                    first, last = where(start), where(start + len(text) - 1) + 1
                    chunks.append(Chunk(text, len(chunks), section.page, heading,
                                        section.start + first, section.start + last))
        return chunks

    def _pieces(self, block: str):
        """(offset, text) of each passage the splitter makes of `block`, found in order: each
        starts after the one before. (langchain's start_index searches from the previous
        passage's end less chunk_overlap taken as characters; the overlap is word pieces, so an
        overlap longer than 16 characters was not found and the start became -1.)"""
        cursor = 0
        for piece in self._splitter.split_text(block):
            at = block.find(piece, cursor)
            at = cursor if at < 0 else at  # never: a stripped piece is a substring of its block
            cursor = at + 1
            yield at, piece

    def _blocks(self, text: str):
        """(offset, text, is_run): the section as is, except that runs longer than `max_chars`
        without a space or a punctuation mark become `max_chars` blocks of their own."""
        position = 0
        for run in self._run.finditer(text):
            if run.start() > position:
                yield position, text[position:run.start()], False
            for i in range(run.start(), run.end(), self.max_chars):
                yield i, text[i:min(i + self.max_chars, run.end())], True
            position = run.end()
        if position < len(text):
            yield position, text[position:], False

    def _cut(self, run: str) -> list[tuple[int, str]]:
        """A run with nowhere to split, in equal character slices that each fit `chunk_size`."""
        parts = 1
        while True:
            size = -(-len(run) // parts)
            slices = [(i, run[i:i + size]) for i in range(0, len(run), size)]
            if all(self.count(piece) <= self.chunk_size for _, piece in slices) or size == 1:
                return slices
            parts *= 2
