"""The answer a person reads, built around what the decoder chose. The decoder picks the
passage and the span; rag turns that into a complete statement: the short answer (a name,
a date, a number) inside the sentence of the source that supports it, or, for what/how/why
questions, the one to three sentences that answer. A freely written answer (a bigger model)
keeps only the citations whose sentence its source supports."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .text import content_words, has_cjk

# Questions whose answer is a short fact: the fact is shown first, emphasised.
FACTOID = re.compile(
    r"^\W*(who|whom|whose|when|where|which|what (year|day|date|time|percentage|percent|number|amount|"
    r"age|colou?r|size|name|kind|type|country|city|state|language|company|team|decade|century|period)|"
    r"how (many|much|long|old|far|big|large|tall|high|often|fast|deep|wide)|"
    r"(in|on|at|to|from|for|by) (what|which|whom)|name)\b"
    r"|(谁|哪|何时|几|多少|什么时候|哪一年|哪里|多久|多长|多大|多高)", re.I)
MAX_SHORT_WORDS = 10  # a longer copied span is a statement, not a short answer
MAX_SENTENCES = 3
ENOUGH_WORDS = 25  # an explanation keeps adding the next sentence until it has this many words
# The decoder's sentence stands unless another is closer to the question by this much (cosine).
SENTENCE_MARGIN = 0.10


@dataclass
class Composed:
    text: str  # what the person reads (without citation markers)
    short: str = ""  # the short answer, when the question has one
    supporting: list[str] = field(default_factory=list)  # the source's sentences, verbatim
    evidence: str = ""  # the verbatim stretch of the passage they cover (for highlighting)
    support: float | None = None  # the question's similarity to the chosen sentence (encoder)


# A line that is a unit of its own: a heading, a table row, a quote, or the start of a list item.
_STRUCTURE = re.compile(r"\s*(?:#{1,6}\s|\||>|[-*+]\s|\d+[.)]\s)")
# (not after an initial: "I. M. Pei")
_SENTENCE_END = re.compile(r"(?<=[.!?])(?<!\s[A-Z]\.)\s+(?=[A-Z0-9\"'(\[`])|(?<=[。！？])")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of `text`. English sentences end at . ! ? before a
    capital; Chinese ones at 。！？ anywhere. A blank line ends one; a heading, table row or
    quote line is one; a list item starts one; other line breaks only wrap a paragraph."""
    blocks, start, offset, prev_end = [], None, 0, 0
    for line in text.splitlines(keepends=True):
        end = offset + len(line.rstrip("\r\n"))
        if not line.strip():
            if start is not None:
                blocks.append((start, prev_end))
            start = None
        elif _STRUCTURE.match(line):
            if start is not None:
                blocks.append((start, prev_end))
            start = offset
            if not re.match(r"\s*(?:[-*+]\s|\d+[.)]\s)", line):  # a heading, row or quote: alone
                blocks.append((start, end))
                start = None
        elif start is None:
            start = offset
        prev_end = end
        offset += len(line)
    if start is not None:
        blocks.append((start, prev_end))
    spans = []
    for a, b in blocks:
        cut = a
        for m in _SENTENCE_END.finditer(text, a, b):
            spans.append((cut, m.start()))
            cut = m.end()
        spans.append((cut, b))
    return [(a + len(text[a:b]) - len(text[a:b].lstrip()), b - (len(text[a:b]) - len(text[a:b].rstrip())))
            for a, b in spans if text[a:b].strip()]


def sentences(text: str) -> list[str]:
    """The sentences of `text` (see sentence_spans), each on one line."""
    return [" ".join(text[a:b].split()) for a, b in sentence_spans(text)]


def overlap(question: str, sentence: str) -> float:
    """Share of the question's content words that the sentence contains."""
    wanted = set(content_words(question))
    return len(wanted & set(content_words(sentence))) / len(wanted) if wanted else 0.0


def is_factoid(question: str) -> bool:
    return FACTOID.search(question.strip()) is not None


def readable(sentence: str) -> str:
    """A source line as prose: no list marker, heading hashes, quote marks of Markdown, code
    ticks or emphasis stars; a table row's cells joined by commas."""
    s = sentence.strip()
    if s.startswith("|") and s.endswith("|"):
        s = ", ".join(c.strip() for c in s.strip("|").split("|") if c.strip() and not set(c.strip()) <= set("-: "))
    s = re.sub(r"^(?:[#>]+|[-*+]|\d+[.)])\s+", "", s)
    s = re.sub(r"(\*\*|__|`)", "", s)
    return re.sub(r"\s+", " ", s).strip()


def usable_short(span: str, question: str) -> str:
    """The span as a short answer, or "" when it is none: markup, a bare list number for a
    question that asks no number, or a whole clause."""
    s = re.sub(r"\s*\|\s*", ", ", readable(span)).strip(" ,;:.–—*#")
    if not re.search(r"\w", s):
        return ""
    asks_number = re.search(r"\b(how (many|much|long|old|far|big|large|tall|high|often|fast|deep|wide)|"
                            r"when|what (year|date|number|percentage|percent|amount|age))\b|几|多少|哪一年",
                            question, re.I)
    if re.fullmatch(r"\d{1,2}", s) and not asks_number:
        return ""  # "2": the list number in front of the paragraph, not an answer
    n_words = len(s) // 2 if has_cjk(s) else len(s.split())
    return s if n_words <= MAX_SHORT_WORDS else ""


