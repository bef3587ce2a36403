"""Questions in another script over an index of English documents: translated into English
by the bundled Qwen before they are searched and read (rag/translate.py)."""

from pathlib import Path

import pytest

from rag import RAG
from rag.answer.retrieve import agreement
from rag.answer.translate import Translator, accept, index_language, needs_translation
from rag.language.text import latin_share
from rag.models import catalog as models

translator_installed = pytest.mark.skipif(models.choose_translator() == "off",
                                          reason="no translating decoder installed (make setup installs it)")


def test_which_questions_are_translated():
    for question in ("海王星有几颗卫星？", "Сколько спутников у Нептуна?", "كم عدد أقمار نبتون؟",
                     "नेपच्यून के कितने चंद्रमा हैं?", "ดาวเนปจูนมีดวงจันทร์กี่ดวง", "ネプチューンの衛星は何個？"):
        assert needs_translation(question), question
    # the Latin script is searched as asked where the index knows the question's words ...
    for question in ("How many moons does Neptune have?", "Wie viele Monde hat Neptun?", "2018", ""):
        assert not needs_translation(question), question
    assert needs_translation("GPT是由哪家公司开发的？")  # mostly Han letters, a Latin name inside
    # an English-only index reads none of a question's Han letters, however many Latin ones it has
    assert needs_translation("复杂性类 RP、BPP、PP、BQP、MA 和 PH 在哪里可以找到？")
    assert not needs_translation("What does the name 长城 mean?")  # an English question naming a word
    # ... and translated where it lacks most of them (German over English documents)
    assert needs_translation("Wie viele Monde hat Neptun?", coverage=lambda: 0.25)
    assert not needs_translation("How many moons does Neptune have?", coverage=lambda: 0.75)
    # into an index's own language: English over Chinese documents; Chinese not
    assert needs_translation("How many moons does Neptune have?", "Chinese")
    assert not needs_translation("海王星有几颗卫星？", "Chinese", coverage=lambda: 0.1)  # rare words: still Chinese


def test_the_language_questions_are_translated_into():
    assert index_language("", english_only=True) == "English"
    assert index_language("海王星是太阳系的第八颗行星，已知有十六颗卫星。", False) == "Chinese"
    assert index_language("海王星は太陽系の第八惑星で、十六個の衛星があります。", False) == "Japanese"
    assert index_language("Нептун — восьмая планета Солнечной системы.", False) == "Russian"
    # Latin-script or mixed documents name no language: the multilingual encoder matches them
    assert index_language("Neptun ist der achte Planet des Sonnensystems.", False) is None
    assert index_language("Neptune is the eighth planet. 海王星是第八颗行星。", False) is None


def test_a_translation_counts_as_far_as_dense_search_agrees():
    # two of the translation's five best passages are among the dense candidates of the question
    assert agreement({1: 9.0, 2: 8.0, 3: 1.0, 4: 0.5, 5: 0.1, 6: 0.0}, {1: 0.9, 3: 0.8, 6: 0.7}) == 0.4
    assert agreement({}, {1: 0.9}) == 0.0


def test_a_reply_is_used_only_when_it_is_a_translation():
    question = "海王星有几颗卫星？"
    assert accept("How many moons does Neptune have?", question) == "How many moons does Neptune have?"
    assert accept('Translation: "How many moons does Neptune have?"\nNeptune has 14.', question) == \
        "How many moons does Neptune have?"  # a label, quotes and a second line dropped
    assert accept("", question) is None
    assert accept("海王星有几颗卫星？", question) is None  # echoed, not translated
    assert accept("How many moons?", "how many moons?") is None  # English already
    assert accept("海王星有几颗卫星？", "How many moons does Neptune have?", "Chinese") == "海王星有几颗卫星？"
    assert accept("How many moons?", "How many moons?", "Chinese") is None  # not Chinese
    broncos = "Who did the Broncos beat to become the AFC champions?"
    assert accept("Broncos击败了谁成为AFC冠军？", broncos, "Chinese") == "Broncos击败了谁成为AFC冠军？"  # names kept
    assert accept("The Broncos beat the Patriots (爱国者).", broncos, "Chinese") is None  # an English reply
    assert accept("Neptune " * 100, question) is None  # far longer than the question
    assert accept("\x1b]0;pwned\x07 How many moons?", question) is None  # a terminal escape


