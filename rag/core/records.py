"""What a passage and an answer are, as data: the records retrieval and the answer pipeline
(`rag/answer/`) fill and every door (terminal, web page, HTTP, JSON) renders with
`present.py`. Nothing reads an answer's parts back out of its text: `Answer.to_dict` writes
them as JSON fields and `Answer.from_dict` rebuilds the answer from them (`rag ask --server`)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, fields

from rag.core.present import as_dict, markdown


@dataclass
class Hit:
    """One retrieved passage: where it is (file, page, heading, character span) and its scores."""
    rank: int
    score: float
    source: str
    page: int | None
    heading: str
    text: str
    chunk_id: int
    start: int = 0
    end: int = 0
    dense: float | None = None  # cosine similarity to the question, when known


class Draft(str):
    """A piece of the decoder's raw output, streamed while the answer is made. The final
    `Answer` is built around it and replaces it: a consumer that can only append (an HTTP
    stream, a log) shows drafts apart from the answer, or not at all."""

    @property
    def text(self) -> str:
        return str(self)


@dataclass
class Source:
    """A retrieved passage as numbered [n] under an answer."""
    n: int
    hit: Hit
    text: str  # the passage as the decoder read it (the hit's text, or the part that fit)
    cited: bool = False
    evidence: str = ""  # the sentence(s) of the passage that support the answer

    source = property(lambda self: self.hit.source)
    page = property(lambda self: self.hit.page)
    heading = property(lambda self: self.hit.heading)
    score = property(lambda self: self.hit.score)
    chunk_id = property(lambda self: self.hit.chunk_id)

    @property
    def evidence_span(self) -> tuple[int, int] | None:
        """Where the evidence is in `text` ([start, end) characters; the evidence may have its
        white space collapsed), or None."""
        parts = self.evidence.split()
        if not parts:
            return None
        m = re.search(r"\s+".join(map(re.escape, parts)), self.text)
        return (m.start(), m.end()) if m else None


@dataclass
class Sentence:
    """One sentence of what the answer says, with the sources it cites."""
    text: str
    cites: list[int] = field(default_factory=list)
    supported: bool = True  # False: a freely written sentence no source supports


@dataclass
class Timings:
    """Where an answer's time went (milliseconds from the question), and decode speed."""
    retrieve_ms: float | None = None
    first_token_ms: float | None = None
    total_ms: float = 0.0
    tokens: int = 0
    tokens_per_s: float | None = None
    translate_ms: float | None = None  # the question's English translation for search, when it had one


@dataclass
class Answer:
    question: str  # as the person asked it
    found: bool = True
    short: str = ""  # the short answer (a name, a date, a number), when the question has one
    short_first: bool = False  # the statement opens with the short answer (a factual question)
    sentences: list[Sentence] = field(default_factory=list)  # what it says, readable, cited
    sources: list[Source] = field(default_factory=list)  # every retrieved passage, numbered
    timings: Timings = field(default_factory=Timings)
    supporting: list[str] = field(default_factory=list)  # the sources' sentences it rests on, verbatim
    support: float | None = None  # the sentence check's score of the supporting sentence
    confidence: float | None = None  # probability that the short answer is right (rag/answer/confidence.py)
    # what an answer that was not found says instead (why, what to do); a found one's note says
    # which language it is in, where it was asked in another
    note: str = ""
    searched: str = ""  # the translation of the question that was searched, when rag made one

    @property
    def citations(self) -> list[int]:
        return [s.n for s in self.sources if s.cited]

    @property
    def text(self) -> str:
        """What a person reads, in Markdown: "**1897**: The lighthouse was first lit in 1897. [1]"."""
        return markdown(self)

    def to_dict(self) -> dict:
        return as_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Answer":
        """The answer `to_dict` made (`rag ask --json`, a `rag serve` answer) rebuilt from its
        fields, not its text: sentences, short answer, note, sources (each around a Hit) and
        timings, so it renders as a local answer does. A server too old to send `sentences`
        gives its Markdown as one sentence. KeyError, TypeError or ValueError: not such a dict."""
        number = lambda v, kind=float: None if v is None else kind(v)  # noqa: E731

        def source(s: dict) -> Source:
            n, text = int(s["n"]), str(s["text"])
            hit = Hit(n, float(s["score"]), str(s["source"]), number(s.get("page"), int),
                      str(s.get("heading") or ""), text, int(s.get("chunk_id", -1)))
            return Source(n, hit, text, bool(s.get("cited")), str(s.get("evidence") or ""))

        found, parts = bool(data["found"]), "sentences" in data
        if parts:
            sentences = [Sentence(str(s["text"]), [int(n) for n in s.get("cites") or []],
                                  bool(s.get("supported", True))) for s in data["sentences"]]
        else:
            sentences = [Sentence(str(data["answer"]))] if found else []
        kinds = {f.name: int if f.name == "tokens" else float for f in fields(Timings)}
        timings = {k: number(v, kinds[k]) for k, v in (data.get("timings") or {}).items() if k in kinds}
        return cls(question=str(data.get("question") or ""), found=found,
                   short=str(data.get("short_answer") or ""), short_first=parts and bool(data.get("short_first")),
                   sentences=sentences, sources=[source(s) for s in data.get("sources") or []],
                   timings=Timings(**timings), supporting=[str(t) for t in data.get("supporting") or []],
                   confidence=number(data.get("confidence")),
                   note=str(data["note"] if "note" in data else "" if found else data["answer"]),
                   searched=str(data.get("searched_as") or ""))


class Timer:
    """Milliseconds from the question to each named step; `finish` makes the Timings."""

    def __init__(self):
        self.start = time.perf_counter()
        self.marks: dict[str, float] = {}

    def mark(self, name: str) -> None:
        self.marks[name] = round((time.perf_counter() - self.start) * 1000, 1)

    def finish(self, tokens: int = 0) -> Timings:
        self.mark("total_ms")
        total, first = self.marks["total_ms"], self.marks.get("first_token_ms")
        decoded = self.marks.get("decoded_ms", total)  # decode speed: first token to the decoder's last
        gen_s = (decoded - first) / 1000 if first is not None else 0.0
        return Timings(self.marks.get("retrieve_ms"), first, total, tokens,
                       round((tokens - 1) / gen_s, 1) if gen_s > 0 and tokens > 1 else None,
                       self.marks.get("translate_ms"))
