"""From retrieved passages to a grounded answer: the prompt (numbered passages within a
token budget), the decoder call, and citations attached by rag rather than trusted from
the model. No retrieval and no model loading here: `qa.RAG` wires the parts together."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from .retrieve import Hit

NOT_FOUND = "Not found in the indexed documents."
EMPTY_INDEX = "The index is empty: add documents with `rag ingest PATH` (or the Add documents panel)."

SYSTEM = ("You answer questions using only the numbered passages. Reply with the shortest exact "
          "phrase from the passages that answers the question, then stop.")
# One worked example: tiny models copy its form (a short phrase, no sentence) far better than
# they follow an instruction.
EXAMPLE = ("[1] (example.txt)\nThe Amazon river flows through Brazil, Peru and Colombia. Its basin "
           "covers about seven million square kilometres.",
           "How large is the basin of the Amazon?", "about seven million square kilometres")


@dataclass
class Source:
    n: int
    source: str
    page: int | None
    heading: str
    score: float
    text: str
    cited: bool = False
    evidence: str = ""  # the sentence of the passage that supports the answer
    chunk_id: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Answer:
    question: str
    text: str
    sources: list[Source] = field(default_factory=list)
    found: bool = True
    timings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        keys = ("n", "source", "page", "heading", "score", "text", "cited", "evidence")
        return {"question": self.question, "answer": self.text, "found": self.found,
                "sources": [{k: getattr(s, k) for k in keys} for s in self.sources],
                "timings": self.timings}


def label(hit: Hit) -> str:
    name = hit.source.rsplit("/", 1)[-1]
    return name + (f", page {hit.page}" if hit.page else "")


def sentences(text: str) -> list[str]:
    parts = re.split(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])|\n+", text)
    return [p.strip() for p in parts if p.strip()]


def fit_passages(hits: list[Hit], count, budget: int) -> list[tuple[Hit, str]]:
    """Passages in rank order while they fit `budget` tokens; the last one may be cut at a
    sentence end if a useful part (>= 48 tokens) fits. Fewer whole passages beat a truncated prompt."""
    chosen, used = [], 0
    for hit in hits:
        block = f"[{len(chosen) + 1}] ({label(hit)})\n{hit.text}\n\n"
        cost = count(block)
        if used + cost <= budget:
            chosen.append((hit, hit.text))
            used += cost
            continue
        room = budget - used
        if room >= 48:
            kept = ""
            for s in sentences(hit.text):
                trial = (kept + " " + s).strip()
                if count(f"[{len(chosen) + 1}] ({label(hit)})\n{trial}\n\n") > room:
                    break
                kept = trial
            if kept:
                chosen.append((hit, kept))
        break
    return chosen


ABSTAIN = "unknown"
ABSTAIN_EXAMPLE = ("Who first mapped the Amazon basin?", ABSTAIN)


def build_messages(question: str, passages: list[tuple[Hit, str]], abstain: bool = False) -> list[dict]:
    """System instruction, worked examples, the numbered passages, the question. With
    `abstain`, a second example shows answering "unknown" when the passage does not say."""
    blocks = "\n\n".join(f"[{i}] ({label(h)})\n{text}" for i, (h, text) in enumerate(passages, 1))
    ex_passage, ex_question, ex_answer = EXAMPLE
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"Passages:\n\n{ex_passage}\n\nQuestion: {ex_question}"},
                {"role": "assistant", "content": f"Answer: {ex_answer}"}]
    if abstain:
        messages += [{"role": "user", "content": f"Passages:\n\n{ex_passage}\n\nQuestion: {ABSTAIN_EXAMPLE[0]}"},
                     {"role": "assistant", "content": f"Answer: {ABSTAIN_EXAMPLE[1]}"}]
    return messages + [{"role": "user", "content": f"Passages:\n\n{blocks}\n\nQuestion: {question}"}]


# Words a short factual answer almost never starts with (measured: "in", "up", "when" starts
# were the commonest wrong one-word answers).
ARTICLES = set("""the a an it its this that these those they he she we i in on at by for with from
to of up and or but as when where which who whom whose what why how while after before during
into about over than then there here is are was were be been has have had not no yes""".split())
ARTICLES |= {w.capitalize() for w in ARTICLES}
ARTICLES -= {"no", "yes", "No", "Yes"}


def strip_markers(text: str) -> str:
    """The answer without its [n] citation markers."""
    return re.sub(r"\s*\[\d+\]", "", text).strip()


def _avoid(question: str) -> str:
    words = re.findall(r"[A-Za-z][\w'-]*", question)
    return " ".join(set(words) | {w.capitalize() for w in words} | ARTICLES | set(".,;:()[]'\"-"))


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"\w+", text.lower()) if len(w) > 2}


def attach_citations(answer: str, passages: list[tuple[Hit, str]]) -> tuple[str, list[Source]]:
    """Keep the model's valid [n] markers, drop invalid ones, and mark the passages the answer
    draws on: those containing it verbatim, else those sharing most of its words."""
    n = len(passages)
    text = re.sub(r"\[(\d+)\]", lambda m: m.group(0) if 1 <= int(m.group(1)) <= n else "", answer)
    text = re.sub(r"[ \t]{2,}", " ", text).strip()
    marked = {int(m) for m in re.findall(r"\[(\d+)\]", text)}
    bare = re.sub(r"\[\d+\]", "", text).strip().strip(".").strip()
    sources = []
    for i, (hit, passage) in enumerate(passages, 1):
        sources.append(Source(i, hit.source, hit.page, hit.heading, hit.score, passage, chunk_id=hit.chunk_id))
    if bare:
        verbatim = [s for s in sources if bare.lower() in s.text.lower()]
        if verbatim:
            support = verbatim[:1]
        else:
            words = _words(bare)
            overlap = [(len(words & _words(s.text)) / max(1, len(words)), s) for s in sources]
            best = max(overlap, key=lambda o: o[0], default=(0, None))
            support = [best[1]] if best[0] >= 0.5 else []
        for s in support:
            s.cited = True
        for s in sources:
            if s.n in marked and not s.cited:
                # a marker the model gave for a passage that shares words with the answer is kept
                s.cited = bool(_words(bare) & _words(s.text))
        for s in sources:
            if s.cited:
                s.evidence = _evidence(bare, s.text)
        cited = [s.n for s in sources if s.cited]
        text = strip_markers(text)
        if cited:
            text = f"{text} " + "".join(f"[{c}]" for c in cited)
    return text, sources


def _evidence(answer: str, passage: str) -> str:
    """The passage sentence that contains the answer, else the one sharing most words with it."""
    parts = sentences(passage)
    for s in parts:
        if answer.lower() in s.lower():
            return s
    words = _words(answer)
    return max(parts, key=lambda s: len(words & _words(s)), default="")


class Timer:
    def __init__(self):
        self.start = time.perf_counter()
        self.marks: dict[str, float] = {}

    def mark(self, name: str) -> None:
        self.marks[name] = round((time.perf_counter() - self.start) * 1000, 1)


def stream_answer(question: str, hits: list[Hit], generator, max_tokens: int, copy: bool,
                  timer: Timer, prompt_k: int = 1, asked: str | None = None,
                  abstain: bool = False) -> Iterator[str | Answer]:
    """Prompt the decoder with the best `prompt_k` passages that fit, stream its text, end with
    the Answer. All hits become sources (the ones after the prompt's as further reading)."""
    overhead = generator.count(generator.render(build_messages(question, [], abstain), prefix="Answer:"))
    budget = generator.n_ctx - max_tokens - overhead - 8
    passages = fit_passages(hits[:prompt_k], generator.count, budget)
    prompt = generator.render(build_messages(question, passages, abstain), prefix="Answer:")
    pieces, first = [], None
    stop = ["\n", "Question:"]
    kwargs = {}
    if copy:
        # a copied answer ends at a clause boundary; it never starts with the question's words
        stop += [". ", ", ", "; ", " ("]
        # answers need no newlines; "unknown" is the one word allowed that is not in a passage
        sources = [" ".join(text.split()) for _, text in passages] + ([ABSTAIN] if abstain else [])
        kwargs = {"copy_from": sources,
                  "avoid_first": _avoid(question)}
    for piece in generator.stream(prompt, max_tokens=max_tokens, stop=stop, **kwargs):
        if first is None:
            timer.mark("first_token_ms")
            first = piece
            piece = piece.lstrip()
        pieces.append(piece)
        yield piece
    raw = "".join(pieces).strip()
    if abstain and raw.lower() == ABSTAIN:
        raw = ""
    shown = {h.chunk_id for h, _ in passages}
    text, sources = attach_citations(raw, passages + [(h, h.text) for h in hits if h.chunk_id not in shown])
    if not raw:
        text = NOT_FOUND
    timer.mark("total_ms")
    tokens = generator.count(raw) - generator.count("") if raw else 0
    gen_s = (timer.marks["total_ms"] - timer.marks.get("first_token_ms", timer.marks["total_ms"])) / 1000
    timings = {"retrieve_ms": timer.marks.get("retrieve_ms"), "first_token_ms": timer.marks.get("first_token_ms"),
               "total_ms": timer.marks["total_ms"], "tokens": tokens,
               "tokens_per_s": round((tokens - 1) / gen_s, 1) if gen_s > 0 and tokens > 1 else None}
    yield Answer(asked or question, text, sources, found=bool(raw), timings=timings)
