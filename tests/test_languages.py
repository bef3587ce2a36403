"""Keyword search in every script (rag.segment), old indexes kept working, fusion that falls
back on the signal it can trust, and the per-language evaluation helpers."""

import sqlite3

import numpy as np
import pytest

from rag.answer.retrieve import fuse, keyword_trust
from rag.core.errors import BadDataset, BadIndex
from rag.evaluate import f1_score, format_languages, language_pairs, run_languages
from rag.index.chunking import Chunk
from rag.index.store import Store, fts_query, new_manifest
from rag.language import segment

DOCS = {
    "hi": "हिन्दी भारत की राजभाषा है और देवनागरी लिपि में लिखी जाती है।",
    "th": "ทีมรับของแพนเธอร์สถอดใจที่คะแนน 308 ได้อันดับที่หกของลีก",
    "ru": "Денверские «Бронкос» выиграли Супербоул пятидесятого сезона в 2016 году.",
    "en": "The Fresnel lens was invented by Augustin-Jean Fresnel in 1822.",
    "zh": "熊猫主要吃竹子，也吃少量的肉。",
}


def test_marks_stay_inside_words():
    # unicode61 cut Hindi at every vowel sign: हिन्दी was the three letters ह न द
    assert _fts_tokens("हिन्दी", old=True) == ["ह", "न", "द"]
    assert _fts_tokens("हिन्दी", old=False) == ["हिन्दी"]
    assert segment.index_text("हिन्दी भाषा").split() == ["हिन्द", "भाष"]  # and stemmed
    assert all(len(w) > 1 for w in segment.query_words("हिन्दी भाषा क्या है"))


def test_thai_becomes_overlapping_letter_pairs():
    words = segment.index_text("ทีมรับ").split()
    assert words == ["ทีม", "มรั", "รับ"]  # a letter keeps its vowel and tone marks
    assert set(segment.query_words("ทีมรับของใคร")) & set(segment.index_text(DOCS["th"]).split())


def test_inflected_words_meet_their_stem():
    # the question's "выиграл" and the passage's "выиграли" are one word to the index
    asked = set(segment.query_words("Выиграл ли Супербоул?"))
    assert asked - {"ли"} <= set(segment.index_text(DOCS["ru"]).split())


def test_english_and_chinese_as_before():
    # the words FTS5 stores for English and Chinese are the ones it stored before
    for text in (DOCS["en"], DOCS["zh"], "State-of-the-art: don't e-mail 3.5 naïve_user"):
        assert _fts_tokens(segment.index_text(text, 1), old=True) == _fts_tokens(segment.index_text(text, 2), old=False)
    assert segment.index_text(DOCS["zh"]).split()[:2] == ["熊猫", "主要"]
    assert fts_query("Who invented the Fresnel lens?", 1) == fts_query("Who invented the Fresnel lens?", 2)


def _fts_tokens(text: str, old: bool) -> list[str]:
    """The tokens FTS5 stores for `text`, with rag's old or new tokenizer."""
    tok = "porter unicode61 remove_diacritics 2" + ("" if old else " categories ''L* N* Co M*''")
    conn = sqlite3.connect(":memory:")
    conn.execute(f"CREATE VIRTUAL TABLE t USING fts5(x, tokenize='{tok}')")
    conn.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")
    conn.execute("INSERT INTO t VALUES (?)", (text,))
    return [r[0] for r in conn.execute("SELECT term FROM v ORDER BY offset")]


def _store(root, docs: dict[str, str], old: bool = False) -> Store:
    store = Store.create(root, new_manifest("test", 4, 128, 16))
    if old:  # an index made before segmenter versions: the old tokenizer, no version recorded
        conn = sqlite3.connect(root / "chunks.sqlite")
        conn.executescript("DROP TABLE chunks_fts; DELETE FROM meta WHERE key='segmenter';")
        conn.execute("CREATE VIRTUAL TABLE chunks_fts USING fts5(text, heading, content='chunks', "
                     "content_rowid='id', tokenize='porter unicode61 remove_diacritics 2')")
        conn.commit()
        conn.close()
        store = Store(root)
    rng = np.random.default_rng(0)
    with store.writer() as w:
        for n, (name, text) in enumerate(docs.items()):
            sha = f"{n:064d}"
            w.add_content(sha, [Chunk(text, 0, None, "", 0, len(text))], rng.normal(size=(1, 4)).astype(np.float32), 10)
            w.put_document(f"/docs/{name}.txt", sha, 0.0, len(text), "ok")
        w.commit()
    return Store(root)


