"""Words, scripts, stopwords, sentence ends and segmentation, for every language: the one
place that knows that Chinese is written without spaces, which marks end a sentence or a
clause, and what counts as a word for each purpose (`words`). Used by chunking (sentence
ends), the keyword index (segmented words, rag.language.segment), retrieval (query words) and
answers (words an answer may not start with, clause ends, character-level scoring). English
text passes through every function unchanged.

Chinese words come from jieba (`rjieba`, Rust): FTS5's unicode61 tokenizer keeps a whole
run of Han characters as one token, so BM25 over raw Chinese found almost nothing (CMRC
hit@1 0.155); over jieba words joined by spaces 0.969 (issue 10's measurement)."""

from __future__ import annotations

import re
from bisect import bisect_right
from functools import cache
from typing import NamedTuple

# --- scripts ----------------------------------------------------------------------------------


class Script(NamedTuple):
    name: str
    ranges: tuple[tuple[str, str], ...]  # (first, last) letters
    # how its words are told apart: "spaces"; "jieba" (CJK: cut by a dictionary, `segment`);
    # "pairs" (other scripts without spaces: overlapping letter pairs in the keyword index)
    words: str = "spaces"
    stemmer: str | None = None  # the Snowball stemmer of its main language (keyword index, version 2)
    shares: bool = False  # counted by `script_shares`: its letters name a language for translation


# Every script rag treats apart from the others, in code point order. Latin (shared by English,
# German, French...) names no language by itself, but its share tells Latin text from the rest.
SCRIPT_TABLE = (
    Script("latin", (("\u0041", "\u024f"),), shares=True),  # Basic Latin through Latin Extended-B
    Script("greek", (("\u0370", "\u03ff"),), stemmer="greek"),
    Script("cyrillic", (("\u0400", "\u052f"),), stemmer="russian", shares=True),
    Script("armenian", (("\u0530", "\u058f"),), stemmer="armenian"),
    Script("arabic", (("\u0600", "\u06ff"),), stemmer="arabic", shares=True),
    Script("devanagari", (("\u0900", "\u097f"),), stemmer="hindi", shares=True),
    Script("tamil", (("\u0b80", "\u0bff"),), stemmer="tamil"),
    Script("thai", (("\u0e00", "\u0e7f"),), words="pairs", shares=True),
    Script("lao", (("\u0e80", "\u0eff"),), words="pairs"),
    Script("myanmar", (("\u1000", "\u109f"),), words="pairs"),
    Script("khmer", (("\u1780", "\u17ff"),), words="pairs"),
    Script("kana", (("\u3040", "\u30ff"),), words="jieba", shares=True),
    # CJK ideographs with extension A (the Yijing hexagrams between them are no letters)
    Script("han", (("\u3400", "\u4dbf"), ("\u4e00", "\u9fff")), words="jieba", shares=True),
    Script("han compatibility", (("\uf900", "\ufaff"),), words="jieba"),
    Script("hangul", (("\uac00", "\ud7af"),), words="jieba", shares=True),
)


def _class(scripts) -> str:
    """The scripts' letters as the inside of a regular expression's character class."""
    return "".join(f"{lo}-{hi}" for s in scripts for lo, hi in s.ranges)


# CJK ideographs (with extension A and compatibility forms), kana and hangul: scripts
# written without spaces between words, which jieba cuts.
CJK = _class(s for s in SCRIPT_TABLE if s.words == "jieba")
# Other scripts written without spaces between words: Thai, Lao, Myanmar, Khmer (their
# keyword-index words: rag.language.segment; answers are scored by characters, as CJK's are).
UNSPACED = _class(s for s in SCRIPT_TABLE if s.words == "pairs")
# The scripts whose letters name one language well enough for a translation prompt (and Latin).
SCRIPTS = {s.name: _class([s]) for s in SCRIPT_TABLE if s.shares}

_CJK_RUN = re.compile(f"[{CJK}]+")
_CJK_CHAR = re.compile(f"[{CJK}]")
_UNSPACED_CHAR = re.compile(f"[{CJK}{UNSPACED}]")
_SCRIPT_RE = {name: re.compile(f"[{letters}]") for name, letters in SCRIPTS.items()}

