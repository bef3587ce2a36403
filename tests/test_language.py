"""rag.language.text as the one home of words, scripts, stopwords and sentence ends: each
purpose's words, the script table, the table of marks and the lists built from it (these
pin what every index and answer was built with: a change here changes them)."""

import pytest

from rag.answer import compose, prompt, retrieve, translate
from rag.index import chunking
from rag.language import segment
from rag.language.text import CJK, PURPOSES, SCRIPTS, UNSPACED, content_words, script_shares, word_count, words

MIXED = "Don't e-mail Acme's State-of-the-art GPT是由哪家公司开发的？ 1822 a I’m"


@pytest.mark.parametrize("purpose, expected", [
    ("match", ["don't", "e-mail", "acme's", "state-of-the-art", "gpt", "是", "由", "哪家", "公司", "开发", "的",
               "1822", "a", "i’m"]),
    ("content", ["don't", "e-mail", "acme's", "state-of-the-art", "gpt", "公司", "开发", "1822", "i’m"]),
    ("cite", ["don't", "e-mail", "acme's", "state-of-the-art", "gpt", "是", "由", "哪家", "公司", "开发", "的",
              "1822", "i’m"]),
    ("plain", ["don", "t", "e", "mail", "acme", "s", "state", "of", "the", "art", "gpt", "是", "由", "哪家", "公司",
               "开发", "的", "1822", "a", "i", "m"]),
    ("cjk", ["是", "由", "哪家", "公司", "开发", "的"]),
    ("written", ["Don't", "e-mail", "Acme's", "State-of-the-art", "GPT是由哪家公司开发的", "1822", "a", "I", "m"]),
    ("leading", ["Don't", "e-mail", "Acme's", "State-of-the-art", "GPT是由哪家公司开发的", "a", "I", "m",
                 "是", "由", "哪家", "公司", "开发", "的"]),
    ("english", ["don", "t", "e", "mail", "acme", "s", "state", "of", "the", "art", "gpt", "a", "i", "m"]),
])
def test_each_purpose_has_its_words(purpose, expected):
    assert words(MIXED, purpose) == expected
    assert words("", purpose) == []


def test_words_defaults_and_aliases():
    assert set(PURPOSES) == {"match", "content", "cite", "plain", "cjk", "written", "leading", "english"}
    assert words(MIXED) == words(MIXED, "match")
    assert content_words(MIXED) == words(MIXED, "content")
    assert content_words("an ox is big", 3) == ["big"]
    with pytest.raises(ValueError, match="unknown purpose"):
        words("x", "nouns")
    # the version-1 keyword index read a question's plain words
    assert segment.query_words("Who's the e-mail's author?", 1) == ["mail", "author"]


def test_word_count_counts_two_cjk_characters_as_one():
    assert word_count("熊猫吃竹子") == 2
    assert word_count("a b  c") == 3
    assert word_count("") == 0
    assert compose.length is word_count


def test_one_script_table():
    assert CJK == "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
    assert UNSPACED == "\u0e00-\u0e7f\u0e80-\u0eff\u1000-\u109f\u1780-\u17ff"
    assert list(SCRIPTS) == ["latin", "cyrillic", "arabic", "devanagari", "thai", "kana", "han", "hangul"]
    assert segment.STEMMED_SCRIPTS == [(0x0370, 0x03FF, "greek"), (0x0400, 0x052F, "russian"),
                                       (0x0530, 0x058F, "armenian"), (0x0600, 0x06FF, "arabic"),
                                       (0x0900, 0x097F, "hindi"), (0x0B80, 0x0BFF, "tamil")]
    shares = script_shares("Привет 世界 abc")
    assert shares["cyrillic"] == pytest.approx(6 / 11) and shares["han"] == pytest.approx(2 / 11)


def test_lists_of_marks_built_from_the_one_table():
    # the splitter tries its separators in this order: it is how every index was cut
    assert chunking.SEPARATORS == ["\n\n", "\n", "。", "！", "？", ". ", "? ", "! ", "；", "; ", "，", ", ", "、", " ", ""]
    # the decoder's stop strings (llama.cpp cuts at the first one listed that it finds)
    assert prompt.CLAUSE_ENDS == [". ", ", ", "; ", " (", "。", "，", "；", "！", "？", "（"]
    assert compose.sentences("It is by I. M. Pei. It opened in 1989! Why? 熊猫吃竹子。它们很可爱！") == [
        "It is by I. M. Pei.", "It opened in 1989!", "Why? 熊猫吃竹子。", "它们很可爱！"]
    assert [compose.unfinished(s) for s in ("Done.", "Lists:", "完了。", "(aside)", "cut off")] == [
        False, False, False, False, True]


def test_asks_number_and_shared_numbers():
    assert compose.asks_number("What year was it built?") and compose.asks_number("长江全长多少公里？")
    assert not compose.asks_number("What decade was it?")  # a bare "2" is a list number there ...
    assert compose.asks_number("What decade was it?", periods=True)  # ... the confidence model counts it
    assert not compose.asks_number("Who built it?", periods=True)
    assert retrieve.COVERED == translate.FOREIGN