def _found(store: Store, question: str) -> list[str]:
    with store.snapshot() as snap:
        ids = [i for i, _ in snap.keyword(question, 5)]
        return [snap.chunks([i])[i].source.rsplit("/", 1)[-1] for i in ids]


def _remove_all(store: Store, docs) -> set[str]:
    """Delete every document; the words left in the keyword index (none, unless a text was
    deleted with other words than it was inserted with)."""
    with store.writer() as w:
        for name in docs:
            w.drop_if_unused(w.delete_document(f"/docs/{name}.txt"))
        w.commit()
    conn = sqlite3.connect(store.root / "chunks.sqlite")
    conn.execute("CREATE VIRTUAL TABLE temp.words USING fts5vocab(main, chunks_fts, 'row')")
    return {r[0] for r in conn.execute("SELECT term FROM temp.words WHERE doc > 0")}


def test_new_index_finds_every_script(tmp_path):
    store = _store(tmp_path / "new", DOCS)
    assert store.segmenter == segment.VERSION == 2
    assert _found(store, "हिन्दी किस लिपि में लिखी जाती है?")[0] == "hi.txt"
    assert _found(store, "ทีมรับของแพนเธอร์สยอมแพ้ที่คะแนนเท่าไร")[0] == "th.txt"
    assert _found(store, "Кто выиграл Супербоул?")[0] == "ru.txt"
    assert _found(store, "Who invented the Fresnel lens?")[0] == "en.txt"
    assert _found(store, "熊猫吃什么？")[0] == "zh.txt"
    assert _remove_all(store, DOCS) == set()


def test_old_index_keeps_its_words(tmp_path):
    """An index from before segmenter versions opens, is searched with the words it was built
    with, and its keyword index stays consistent when a document goes (FTS5 deletes with the
    words it inserted: cutting them differently would corrupt it)."""
    store = _store(tmp_path / "old", DOCS, old=True)
    assert store.segmenter == 1
    assert _found(store, "Who invented the Fresnel lens?")[0] == "en.txt"
    assert _found(store, "熊猫吃什么？")[0] == "zh.txt"
    assert _remove_all(store, DOCS) == set()


def test_index_from_a_newer_rag_is_refused(tmp_path):
    store = _store(tmp_path / "idx", {"en": DOCS["en"]})
    with sqlite3.connect(store.root / "chunks.sqlite") as conn:
        conn.execute("UPDATE meta SET value='99' WHERE key='segmenter'")
    with pytest.raises(BadIndex, match="newer rag"):
        Store(store.root)


def test_keyword_counts_as_far_as_the_question_is_covered():
    """A question whose words the index mostly lacks (another language) keeps the dense
    order: the one keyword match (a number) does not outrank the passage dense search found."""
    dense = {1: 0.9, 2: 0.5, 3: 0.4}
    keyword = {3: 7.0, 2: 1.0}
    assert keyword_trust(0.1) == 0.0 and keyword_trust(0.9) == 1.0 and 0 < keyword_trust(0.4) < 1
    mono = fuse(dense, keyword, dense, 0.4, keyword_trust(1.0))
    cross = fuse(dense, keyword, dense, 0.4, keyword_trust(0.1))
    assert max(mono, key=mono.get) == 3 and max(cross, key=cross.get) == 1


def test_coverage_tells_the_language_apart(tmp_path):
    store = _store(tmp_path / "zh", {"zh": DOCS["zh"], "th": DOCS["th"]})
    with store.snapshot() as snap:
        assert snap.coverage("熊猫吃竹子吗？") == 1.0
        assert snap.coverage("What do pandas eat?") == 0.0
        assert snap.coverage("") == 0.0


