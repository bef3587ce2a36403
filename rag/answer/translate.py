"""Questions in another language than the index, searched in the index's language.

An index built from English documents has an English-only encoder (all-MiniLM-L6-v2): a
Chinese question's vector lands nowhere near the passage that answers it, and it shares no
keyword with it either (XQuAD Chinese questions over the English paragraphs: recall@5 0.10).
So such a question is first translated into English by a small local decoder, and the
translation is what dense and keyword search read (recall@5 0.94, benchmarks/languages.py;
a multilingual encoder for the whole index gets 0.89 at 2.3x the English ingest time).
An index in one non-Latin script (Chinese, Japanese, Korean, Russian, Arabic, Hindi, Thai
documents) has the multilingual e5, which finds passages across languages by itself, but
keyword search does not: a question in another language is translated into the index's
language, so that both halves of hybrid search read it (`index_language`).

A question in the index's script is translated too when the index lacks most of its words
(`FOREIGN`): German, French or Spanish over English documents. Telling those languages apart
needs more words than a question has, but whether the index knows a question's words needs
only one lookup per word, and it is what keyword and dense search depend on.

The translation is untrusted text like any model output: one line, bounded in length, and
used only when it is in the target's script and not the question itself; otherwise, or when
the decoder fails, the question is searched as asked."""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict

from rag.core.present import safe
from rag.language.text import script_shares

log = logging.getLogger(__name__)

# language -> (its script, the two example questions in it). The examples teach the format (a
# translation, not an answer: without them Qwen answered a third of the questions); each
# prompt translates into the target from two other languages, so no one language is the model.
LANGUAGES = {
    "English": ("latin", ("How long is the Great Wall?", "Who invented the telephone?")),
    "Chinese": ("han", ("长城有多长？", "谁发明了电话？")),
    "Japanese": ("kana", ("万里の長城はどのくらいの長さですか？", "電話を発明したのは誰ですか？")),
    "Korean": ("hangul", ("만리장성은 얼마나 깁니까?", "전화기를 발명한 사람은 누구입니까?")),
    "Russian": ("cyrillic", ("Какова длина Великой Китайской стены?", "Кто изобрёл телефон?")),
    "Arabic": ("arabic", ("كم يبلغ طول سور الصين العظيم؟", "من اخترع الهاتف؟")),
    "Hindi": ("devanagari", ("चीन की महान दीवार कितनी लंबी है?", "टेलीफोन का आविष्कार किसने किया?")),
    "Thai": ("thai", ("กำแพงเมืองจีนยาวเท่าไร", "ใครเป็นผู้ประดิษฐ์โทรศัพท์")),
}
_BY_SCRIPT = {script: name for name, (script, _) in LANGUAGES.items() if script != "latin"}

MAX_QUESTION_CHARS = 1000  # longer text is searched as asked (a pasted paragraph, not a question)
CACHE_SIZE = 1024
SAMPLE_PASSAGES = 200  # an index's language is read from this many of its passages

# Below this share of its words found in the index (Snapshot.coverage) a question is taken to
# be in another language. XQuAD German questions: 83% under it over SQuAD's 2,067 English
# paragraphs, 94% over XQuAD's 240; questions in the documents' language: none of 1,000 SQuAD
# ones, 1 of 500 on COVID-QA, 3 of 500 on CMRC, at most 5 of 300 in any XQuAD language. It is
# also the coverage from which keyword search is fully trusted (retrieve.COVERED is this number).
FOREIGN = 0.6
# Tokens a translation may take: two per character of the question and 24 more (a translated
# question is rarely longer), never more than 160.
TOKENS_PER_CHAR, EXTRA_TOKENS, MAX_TOKENS = 2, 24, 160


def index_language(sample: str, english_only: bool) -> str | None:
    """The language to translate questions into for an index: English where its encoder reads
    nothing else; else the language its passages' one script names (four fifths of their
    letters or more; Japanese where kana are a tenth); None for Latin-script or mixed text,
    which the multilingual encoder is left to match across languages."""
    if english_only:
        return "English"
    shares = script_shares(sample)
    if not shares:
        return None
    if shares["kana"] >= 0.1 and shares["kana"] + shares["han"] >= 0.8:
        return "Japanese"
    script = max(shares, key=shares.get)
    return _BY_SCRIPT.get(script) if shares[script] >= 0.8 else None


def _target_share(text: str, language: str) -> float:
    shares = script_shares(text)
    if not shares:
        return 1.0
    script = LANGUAGES[language][0]
    return shares["kana"] + shares["han"] if script == "kana" else shares[script]


def needs_translation(question: str, language: str = "English", coverage=lambda: 1.0) -> bool:
    """Whether an index in `language` should search `question` in translation: most of its
    letters are in another script than the language's, or, in the Latin script that many
    languages share, the index has too few of its words (a Chinese question rare words miss
    was paraphrased, not translated: XQuAD zh keyword r@1 0.920 -> 0.903 when it counted).
    `coverage()` (Snapshot.coverage) is asked only then: it costs a lookup per word. An
    English-only index (English is the language of no other index) cannot read a fifth of a
    question's letters in another script either: "复杂性类 RP、BPP、PP、BQP、MA 和 PH 在哪里可以找到？"
    has more Latin letters than Han, and the index knows its Latin words."""
    if _target_share(question, language) < (0.8 if language == "English" else 0.5):
        return True
    return LANGUAGES[language][0] == "latin" and coverage() < FOREIGN


