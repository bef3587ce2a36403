"""Words, stopwords and segmentation, per language: the one place that knows that Chinese
is written without spaces. Used by chunking (sentence ends), the keyword index (segmented
words), retrieval (query words) and answers (words an answer may not start with, clause
ends, character-level scoring). English text passes through every function unchanged.

Chinese words come from jieba (`rjieba`, Rust): FTS5's unicode61 tokenizer keeps a whole
run of Han characters as one token, so BM25 over raw Chinese found almost nothing (CMRC
hit@1 0.155); over jieba words joined by spaces 0.969 (issue 10's measurement)."""

from __future__ import annotations

import re
from bisect import bisect_right
from functools import cache

# CJK ideographs (with extension A and compatibility forms), kana and hangul: scripts
# written without spaces between words.
CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af"
_CJK_RUN = re.compile(f"[{CJK}]+")
_CJK_CHAR = re.compile(f"[{CJK}]")
# A word: a run of letters/digits (English, numbers), or one CJK word after segmentation.
WORD = re.compile(r"\w+(?:['’-]\w+)*")

# Sentence and clause ends (also used by the splitter, in this order of preference).
CJK_SENTENCE_ENDS = ["。", "！", "？", "；"]
CJK_CLAUSE_ENDS = ["，", "、", "："]

STOPWORDS_EN = set("""a an and are as at be but by for from has have he her his how i if in into is it its
of on or she so that the their them then there these they this to was we were what when where which
who whom why will with you your do does did not no can could would should may might also than too
very just about after before over under between out up down off more most some any each other such
only own same s t don now""".split())
STOPWORDS_ZH = set("""的 了 是 在 和 与 及 或 由 被 把 将 对 从 向 为 以 于 之 其 这 那 这个 那个 这些 那些
一个 一种 有 没有 也 都 就 而 并 但 吗 呢 吧 啊 什么 哪 哪个 哪些 哪里 哪家 哪一 哪一年 谁 几 多少 怎么
怎样 如何 为什么 为何 何时 何 是否 多 么 所 它 他 她 们 我 你 上 中 下 个 年 月 日""".split())
STOPWORDS = STOPWORDS_EN | STOPWORDS_ZH


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


def words(text: str) -> list[str]:
    """Lower-cased words in order: English as written, Chinese as jieba segments it."""
    return WORD.findall(segment(text).lower())


def content_words(text: str, min_len: int = 2) -> list[str]:
    """Words that carry meaning: no stopwords; English words of one letter dropped, but every
    CJK word kept (a single character such as 书 or 猫 is a whole word)."""
    return [w for w in words(text) if w not in STOPWORDS and (len(w) >= min_len or has_cjk(w))]


# Other scripts written without spaces between words: Thai, Lao, Myanmar, Khmer (their
# keyword-index words: rag.segment; answers are scored by characters, as CJK's are).
UNSPACED = "\u0e00-\u0e7f\u0e80-\u0eff\u1000-\u109f\u1780-\u17ff"
_UNSPACED_CHAR = re.compile(f"[{CJK}{UNSPACED}]")


def unspaced(text: str) -> bool:
    """Whether `text` has letters of a script written without spaces (CJK, Thai, ...)."""
    return _UNSPACED_CHAR.search(text) is not None


def characters(text: str) -> list[str]:
    """Scoring units for answers in scripts without spaces (as the CMRC scorer does): each
    CJK, Thai, Lao, Myanmar or Khmer character, each English word or number, no punctuation
    or spaces."""
    return re.findall(f"[{CJK}{UNSPACED}]|[A-Za-z0-9]+", text.lower())


# Letter ranges of the scripts whose documents name one language well enough for a
# translation prompt; Latin (shared by English, German, French...) names none by itself.
SCRIPTS = {"latin": ("\u0041", "\u024f"), "cyrillic": ("\u0400", "\u052f"), "arabic": ("\u0600", "\u06ff"),
           "devanagari": ("\u0900", "\u097f"), "thai": ("\u0e00", "\u0e7f"), "kana": ("\u3040", "\u30ff"),
           "han": ("\u3400", "\u9fff"), "hangul": ("\uac00", "\ud7af")}


_SCRIPT_RE = {name: re.compile(f"[{lo}-{hi}]") for name, (lo, hi) in SCRIPTS.items()}


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
    tokens = re.findall(r"[A-Za-z]+", text.lower())
    if len(set(tokens)) < 200:
        return True
    return sum(1 for t in tokens if t in STOPWORDS_EN) >= 0.10 * len(tokens)