def test_a_failing_translator_searches_the_question_as_asked():
    calls = []

    def broken():
        calls.append(1)
        raise RuntimeError("the model file is gone")

    translate = Translator(broken)
    assert translate("海王星有几颗卫星？") is None and len(calls) == 1
    assert translate("海王星有几颗卫星？") is None and len(calls) == 1  # the failure is remembered


def test_who_translates(tmp_path):
    assert RAG(tmp_path / "a", encoder=models.MULTILINGUAL).translator is None  # it reads Chinese itself
    assert RAG(tmp_path / "b", translator="off").translator is None
    assert RAG(tmp_path / "c", translator="qwen2.5-0.5b").translator is not None


@pytest.fixture(scope="module")
def english(tmp_path_factory):
    root = tmp_path_factory.mktemp("translate")
    docs = root / "docs"
    docs.mkdir()
    (docs / "neptune.txt").write_text(
        "Neptune is the eighth planet from the Sun. It has 16 known moons; the largest, Triton, was "
        "discovered by William Lassell in 1846, seventeen days after the planet itself.")
    (docs / "bread.txt").write_text(
        "Sourdough bread rises with a starter of flour and water that holds wild yeast. Bakers feed "
        "the starter every day and keep part of it for the next loaf.")
    (docs / "bees.txt").write_text(
        "Honey bees tell each other where flowers are with a waggle dance: the angle of the dance "
        "gives the direction of the flowers relative to the Sun.")
    rag = RAG(root / "index")
    rag.ingest([docs])
    return rag


@pytest.mark.slow
@translator_installed
def test_questions_in_other_scripts_find_english_passages(english):
    assert english.info().encoder == models.ENGLISH
    for question, source in (("谁发现了特里同？", "neptune.txt"), ("Кто открыл Тритон?", "neptune.txt"),
                             ("蜜蜂如何告诉彼此花在哪里？", "bees.txt"),
                             ("Wie zeigen Bienen einander, wo die Blumen sind?", "bees.txt")):
        assert english.search(question, k=1)[0].source.endswith(source), question
    answer = english.ask("谁发现了特里同？")
    assert answer.found and "Lassell" in answer.text, answer.text
    assert answer.searched.isascii() and answer.searched.endswith("?")  # the English question it searched
    assert answer.timings.translate_ms is not None and answer.to_dict()["searched_as"] == answer.searched
    english_question = english.ask("Who discovered Triton?")  # English is searched as asked
    assert english_question.searched == "" and english_question.timings.translate_ms is None
    german = english.ask("Wer hat Triton entdeckt?")  # the index lacks its words: translated
    assert german.searched.isascii() and "Triton" in german.searched and "Lassell" in german.text, german.text


@pytest.mark.slow
@translator_installed
def test_questions_over_chinese_documents_are_searched_in_chinese(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "llm.md").write_text((Path(__file__).parent / "data" / "llm_zh.md").read_text())
    rag = RAG(tmp_path / "index")
    rag.ingest([docs])
    assert rag.info().encoder == models.MULTILINGUAL and rag.translator.language == "Chinese"
    searched = rag.translated_query("Which model compression techniques are commonly used?")
    assert searched and latin_share(searched) < 0.5, searched  # Chinese words keyword search can match
    hits = rag.search("Which model compression techniques are commonly used?", k=1, mode="keyword")
    assert hits and hits[0].heading.endswith("模型压缩")  # the English words alone match nothing here
    assert rag.translated_query("模型压缩有哪些技术？") is None  # in the index's language already
    # e5 reads the English question itself: dense search is the question's, not the translation's
    asked = rag.retriever.search("Which model compression techniques are commonly used?", k=3, mode="dense")
    assert [h.score for h in rag.search("Which model compression techniques are commonly used?", k=3,
                                        mode="dense")] == [h.score for h in asked]
    rag.remove(docs)  # the documents' language leaves with them: no language, no translation
    assert rag.translator is None and rag.translated_query("Which techniques are used?") is None