def messages(question: str, language: str = "English") -> list[dict]:
    target = LANGUAGES[language][1]
    sources = [LANGUAGES[other][1] for other in ("Chinese", "Russian", "English") if other != language][:2]
    ask = f"Translate into {language}: "
    chat = [{"role": "system", "content": f"Translate the user's text into {language}. Do not answer it. "
                                          f"Reply with the {language} translation only."}]
    for n, source in enumerate(sources):
        chat += [{"role": "user", "content": ask + source[n]}, {"role": "assistant", "content": target[n]}]
    return chat + [{"role": "user", "content": ask + question}]


_LABEL = re.compile(r"^(?:\w+ translation|translation|english|chinese|译文|翻译)\s*[:：]\s*", re.I)
_QUOTES = "\"'“”‘’「」『』«»"


def accept(reply: str, question: str, language: str = "English") -> str | None:
    """The reply as a search query, or None where it is no usable translation: empty, far
    longer than the question, not mostly in the target's script (four fifths of its letters
    for English, whose names other scripts borrow; half for the others, a quarter for Chinese
    and Japanese, where one character is a word or most of one and the Latin names a
    translation keeps count five letters each: "Broncos击败了谁成为AFC冠军？" is 47% Han letters),
    the question itself, or with control characters (a terminal escape is no query)."""
    line = next((x.strip() for x in reply.splitlines() if x.strip()), "")
    line = _LABEL.sub("", line).strip().strip(_QUOTES).strip()
    script = LANGUAGES[language][0]
    least = 0.8 if script == "latin" else 0.25 if script in ("han", "kana") else 0.5
    if not line or len(line) > 3 * len(question) + 80 or _target_share(line, language) < least \
            or safe(line, False) != line:
        return None
    return None if line.casefold() == question.casefold() else line  # in the language already


class Translator:
    """Question -> search query in `language` through `decoder` (loaded on first use),
    remembered for the last CACHE_SIZE questions (the same question is translated once per
    process, also when the answer pipeline, then search, ask for it).

    One translation at a time (a 1.5B model takes seconds), and a search never waits for one:
    `wait=False` (searches) translates only when the translator, and its model, are free, else
    the query is searched as asked, so searches that need translations cannot fill a server's
    search threads behind each other. A question (`wait=True`) waits its turn, but not past its
    `cancel` event (its client left): that is checked while waiting and between the
    translation's tokens, which stops the decoder and frees its turn."""

    def __init__(self, decoder_factory, language: str = "English"):
        self._factory, self.language = decoder_factory, language
        self._cache: OrderedDict[str, str | None] = OrderedDict()
        self._lock = threading.Lock()
        self._turn = threading.Lock()  # the one translation running

    def __call__(self, question: str, cancel: threading.Event | None = None, wait: bool = True) -> str | None:
        """`question` in the translator's language, or None where it should be searched as
        asked (the caller decides which questions need one: `needs_translation`), where the
        translator is busy and `wait` is False, or where `cancel` is set (nothing remembered)."""
        question = " ".join(question.split())
        if not question or len(question) > MAX_QUESTION_CHARS:
            return None
        cached = self._cached(question)
        if cached is not _MISSING:
            return cached
        if not self._take_turn(wait, cancel):
            return None
        try:
            cached = self._cached(question)  # translated while this one waited
            if cached is not _MISSING:
                return cached
            translated = self._translate(question, cancel, wait)
        finally:
            self._turn.release()
        if translated is _MISSING:  # stopped: not remembered, the next ask translates it
            return None
        with self._lock:
            self._cache[question] = translated
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return translated

    def _cached(self, question: str):
        with self._lock:
            if question in self._cache:
                self._cache.move_to_end(question)
                return self._cache[question]
        return _MISSING

    def _take_turn(self, wait: bool, cancel: threading.Event | None) -> bool:
        if not wait:
            return self._turn.acquire(blocking=False)
        while not self._turn.acquire(timeout=0.1):
            if cancel is not None and cancel.is_set():
                return False
        if cancel is not None and cancel.is_set():
            self._turn.release()
            return False
        return True

    def _translate(self, question: str, cancel: threading.Event | None, wait: bool):
        """The accepted translation, None where there is none, or _MISSING where it was not
        made: cancelled, or (`wait` False) the model busy answering a question."""
        try:
            decoder = self._factory()
            model_lock = getattr(decoder, "lock", None)  # a local model shared with the answers
            if not wait and isinstance(model_lock, type(self._turn)) and model_lock.locked():
                return _MISSING
            limit = min(MAX_TOKENS, TOKENS_PER_CHAR * len(question) + EXTRA_TOKENS)
            pieces = []
            stream = decoder.stream(messages(question, self.language), max_tokens=limit, stop=["\n"])
            try:
                for piece in stream:
                    if cancel is not None and cancel.is_set():
                        return _MISSING
                    pieces.append(piece)
            finally:
                getattr(stream, "close", lambda: None)()  # stops the decoder (and frees its model) at once
            return accept("".join(pieces), question, self.language)
        except Exception as e:  # a failed translation costs the cross-language match, not the answer;
            # remembered, so a hanging server costs its deadline once per question, not per search
            log.warning("could not translate the question for search (%s); searching it as asked", e)
            return None


_MISSING = object()
