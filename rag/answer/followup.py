"""A follow-up question made to stand alone: its pronoun replaced by the previous question's
topic, for the decoder and for retrieval (the conversation of the web page, the HTTP API's
message history)."""

from __future__ import annotations

import re

from rag.language.text import STOPWORDS_EN as STOPWORDS
from rag.language.text import words as split_words

PRONOUNS = {"it": "", "its": "'s", "they": "", "them": "", "their": "'s", "he": "", "him": "",
            "his": "'s", "she": "", "her": "'s", "this": "", "that": ""}


def rewrite_follow_up(question: str, history: list | None) -> tuple[str, str]:
    """(question for the decoder, query for retrieval). A follow-up's first pronoun is replaced
    by the topic of the previous question (its run of capitalised words and the noun after
    them): "and when did it close?" after "When did the Louvre museum open?" becomes "and when
    did the Louvre museum close?". Without such a pronoun, retrieval searches both questions."""
    previous = [_content(t) for t in history or [] if _role(t) == "user"]
    if not previous:
        return question, question
    words = split_words(previous[-1], "written")  # as written: a capital marks the topic
    topic = []
    for i, w in enumerate(words):
        if i > 0 and w[:1].isupper():
            topic.append(w)
        elif topic:
            if i < len(words) - 1 and w.lower() not in STOPWORDS:
                topic.append(w)
            break
    if topic:
        def swap(m):
            word = m.group(0)
            return "the " * (words[words.index(topic[0]) - 1].lower() == "the") + " ".join(topic) + PRONOUNS[word.lower()]

        rewritten, n = re.subn(r"\b(" + "|".join(PRONOUNS) + r")\b", swap, question, count=1, flags=re.I)
        if n:
            return rewritten, rewritten
    return question, f"{previous[-1]} {question}"


def _role(turn) -> str:
    return turn.get("role", "") if isinstance(turn, dict) else "user"


def _content(turn) -> str:
    return turn.get("content", "") if isinstance(turn, dict) else str(turn)