def test_language_pairs():
    assert language_pairs("ar, de,en:zh") == [("ar", "ar"), ("de", "de"), ("en", "zh")]
    with pytest.raises(BadDataset, match="neither a code"):
        language_pairs("en:zh:de")
    with pytest.raises(BadDataset, match="empty"):
        language_pairs(" , ")


def test_thai_answers_are_scored_by_characters():
    # a Thai answer has no spaces: by words, a one-letter difference scored 0
    assert 0.8 < f1_score("คะแนน 308", ["308 คะแนน"]) <= 1.0
    assert 0.5 < f1_score("อันดับที่หก", ["ที่หก"]) < 1.0


def test_language_table_puts_the_default_first():
    metrics = lambda r1: {"questions": 300, "recall@1": r1, "recall@5": 0.99, "recall@10": 1.0}  # noqa: E731
    rows = [{"questions": q, "documents": d, "encoder": "multilingual-e5-small",
             "retrieval": {"dense": metrics(0.9), "keyword": metrics(0.8), "hybrid": metrics(0.95)}}
            for q, d in (("th", "th"), ("en", "zh"))]
    table = format_languages({"pattern": "xquad.{lang}.json", "limit": 300, "seed": 0, "languages": rows})
    lines = table.splitlines()
    assert "| language | encoder | hybrid | dense | keyword |" in lines
    assert "| th | multilingual-e5-small | 0.950 / 0.990 / 1.000 | 0.900 / 0.990 / 1.000 | 0.800 / 0.990 / 1.000 |" in lines
    assert any(line.startswith("| en questions, zh paragraphs |") for line in lines)


def test_language_list_needs_a_placeholder(tmp_path):
    with pytest.raises(BadDataset, match="lang"):
        run_languages(str(tmp_path / "xquad.json"), "en")


def test_fusion_weight_follows_the_index_encoder():
    from rag.core.settings import Settings
    from rag.models.catalog import encoder_profile

    weight = lambda name: encoder_profile(name).fusion_weight  # noqa: E731
    assert Settings().fusion_weight is None  # decided per index, by its encoder
    assert weight("multilingual-e5-small") > weight("all-MiniLM-L6-v2") == weight("unknown")
    assert weight("intfloat/multilingual-e5-small") == weight("multilingual-e5-small")  # a hub name is the same model
    assert Settings(fusion_weight=0.7).fusion_weight == 0.7


def test_a_mixed_folder_gets_the_multilingual_encoder(tmp_path):
    # en/ sorts before zh/: a sample of the first files alone read as English (benchmarks/mixed.py)
    from rag.index.ingest import sample_text
    from rag.models.catalog import MULTILINGUAL, choose_encoder

    english = ("The river flows through the valley and the town was built on its northern bank "
               "by settlers who came from the coast in search of land. ") * 4
    chinese = "长江是中国最长的河流，全长约六千三百公里，流经十一个省级行政区，最后注入东海。" * 4
    for lang, text in (("en", english), ("zh", chinese)):
        (tmp_path / lang).mkdir()
        for i in range(40):
            (tmp_path / lang / f"doc{i:03d}.txt").write_text(f"{i} {text}")
    assert choose_encoder(sample_text([tmp_path / "en"])) != MULTILINGUAL
    assert choose_encoder(sample_text([tmp_path])) == MULTILINGUAL


def test_chinese_files_added_to_an_english_index_are_named(tmp_path):
    # the index keeps MiniLM: the report says which files its dense search cannot read
    from rag import RAG

    english = ("The river flows through the valley and the town was built on its northern bank "
               "by settlers who came from the coast in search of land.")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "river.txt").write_text(english)
    index = RAG(tmp_path / "ix")
    assert index.ingest([tmp_path / "d"]).notes == []
    (tmp_path / "d" / "changjiang.txt").write_text("长江是中国最长的河流，全长约六千三百公里，最后注入东海。")
    report = RAG(tmp_path / "ix").ingest([tmp_path / "d"])
    assert report.added == 1 and len(report.notes) == 1
    assert "changjiang.txt" in report.notes[0] and "multilingual-e5-small" in report.notes[0]
