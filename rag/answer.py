"""From retrieved passages to a grounded answer: the prompt (numbered passages within a
token budget), the decoder call, and citations attached by rag rather than trusted from
the model. No retrieval and no model loading here: `qa.RAG` wires the parts together."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from .compose import check_free_answer, compose, sentences
from .errors import RagError
from .retrieve import Hit
from .text import has_cjk, segment, words

log = logging.getLogger(__name__)

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
    """A retrieved passage as numbered [n] under an answer."""
    n: int
    hit: Hit
    text: str  # the passage as the decoder read it (the hit's text, or the part that fit)
    cited: bool = False
    evidence: str = ""  # the sentence of the passage that supports the answer

    source = property(lambda self: self.hit.source)
    page = property(lambda self: self.hit.page)
    heading = property(lambda self: self.hit.heading)
    score = property(lambda self: self.hit.score)
    chunk_id = property(lambda self: self.hit.chunk_id)

    def to_dict(self) -> dict:
        return {"n": self.n, "source": self.source, "page": self.page, "heading": self.heading,
                "score": self.score, "text": self.text, "cited": self.cited, "evidence": self.evidence}


@dataclass
class Timings:
    """Where an answer's time went (milliseconds from the question), and decode speed."""
    retrieve_ms: float | None = None
    first_token_ms: float | None = None
    total_ms: float = 0.0
    tokens: int = 0
    tokens_per_s: float | None = None


@dataclass
class Answer:
    question: str
    text: str  # what the person reads: "**1897**: The lighthouse was first lit in 1897. [1]"
    sources: list[Source] = field(default_factory=list)
    found: bool = True
    timings: Timings = field(default_factory=Timings)
    short: str = ""  # the short answer (a name, a date, a number), when the question has one
    supporting: list[str] = field(default_factory=list)  # the sources' sentences it rests on, verbatim
    support: float | None = None  # the question's cosine to the supporting sentence (the encoder's check)

    def to_dict(self) -> dict:
        return {"question": self.question, "answer": self.text, "short_answer": self.short,
                "supporting": self.supporting, "found": self.found,
                "sources": [s.to_dict() for s in self.sources], "timings": asdict(self.timings)}


def label(hit) -> str:
    """"file.pdf, page 3": how a passage is named to the decoder and to the person."""
    name = hit.source.rsplit("/", 1)[-1]
    return name + (f", page {hit.page}" if hit.page else "")


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


# The same example in Chinese, for Chinese questions: the tiny decoders copy the form of the
# example's language (an English example drew English fragments from Chinese passages).
EXAMPLE_ZH = ("[1] (example.txt)\n长江是中国最长的河流，全长约6300公里。它流经青海、西藏和四川等11个省级行政区。",
              "长江全长多少公里？", "约6300公里")
ABSTAIN = "unknown"
ABSTAIN_EXAMPLE = ("Who first mapped the Amazon basin?", ABSTAIN)
ABSTAIN_EXAMPLE_ZH = ("谁最早绘制了长江的地图？", ABSTAIN)
# For models that follow instructions (a server's chat model): free words, cited, or "unknown".
GROUNDED = ("Answer the question using only the numbered passages. Reply in one to three sentences, "
            "in the language of the question, and cite the passages you used as [n]. If the passages "
            f"do not contain the answer, reply exactly: {ABSTAIN}")


def build_messages(question: str, passages: list[tuple[Hit, str]], abstain: bool = False,
                   grounded: bool = False) -> list[dict]:
    """System instruction, worked examples, the numbered passages, the question. With
    `abstain`, a second example shows answering "unknown" when the passage does not say.
    `grounded`: an instruction alone, for chat models that follow one."""
    blocks = "\n\n".join(f"[{i}] ({label(h)})\n{text}" for i, (h, text) in enumerate(passages, 1))
    if grounded:
        return [{"role": "system", "content": GROUNDED},
                {"role": "user", "content": f"Passages:\n\n{blocks}\n\nQuestion: {question}"}]
    chinese = has_cjk(question)
    ex_passage, ex_question, ex_answer = EXAMPLE_ZH if chinese else EXAMPLE
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"Passages:\n\n{ex_passage}\n\nQuestion: {ex_question}"},
                {"role": "assistant", "content": f"Answer: {ex_answer}"}]
    if abstain:
        ex_unknown = (ABSTAIN_EXAMPLE_ZH if chinese else ABSTAIN_EXAMPLE)[0]
        messages += [{"role": "user", "content": f"Passages:\n\n{ex_passage}\n\nQuestion: {ex_unknown}"},
                     {"role": "assistant", "content": f"Answer: {ABSTAIN}"}]
    return messages + [{"role": "user", "content": f"Passages:\n\n{blocks}\n\nQuestion: {question}"}]


