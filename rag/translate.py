"""Questions in another script than an English-only index, searched in English.

An index built from English documents has an English-only encoder (all-MiniLM-L6-v2): a
Chinese question's vector lands nowhere near the passage that answers it, and it shares no
keyword with it either (XQuAD Chinese questions over the English paragraphs: recall@5 0.10).
So such a question is first translated into English by a small local decoder, and the
translation is what dense and keyword search read (recall@5 0.87, benchmarks/languages.py;
a multilingual encoder for the whole index gets 0.89 at 2.3x the English ingest time).

A question in the Latin script is translated too when the index lacks most of its words
(`FOREIGN`): German, French or Spanish over English documents. Telling those languages apart
needs more words than a question has, but whether the index knows a question's words needs
only one lookup per word, and it is what keyword and dense search depend on.

The translation is untrusted text like any model output: one line, bounded in length, and
used only when it is in the Latin script and not the question itself; otherwise, or when the
decoder fails, the question is searched as asked."""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict

from .present import safe
from .text import latin_share

log = logging.getLogger(__name__)

# The few-shot examples teach the format (a translation, not an answer: without them Qwen
# answered a third of the questions), in two scripts so no one language is the model.
SYSTEM = "Translate the user's text into English. Do not answer it. Reply with the English translation only."
EXAMPLES = [("长城有多长？", "How long is the Great Wall?"),
            ("Кто изобрёл телефон?", "Who invented the telephone?")]
ASK = "Translate into English: "

MAX_QUESTION_CHARS = 1000  # longer text is searched as asked (a pasted paragraph, not a question)
CACHE_SIZE = 1024


# Below this share of its words found in the index (Snapshot.coverage) a question is taken to
# be in another language. XQuAD German questions: 83% under it over SQuAD's 2,067 English
# paragraphs, 94% over XQuAD's 240; English questions: none of 1,000 SQuAD ones, 1 of 500 on
# COVID-QA. It is the coverage from which keyword search is fully trusted (retrieve.COVERED).
FOREIGN = 0.6


def needs_english(question: str, coverage: float = 1.0) -> bool:
    """Whether an English-only index should search `question` in translation: most of its
    letters are in another script than the Latin one, or the index has too few of its words."""
    return latin_share(question) < 0.5 or coverage < FOREIGN


def messages(question: str) -> list[dict]:
    chat = [{"role": "system", "content": SYSTEM}]
    for asked, english in EXAMPLES:
        chat += [{"role": "user", "content": ASK + asked}, {"role": "assistant", "content": english}]
    return chat + [{"role": "user", "content": ASK + question}]


_LABEL = re.compile(r"^(?:english(?: translation)?|translation)\s*[:：]\s*", re.I)
_QUOTES = "\"'“”‘’「」『』«»"


def accept(reply: str, question: str) -> str | None:
    """The reply as a search query, or None where it is no usable translation: empty, far
    longer than the question, still mostly in the question's script, or with control
    characters (a terminal escape is no English)."""
    line = next((x.strip() for x in reply.splitlines() if x.strip()), "")
    line = _LABEL.sub("", line).strip().strip(_QUOTES).strip()
    if not line or len(line) > 3 * len(question) + 80 or latin_share(line) < 0.8 or safe(line, False) != line:
        return None
    return None if line.casefold() == question.casefold() else line  # English already


class Translator:
    """Question -> English search query through `decoder` (loaded on first use), remembered
    for the last CACHE_SIZE questions (the same question is translated once per process, also
    when the answer pipeline, then search, ask for it)."""

    def __init__(self, decoder_factory):
        self._factory = decoder_factory
        self._cache: OrderedDict[str, str | None] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, question: str) -> str | None:
        """The English form of `question`, or None where it should be searched as asked (the
        caller decides which questions need one: `needs_english`)."""
        question = " ".join(question.split())
        if not question or len(question) > MAX_QUESTION_CHARS:
            return None
        with self._lock:
            if question in self._cache:
                self._cache.move_to_end(question)
                return self._cache[question]
        try:
            decoder = self._factory()
            limit = min(160, 2 * len(question) + 24)  # tokens: an English question is rarely longer
            english = accept("".join(decoder.stream(messages(question), max_tokens=limit, stop=["\n"])), question)
        except Exception as e:  # a failed translation costs the cross-language match, not the answer;
            # remembered, so a hanging server costs its deadline once per question, not per search
            log.warning("could not translate the question for search (%s); searching it as asked", e)
            english = None
        with self._lock:
            self._cache[question] = english
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return english
