"""The decoder's prompt: the numbered passages that fit its context window, the worked
examples a tiny model copies the form of, and the words a copied answer may not start with."""

from __future__ import annotations

from rag.answer.compose import sentences
from rag.core.records import Hit
from rag.language.text import (
    COMMA,
    EXCLAMATION_MARK,
    FULL_STOP,
    NOT_FIRST,
    OPEN_BRACKET,
    QUESTION_MARK,
    SEMICOLON,
    full_width,
    has_cjk,
    latin,
    words,
)

SYSTEM = ("You answer questions using only the numbered passages. Reply with the shortest exact "
          "phrase from the passages that answers the question, then stop.")
# One worked example: tiny models copy its form (a short phrase, no sentence) far better than
# they follow an instruction.
EXAMPLE = ("[1] (example.txt)\nThe Amazon river flows through Brazil, Peru and Colombia. Its basin "
           "covers about seven million square kilometres.",
           "How large is the basin of the Amazon?", "about seven million square kilometres")


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


def label(hit) -> str:
    """"file.pdf, page 3": how a passage is named to the decoder and to the person."""
    name = hit.source.rsplit("/", 1)[-1]
    return name + (f", page {hit.page}" if hit.page else "")


# The last passage that does not fit whole is cut at a sentence end where this many tokens of
# it still fit (a useful part); with less room it is left out.
MIN_CUT_TOKENS = 48


def fit_passages(hits: list[Hit], count, budget: int) -> list[tuple[Hit, str]]:
    """Passages in rank order while they fit `budget` tokens; the last one may be cut at a
    sentence end if a useful part (>= MIN_CUT_TOKENS) fits. Fewer whole passages beat a truncated prompt."""
    chosen, used = [], 0
    for hit in hits:
        block = f"[{len(chosen) + 1}] ({label(hit)})\n{hit.text}\n\n"
        cost = count(block)
        if used + cost <= budget:
            chosen.append((hit, hit.text))
            used += cost
            continue
        room = budget - used
        if room >= MIN_CUT_TOKENS:
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


# Where a copied answer stops (the decoder's stop strings): a Latin full stop, comma or
# semicolon before a space, and an opening bracket after one; the CJK full stop, comma,
# semicolon, exclamation and question marks and opening bracket, which need no space (not the
# list comma 、). llama.cpp cuts at the first of these listed that it finds, so the order is
# kept. The marks: text.SENTENCE_ENDS, text.CLAUSE_ENDS.
CLAUSE_ENDS = [*(mark + " " for mark in latin(FULL_STOP, COMMA, SEMICOLON)), " " + OPEN_BRACKET.latin,
               *full_width(FULL_STOP, COMMA, SEMICOLON, EXCLAMATION_MARK, QUESTION_MARK, OPEN_BRACKET)]


def avoid_first(question: str) -> str:
    """Words the answer may not start with: the question's own (text.words' "leading"; Chinese
    ones as segmented), function words (text.NOT_FIRST), and punctuation."""
    asked = words(question, "leading")
    return " ".join(set(asked) | {w.capitalize() for w in asked} | NOT_FIRST
                    | set(".,;:()[]'\"-") | set("，。；：（）、“”"))