# Words a short factual answer almost never starts with (measured: "in", "up", "when" starts
# were the commonest wrong one-word answers): function words, per language.
NOT_FIRST_EN = set("""the a an it its this that these those they he she we i in on at by for with from
to of up and or but as when where which who whom whose what why how while after before during
into about over than then there here is are was were be been has have had not no yes""".split())
NOT_FIRST_EN |= {w.capitalize() for w in NOT_FIRST_EN}
NOT_FIRST_EN -= {"no", "yes", "No", "Yes"}
NOT_FIRST_ZH = set("""的 了 是 在 和 与 及 或 由 被 把 将 对 从 向 为 以 于 之 其 这 那 也 都 就 而 并 但 有
它 他 她 我 你 们 个 一种 一个 什么 哪 谁 如何 怎么 为什么""".split())
NOT_FIRST = NOT_FIRST_EN | NOT_FIRST_ZH
# Where a copied answer stops: English clause ends, and Chinese ones (which need no space).
CLAUSE_ENDS = [". ", ", ", "; ", " (", "。", "，", "；", "！", "？", "（"]


def strip_markers(text: str) -> str:
    """The answer without its [n] citation markers."""
    return re.sub(r"\s*\[\d+\]", "", text).strip()


def _avoid(question: str) -> str:
    """Words the answer may not start with: the question's own (Chinese ones as segmented),
    function words, and punctuation."""
    words = re.findall(r"[A-Za-z][\w'-]*", question) + [w for w in segment(question).split() if has_cjk(w)]
    return " ".join(set(words) | {w.capitalize() for w in words} | NOT_FIRST
                    | set(".,;:()[]'\"-") | set("，。；：（）、“”"))


def _words(text: str) -> set[str]:
    """Words for overlap: English ones over two letters, every Chinese word."""
    return {w for w in words(text) if len(w) > 2 or has_cjk(w)}


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
        sources.append(Source(i, hit, passage))
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
    """Milliseconds from the question to each named step; `finish` makes the Timings."""

    def __init__(self):
        self.start = time.perf_counter()
        self.marks: dict[str, float] = {}

    def mark(self, name: str) -> None:
        self.marks[name] = round((time.perf_counter() - self.start) * 1000, 1)

    def finish(self, tokens: int = 0) -> Timings:
        self.mark("total_ms")
        total, first = self.marks["total_ms"], self.marks.get("first_token_ms")
        gen_s = (total - first) / 1000 if first is not None else 0.0
        return Timings(self.marks.get("retrieve_ms"), first, total, tokens,
                       round((tokens - 1) / gen_s, 1) if gen_s > 0 and tokens > 1 else None)


# Tokens kept free after the prompt and the answer: a chat template's closing tokens.
TEMPLATE_SLACK = 8