# --- sentence and clause ends -----------------------------------------------------------------


class Mark(NamedTuple):
    """A punctuation mark in its two forms: Latin, which ends a sentence or clause only before
    a space ("3.5", "e.g." end nothing), and full-width CJK, which needs no space after it."""
    latin: str
    cjk: str


FULL_STOP, QUESTION_MARK, EXCLAMATION_MARK = Mark(".", "。"), Mark("?", "？"), Mark("!", "！")
SEMICOLON, COMMA, COLON = Mark(";", "；"), Mark(",", "，"), Mark(":", "：")
LIST_COMMA = Mark("", "、")  # CJK only: between the items of a list (青海、西藏和四川), inside a clause
OPEN_BRACKET, CLOSE_BRACKET = Mark("(", "（"), Mark(")", "）")  # around an aside
SENTENCE_ENDS = (FULL_STOP, QUESTION_MARK, EXCLAMATION_MARK)
CLAUSE_ENDS = (SEMICOLON, COMMA, LIST_COMMA, COLON)


def latin(*marks: Mark) -> str:
    """The marks' Latin forms, in the order given."""
    return "".join(m.latin for m in marks)


def full_width(*marks: Mark) -> str:
    """The marks' CJK full-width forms, in the order given."""
    return "".join(m.cjk for m in marks)


# --- stopwords --------------------------------------------------------------------------------

STOPWORDS_EN = set("""a an and are as at be but by for from has have he her his how i if in into is it its
of on or she so that the their them then there these they this to was we were what when where which
who whom why will with you your do does did not no can could would should may might also than too
very just about after before over under between out up down off more most some any each other such
only own same s t don now""".split())
STOPWORDS_ZH = set("""的 了 是 在 和 与 及 或 由 被 把 将 对 从 向 为 以 于 之 其 这 那 这个 那个 这些 那些
一个 一种 有 没有 也 都 就 而 并 但 吗 呢 吧 啊 什么 哪 哪个 哪些 哪里 哪家 哪一 哪一年 谁 几 多少 怎么
怎样 如何 为什么 为何 何时 何 是否 多 么 所 它 他 她 们 我 你 上 中 下 个 年 月 日""".split())
STOPWORDS = STOPWORDS_EN | STOPWORDS_ZH

# Words a short factual answer almost never starts with (measured: "in", "up", "when" starts
# were the commonest wrong one-word answers): function words, per language, English ones also
# capitalised; "no" and "yes" may be an answer.
NOT_FIRST_EN = set("""the a an it its this that these those they he she we i in on at by for with from
to of up and or but as when where which who whom whose what why how while after before during
into about over than then there here is are was were be been has have had not no yes""".split())
NOT_FIRST_EN |= {w.capitalize() for w in NOT_FIRST_EN}
NOT_FIRST_EN -= {"no", "yes", "No", "Yes"}
NOT_FIRST_ZH = set("""的 了 是 在 和 与 及 或 由 被 把 将 对 从 向 为 以 于 之 其 这 那 也 都 就 而 并 但 有
它 他 她 我 你 们 个 一种 一个 什么 哪 谁 如何 怎么 为什么""".split())
NOT_FIRST = NOT_FIRST_EN | NOT_FIRST_ZH


# Invisible characters that split a word for the keyword index (FTS5's unicode61 treats them
# as separators: "ex<ZWSP>ample" was the two tokens "ex" and "ample", found by no question):
# zero-width space, non-joiner, joiner, word joiner, byte-order mark, soft hyphen.
INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff\u00ad"
_INVISIBLE = re.compile(f"[{INVISIBLE}]+")


def clean(text: str) -> str:
    """`text` without invisible characters: what both indexes and every question see."""
    return _INVISIBLE.sub("", text) if _INVISIBLE.search(text) else text