def _locate(span: str, passage: str) -> tuple[int, int] | None:
    """Where the span (copied from the passage with its white space collapsed) is in it."""
    words = span.split()
    if not words:
        return None
    m = re.search(r"\s+".join(re.escape(w) for w in words), passage)
    if m is None:
        m = re.search(r"\s*".join(re.escape(c) for c in span.replace(" ", "")), passage)  # Chinese: no spaces
    return (m.start(), m.end()) if m else None


def compose(span: str, passage: str, question: str, scorer=None, respan=None,
            margin: float = SENTENCE_MARGIN) -> Composed:
    """The readable answer around `span`, a verbatim copy from `passage`. `scorer(question,
    sentences) -> similarities` (the encoder) checks the decoder's choice of sentence: when
    another sentence of the passage is closer to the question by `margin`, that one answers,
    and `respan(sentence)` asks the decoder for the short answer inside it."""
    where = _locate(span, passage)
    if where is None:
        return Composed(text=span, short=usable_short(span, question))
    spans = [(a, b, " ".join(passage[a:b].split())) for a, b in sentence_spans(passage)]
    first = next((i for i, (a, b, _) in enumerate(spans) if a <= where[0] < b), 0)
    support = None
    if scorer is not None and len(spans) > 1:
        sims = list(scorer(question, [readable(t) for _, _, t in spans]))
        for i in range(len(spans) - 1):  # a table's header row names columns, it answers nothing
            if re.fullmatch(r"\|[\s:|-]+\|", spans[i + 1][2]):
                sims[i] = -1.0
        sims = [-1.0 if not readable(t) else v for (_, _, t), v in zip(spans, sims)]
        best = max(range(len(spans)), key=sims.__getitem__)
        if sims[first] < sims[best] - margin:  # the decoder's span lies elsewhere
            first = best
            span = respan(spans[best][2]) if respan is not None else ""
            where = (spans[best][0], spans[best][0])
        support = sims[first]
    chosen = [first]
    factoid = is_factoid(question)
    if not factoid:  # an explanation: the sentence and the next ones while it is short
        while (len(chosen) < MAX_SENTENCES and chosen[-1] + 1 < len(spans)
               and sum(_length(spans[i][2]) for i in chosen) < ENOUGH_WORDS):
            chosen.append(chosen[-1] + 1)
    # a sentence that announces a list ("these tables:") takes the items after it
    while spans[chosen[-1]][2].endswith((":", "：")) and chosen[-1] + 1 < len(spans) and len(chosen) < MAX_SENTENCES:
        chosen.append(chosen[-1] + 1)
    # a span running past its sentence end takes the sentences it covers
    while chosen[-1] + 1 < len(spans) and spans[chosen[-1]][1] < where[1] and len(chosen) < MAX_SENTENCES:
        chosen.append(chosen[-1] + 1)
    supporting = [spans[i][2] for i in chosen]
    evidence = passage[spans[chosen[0]][0]:spans[chosen[-1]][1]]
    body = " ".join(r for r in (readable(s) for s in supporting) if r)
    short = usable_short(span, question) if span else ""
    if factoid and short and _length(short) < 0.6 * _length(body):
        text = f"**{short}**: {body}"
    else:
        text = body
    return Composed(text=text, short=short, supporting=supporting, evidence=evidence, support=support)


def unfinished(sentence: str) -> bool:
    """A sentence cut by the end of its passage (no closing punctuation)."""
    return not re.search(r"[.!?。！？:：;；)\]\"'”]$", sentence.strip())


def first_sentence(text: str) -> str:
    """The words of `text` up to its first sentence end (how a cut sentence continues)."""
    spans = sentence_spans(text)
    return " ".join(text[spans[0][0]:spans[0][1]].split()) if spans else ""


def _length(text: str) -> int:
    return len(text) // 2 if has_cjk(text) else len(text.split())


def supported_by(sentence: str, passage: str, threshold: float = 0.5) -> bool:
    """Does the passage support the sentence: most of its content words are in it."""
    words = set(content_words(sentence))
    return bool(words) and len(words & set(content_words(passage))) >= threshold * len(words)


def check_free_answer(text: str, passages: list[str]) -> tuple[str, set[int], int]:
    """A freely written answer's citations checked sentence by sentence: a [n] stays only
    where passage n supports its sentence; a sentence no passage supports is marked.
    Returns (text, passages cited, sentences without support)."""
    out, cited, unsupported = [], set(), 0
    for sentence in sentences(text):
        bare = re.sub(r"\s*\[\d+\]", "", sentence).strip()
        if not bare:
            continue
        marked = [int(n) for n in re.findall(r"\[(\d+)\]", sentence) if 1 <= int(n) <= len(passages)]
        keep = [n for n in marked if supported_by(bare, passages[n - 1])]
        if not keep:  # the model cited nothing that holds: find the passage that does
            keep = [n for n, p in enumerate(passages, 1) if supported_by(bare, p)][:1]
        if keep:
            cited.update(keep)
            out.append(bare + " " + "".join(f"[{n}]" for n in keep))
        else:
            unsupported += 1
            out.append(bare + " (not supported by the sources)")
    return " ".join(out), cited, unsupported