def stream_answer(question: str, hits: list[Hit], decoder, max_tokens: int, copy: bool,
                  timer: Timer, prompt_k: int = 1, rewritten: str | None = None,
                  abstain: bool = False, scorer=None, margin: float = 0.1) -> Iterator[str | Answer]:
    """Prompt the decoder with the best `prompt_k` passages that fit, stream its text, end with
    the Answer. All hits become sources (the ones after the prompt's as further reading).
    `question` is what the person asked; `rewritten`, its self-contained form (a follow-up with
    its pronoun resolved), is what the decoder reads. A decoder that cannot copy (a remote
    model) writes freely; its citations are checked alike. `scorer(question, sentences)`: the
    encoder's similarities, which check the sentence a copied span was taken from."""
    prompt_question = rewritten or question
    grounded = not decoder.copies
    copy = copy and decoder.copies
    # the "unknown" example made Gemma abstain on answerable Chinese questions (measured on
    # the Chinese article of tests/test_chinese.py): it stays for English and remote models
    abstain = (abstain and not has_cjk(prompt_question)) or grounded
    overhead = decoder.count(decoder.render(build_messages(prompt_question, [], abstain, grounded), prefix="Answer:"))
    budget = decoder.n_ctx - max_tokens - overhead - TEMPLATE_SLACK
    passages = fit_passages(hits[:prompt_k], decoder.count, budget)
    messages = build_messages(prompt_question, passages, abstain, grounded)
    pieces, first = [], None
    stop = ["\nQuestion:"] if grounded else ["\n", "Question:"]
    kwargs = {}
    if copy:
        # a copied answer ends at a clause boundary; it never starts with the question's words
        stop += CLAUSE_ENDS
        # answers need no newlines; "unknown" is the one word allowed that is not in a passage
        sources = [" ".join(text.split()) for _, text in passages] + ([ABSTAIN] if abstain else [])
        kwargs = {"copy_from": sources, "avoid_first": _avoid(prompt_question)}
    shown = {h.chunk_id for h, _ in passages}
    everything = passages + [(h, h.text) for h in hits if h.chunk_id not in shown]
    try:
        for piece in decoder.stream(messages, prefix="Answer:", max_tokens=max_tokens, stop=stop, **kwargs):
            if first is None:
                timer.mark("first_token_ms")
                first = piece
                piece = piece.lstrip()
            pieces.append(piece)
            yield piece
    except RagError:
        raise
    except Exception as e:  # one failed answer must not take the process (or the web server) down
        log.exception("the decoder failed")
        text = f"The decoder failed on this question ({type(e).__name__}: {str(e)[:200]}). The closest passages follow."
        yield text
        _, sources = attach_citations("", everything)
        yield Answer(question, text, sources, found=False, timings=timer.finish())
        return
    raw = "".join(pieces).strip()
    if abstain and raw.strip(" .").lower() == ABSTAIN:
        raw = ""
    tokens = decoder.count(raw) - decoder.count("") if raw else 0
    if not raw:
        _, sources = attach_citations("", everything)
        yield Answer(question, NOT_FOUND, sources, found=False, timings=timer.finish(tokens))
    elif copy:
        def respan(sentence: str) -> str:
            """The decoder's short answer copied from one sentence (the encoder's choice)."""
            # the same examples as the first prompt: llama.cpp keeps their cached prefix for the next question
            one = build_messages(prompt_question, [(passages[0][0], sentence)], abstain, grounded)
            return "".join(decoder.stream(one, prefix="Answer:", max_tokens=max_tokens, stop=stop,
                                          copy_from=[sentence], avoid_first=_avoid(prompt_question))).strip()

        yield _copied_answer(prompt_question, raw, everything, lambda: timer.finish(tokens), scorer, question,
                             respan, margin)
    else:
        yield _free_answer(question, raw, everything, timer.finish(tokens))


def _copied_answer(question: str, span: str, passages: list[tuple[Hit, str]], finish,
                   scorer=None, asked: str | None = None, respan=None, margin: float = 0.1) -> Answer:
    """A copied span made into a complete statement inside its source sentence, cited.
    `question` is the self-contained form; `asked`, what the person typed; `finish()` gives
    the Timings once everything (a second, shorter decode included) is done."""
    _, sources = attach_citations(span, passages)
    cited = next((s for s in sources if s.cited), None)
    if cited is None:
        return Answer(asked or question, span, sources, timings=finish(), short=span)
    made = compose(span, cited.text, question, scorer, respan, margin)
    if made.evidence:
        cited.evidence = made.evidence
    marks = "".join(f"[{s.n}]" for s in sources if s.cited)
    return Answer(asked or question, f"{made.text} {marks}", sources, timings=finish(), short=made.short,
                  supporting=made.supporting, support=made.support)


def _free_answer(question: str, written: str, passages: list[tuple[Hit, str]], timings: Timings) -> Answer:
    """A freely written answer: citations kept only where the source supports the sentence."""
    _, sources = attach_citations("", passages)
    text, cited, _ = check_free_answer(written, [s.text for s in sources])
    supporting = []
    for s in sources:
        if s.n in cited:
            s.cited = True
            s.evidence = _evidence(text, s.text)
            supporting.append(s.evidence)
    return Answer(question, text, sources, timings=timings, supporting=supporting)