def clean_with_offsets(text: str, max_runs: int = 1_000_000) -> tuple[str, "callable"]:
    """(clean text, where) with where(i) the offset in `text` of character i of the clean
    text, so that passages keep pointing into the page they came from. A text with more than
    `max_runs` runs of invisible characters (hostile, not written) maps onto the clean text."""
    if not _INVISIBLE.search(text):
        return text, lambda i: i
    from array import array

    starts, removed, total = array("q"), array("q"), 0  # per run: its clean position, removed up to it
    for m in _INVISIBLE.finditer(text):
        total += m.end() - m.start()
        starts.append(m.start() - (total - (m.end() - m.start())))
        removed.append(total)
        if len(starts) > max_runs:
            return _INVISIBLE.sub("", text), lambda i: i

    def where(i: int) -> int:
        k = bisect_right(starts, i)
        return i + (removed[k - 1] if k else 0)

    return _INVISIBLE.sub("", text), where


def cjk_ratio(text: str) -> float:
    """Share of CJK characters among the letters of `text` (0 for English)."""
    letters = sum(1 for c in text if c.isalpha())
    return len(_CJK_CHAR.findall(text)) / letters if letters else 0.0


def has_cjk(text: str) -> bool:
    return _CJK_CHAR.search(text) is not None


@cache
def _jieba():
    import rjieba

    return rjieba


def segment(text: str) -> str:
    """Text with its CJK runs cut into words separated by spaces; everything else as it was.
    Index and question go through the same function, so their words match."""
    if not has_cjk(text):
        return text
    cut = _jieba().cut
    return _CJK_RUN.sub(lambda m: " " + " ".join(cut(m.group(0))) + " ", text)


# --- words ------------------------------------------------------------------------------------
# A word, for `words`' default purpose: a run of letters/digits (English, numbers) with an
# apostrophe or hyphen inside (don't, state-of-the-art), or one CJK word after segmentation.
WORD = re.compile(r"\w+(?:['’-]\w+)*")
_PLAIN = re.compile(r"\w+")
_WRITTEN = re.compile(r"[\w'-]+")
_LATIN_LED = re.compile(r"[A-Za-z][\w'-]*")
_LATIN = re.compile(r"[A-Za-z]+")


def is_content(word: str, min_len: int = 2) -> bool:
    """A lower-cased word that carries meaning: no stopword, and `min_len` letters or more
    unless it is CJK (a single character such as 书 or 猫 is a whole word)."""
    return word not in STOPWORDS and (len(word) >= min_len or has_cjk(word))


def _match(text: str) -> list[str]:
    return WORD.findall(segment(text).lower())


# What counts as a word differs by purpose, and each difference is kept on purpose: numbers
# were measured or fitted on it (or an index stores its words). Every purpose lists the words
# in the order of the text, repeats included.
PURPOSES = {
    # Lower-cased; English as written, with an apostrophe or hyphen inside; CJK as jieba cuts
    # it. The words two texts share (answers against passages).
    "match": _match,
    # What a text is about: "match" words without stopwords (English and Chinese) and without
    # one-letter words, every CJK word kept. Questions against sentences (compose.overlap, the
    # sentence check's overlap signal), sentences against passages (citations.supported_by).
    "content": lambda text: [w for w in _match(text) if is_content(w)],
    # Which passage holds an answer and which of its sentences (citations.cite_span, evidence):
    # "match" words of three letters or more and every CJK word, stopwords kept. An answer is a
    # few words, compared with a passage's; which passage is cited was measured with these.
    "cite": lambda text: [w for w in _match(text) if len(w) > 2 or has_cjk(w)],
    # Runs of letters and digits (Python's \w) of the lower-cased, segmented text: an apostrophe
    # or hyphen splits a word (don't -> don, t). What the confidence model's signals count
    # (confidence.py: its coefficients were fitted on them) and the words a question had for a
    # version-1 keyword index (segment.query_words).
    "plain": lambda text: _PLAIN.findall(segment(text).lower()),
    # The CJK words alone, as jieba cuts them (a Chinese question's words, Chinese candidates).
    "cjk": lambda text: [w for w in segment(text).split() if has_cjk(w)],
    # As written, case kept and not segmented, an ASCII apostrophe or hyphen inside: a capital
    # marks a name (followup: the topic of the previous question).
    "written": _WRITTEN.findall,
    # The question's words an answer may not start with (prompt.avoid_first), case kept for the
    # decoder's tokens: words led by a Latin letter (a number in the question may still start
    # the answer) as written, and the CJK words.
    "leading": lambda text: _LATIN_LED.findall(text) + [w for w in segment(text).split() if has_cjk(w)],
    # Runs of ASCII letters of the lower-cased text: whether Latin text reads as English, by its
    # share of English function words (looks_english).
    "english": lambda text: _LATIN.findall(text.lower()),
}
# The words of the keyword index (stemmed, marks kept, Thai as letter pairs) are the index's
# own and versioned with it: rag.language.segment (index_text, query_words).


