"""The words of the keyword index, for every script: what `rag_segment` stores in FTS5 and
what a question is cut into, through the same function so that the two always match.

An index records the version it was built with (meta `segmenter`); its texts are deleted
from FTS5 with the words they were inserted with, so an index keeps its version for life:
1 (indexes made before this module) is Chinese cut by jieba, everything else as written;
2 (new indexes) adds, measured on XQuAD's 300 questions per language (keyword recall@1,
README table, benchmarks/languages.py):

- Combining marks are part of a word. FTS5's unicode61 tokenizer took them for separators,
  so Hindi "हिन्दी" was the three letters ह न द and Thai fell apart likewise (Hindi 0.65 ->
  0.90). New indexes get `categories 'L* N* Co M*'` (store.SCHEMA) and questions keep marks.
- Scripts written without spaces other than Chinese (Thai, Lao, Khmer, Myanmar) become
  overlapping pairs of letters (a letter with its marks), as CJK search engines index
  characters: no dictionary, so every such script gets it (Thai 0.76 -> 0.92; PyThaiNLP's
  dictionary segmenter, Thai only, reached 0.95 alone and the same once fused with dense).
- Words of scripts with a Snowball stemmer for their main language are stemmed (Cyrillic:
  Russian 0.81 -> 0.91, Arabic 0.84 -> 0.91, Devanagari: Hindi, Greek, Armenian, Tamil);
  Latin script keeps FTS5's Porter stemmer (English unchanged; German is not told apart).
  The script decides, not a language detector: one rule for every text, word by word.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache

from rag.language.text import SCRIPT_TABLE, UNSPACED, is_content, stemmer, words
from rag.language.text import segment as cut_cjk

VERSION = 2  # what new indexes are built with
VERSIONS = (1, 2)

# Scripts without spaces between words other than CJK (which jieba cuts, in rag.language.text).
NO_SPACES = UNSPACED
_NO_SPACE_RUN = re.compile(f"[{NO_SPACES}]+")

# (first code point, last, Snowball stemmer of its main language) per stemmed script (text.SCRIPT_TABLE).
STEMMED_SCRIPTS = [(ord(lo), ord(hi), s.stemmer) for s in SCRIPT_TABLE if s.stemmer for lo, hi in s.ranges]


@cache
def _marks() -> str:
    """Every combining mark of the Basic Multilingual Plane, escaped for a character class."""
    return re.escape("".join(chr(c) for c in range(0x300, 0x10000)
                             if not 0xD800 <= c < 0xE000 and unicodedata.category(chr(c))[0] == "M"))


@cache
def _word() -> re.Pattern:
    """A word: letters and digits with their combining marks (Python's \\w drops the marks)."""
    return re.compile(f"(?:[^\\W_]|[{_marks()}])+")


@cache
def _cluster() -> re.Pattern:
    return re.compile(f"[{NO_SPACES}][{_marks()}]*")


def _stem(word: str) -> str:
    first = ord(word[0])
    for lo, hi, language in STEMMED_SCRIPTS:
        if lo <= first <= hi:
            return stemmer(language).stemWord(word)
    return word


def _pairs(run: re.Match) -> str:
    letters = _cluster().findall(run.group(0))
    if len(letters) < 2:
        return " " + "".join(letters) + " "
    return " " + " ".join(a + b for a, b in zip(letters, letters[1:])) + " "


def index_text(text: str, version: int = VERSION) -> str:
    """`text` as the keyword index of that version stores it (words separated by spaces)."""
    if version == 1 or not text:
        return cut_cjk(text) if text else text
    text = cut_cjk(text)
    if _NO_SPACE_RUN.search(text):
        text = _NO_SPACE_RUN.sub(_pairs, text)
    return " ".join(_stem(w) for w in _word().findall(text.lower()))


def query_words(text: str, version: int = VERSION) -> list[str]:
    """A question's distinct keyword-index words, stopwords and one-letter words dropped
    (text.is_content)."""
    if version == 1:  # as rag cut questions before: plain \w+ runs
        found = words(text, "plain")
    else:
        found = index_text(text, version).split()
    return list(dict.fromkeys(w for w in found if is_content(w)))
