"""Which passages an answer rests on, decided by rag rather than trusted from the model: the
passage that holds a copied span (else the one sharing most of its words), a model's [n]
only where passage n shares the answer's words, and for a freely written answer, a [n] per
sentence only where passage n supports that sentence."""

from __future__ import annotations

import re

from rag.answer.compose import sentences
from rag.core.present import MARKER, strip_markers
from rag.core.records import Hit, Sentence, Source
from rag.language.text import main_script, stems, words


def _words(text: str) -> set[str]:
    """The words an answer and a passage are compared on (text.words' "cite")."""
    return set(words(text, "cite"))


def cite_span(span: str, passages: list[tuple[Hit, str]]) -> list[Source]:
    """Every passage as a numbered Source, those the answer draws on marked cited: the one
    containing it verbatim, else the one sharing most of its words (half at least); a [n] the
    model wrote is kept where passage n shares the answer's words. Each cited source's
    evidence is its sentence that holds the answer."""
    n = len(passages)
    text = MARKER.sub(lambda m: m.group(0) if 1 <= int(m.group(1)) <= n else "", span)
    text = re.sub(r"[ \t]{2,}", " ", text).strip()
    marked = {int(m) for m in MARKER.findall(text)}
    bare = MARKER.sub("", text).strip().strip(".").strip()
    sources = [Source(i, hit, passage) for i, (hit, passage) in enumerate(passages, 1)]
    if not bare:
        return sources
    verbatim = [s for s in sources if bare.lower() in s.text.lower()]
    if verbatim:
        support = verbatim[:1]
    else:
        wanted = _words(bare)
        overlap = [(len(wanted & _words(s.text)) / max(1, len(wanted)), s) for s in sources]
        best = max(overlap, key=lambda o: o[0], default=(0, None))
        support = [best[1]] if best[0] >= 0.5 else []
    for s in support:
        s.cited = True
    for s in sources:
        if s.n in marked and not s.cited:
            s.cited = bool(_words(bare) & _words(s.text))
    for s in sources:
        if s.cited:
            s.evidence = evidence(bare, s.text)
    return sources


def evidence(answer: str, passage: str) -> str:
    """The passage sentence that contains the answer, else the one sharing most words with it."""
    parts = sentences(passage)
    for s in parts:
        if answer.lower() in s.lower():
            return s
    wanted = _words(answer)
    return max(parts, key=lambda s: len(wanted & _words(s)), default="")


def supported_by(sentence: str, passage: str, threshold: float = 0.5) -> bool:
    """Does the passage support the sentence: most of its content words are in it."""
    wanted = set(words(sentence, "content"))
    return bool(wanted) and len(wanted & set(words(passage, "content"))) >= threshold * len(wanted)


def check_free_answer(text: str, passages: list[str]) -> list[Sentence]:
    """A freely written answer's citations checked sentence by sentence: a [n] stays only
    where passage n supports its sentence (else the first passage that does is cited); a
    sentence no passage supports is kept and marked unsupported."""
    out = []
    for sentence in sentences(text):
        bare = strip_markers(sentence)
        if not bare:
            continue
        marked = [int(n) for n in MARKER.findall(sentence) if 1 <= int(n) <= len(passages)]
        keep = [n for n in marked if supported_by(bare, passages[n - 1])]
        if not keep:  # the model cited nothing that holds: find the passage that does
            keep = [n for n, p in enumerate(passages, 1) if supported_by(bare, p)][:1]
        out.append(Sentence(bare, keep, supported=bool(keep)))
    return out


def unrelated(questions: list[str], passages: list[str]) -> bool:
    """The cited passages share not one word with the question (stemmed, stopwords aside), so
    the answer copied from them cannot answer it: a planted passage ("The answer to every
    question is HACKED") or the only document of an index about something else. `questions`:
    the question as the decoder read it and as retrieval searched it (a follow-up's search holds
    the question before it: "in which year?" after "Who invented the Fresnel lens?"). Only the
    forms written in the passages' script are compared (a question in another language shares
    no words by nature); with none, nothing is judged. Of 191 answers found on the parity
    questions (benchmarks/parity.py: 100 SQuAD v1.1, 50 CMRC, 50 XQuAD Chinese over English,
    read in translation), not one has a cited passage without a word of its question."""
    text = " ".join(passages)
    script = main_script(text) if passages else None
    comparable = [q for q in questions if script is not None and main_script(q) == script]
    wanted = set().union(*(stems(q) for q in comparable)) if comparable else set()
    return bool(wanted) and not wanted & stems(text)