def words(text: str, purpose: str = "match") -> list[str]:
    """`text`'s words for `purpose` (PURPOSES, where each says who reads it and why it differs):
    "match" (default), "content", "cite", "plain", "cjk", "written", "leading" or "english"."""
    try:
        split = PURPOSES[purpose]
    except KeyError:
        raise ValueError(f"unknown purpose {purpose!r}: one of {', '.join(PURPOSES)}") from None
    return split(text)


def content_words(text: str, min_len: int = 2) -> list[str]:
    """Words that carry meaning (`words(text, "content")`, with another shortest length)."""
    return [w for w in _match(text) if is_content(w, min_len)]


def word_count(text: str) -> int:
    """How long a text reads, in words: those between spaces, or, in a text with CJK, two
    characters to a word (every character counts there, spaces and punctuation too)."""
    return len(text) // 2 if has_cjk(text) else len(text.split())


def unspaced(text: str) -> bool:
    """Whether `text` has letters of a script written without spaces (CJK, Thai, ...)."""
    return _UNSPACED_CHAR.search(text) is not None


def characters(text: str) -> list[str]:
    """Scoring units for answers in scripts without spaces (as the CMRC scorer does): each
    CJK, Thai, Lao, Myanmar or Khmer character, each English word or number, no punctuation
    or spaces."""
    return re.findall(f"[{CJK}{UNSPACED}]|[A-Za-z0-9]+", text.lower())


def script_shares(text: str) -> dict[str, float]:
    """Each script's share of `text`'s letters (SCRIPTS; other letters count in the total)."""
    letters = "".join(filter(str.isalpha, text))
    if not letters:
        return {}
    return {name: pattern.subn("", letters)[1] / len(letters) for name, pattern in _SCRIPT_RE.items()}


def latin_share(text: str) -> float:
    """The share of `text`'s letters in the Latin script (Basic Latin through Latin Extended-B,
    the letters English and most European languages are written in); 1.0 without letters."""
    return script_shares(text).get("latin", 1.0)


def looks_english(text: str) -> bool:
    """Latin script (95% of letters or more) reading as English: English function words make
    a tenth of the words or more (English prose: about 40%; French or German: under 5%). Text
    with under 200 distinct words is too little to tell and counts as English, the default."""
    text = re.sub(r"[!-~]{40,}", " ", text)  # ASCII runs that are no words (hashes, base64, junk) do not vote
    if latin_share(text) < 0.95:
        return False
    tokens = words(text, "english")
    if len(set(tokens)) < 200:
        return True
    return sum(1 for t in tokens if t in STOPWORDS_EN) >= 0.10 * len(tokens)


@cache
def stemmer(language: str):
    """The Snowball stemmer of `language` (PyStemmer, compiled), made once per process."""
    import Stemmer

    return Stemmer.Stemmer(language)


def stems(text: str) -> set[str]:
    """`text`'s content words (the `plain` purpose, stopwords and one-letter words dropped),
    each with its English Snowball stem beside it: what asks whether two texts share a word at
    all ("opened" meets "open", "oxygen-16" meets "oxygen"). Words of other scripts are kept as
    they are (the stemmer leaves them alone; Chinese comes segmented)."""
    stem = stemmer("english").stemWord
    found = {w for w in words(text, "plain") if is_content(w)}
    return found | {stem(w) for w in found}


def main_script(text: str) -> str | None:
    """The script most of `text`'s letters are in (SCRIPTS), or None without letters."""
    shares = script_shares(text)
    return max(shares, key=shares.get) if shares and max(shares.values()) > 0 else None
