"""Hybrid search's fusion (rag/answer/retrieve.py, issue 37): one question's candidates
(`Pool`, what benchmarks/hybrid.py saves and replays rules on) and their fusion (`hybrid_rank`);
pure functions on hand-made pools, and the fake encoder's index for the path `rag search`
takes. Milliseconds."""

from __future__ import annotations

from rag import RAG
from rag.answer.retrieve import Pool, hybrid_rank, place

FAKES = {"encoder": "fake", "generator": "fake", "translator": "off"}


def _pool(keyword_ids: list[int], coverage: float = 1.0, checked: bool = False) -> Pool:
    """Dense candidates 1..30 (cosines 0.80 down by 0.01), a BM25 list over `keyword_ids`
    (scores 10 down by 1); ids above 30 have cosine 0.30."""
    dense = [(i, round(0.81 - 0.01 * i, 2)) for i in range(1, 31)]
    keyword = [(i, 10.0 - r) for r, i in enumerate(keyword_ids)]
    cosines = dict(dense) | {i: 0.30 for i in keyword_ids if i > 30}
    return Pool(30, dense, [(keyword, coverage)], cosines, checked)


def test_fused_score_is_the_rescaled_cosine_and_bm25_over_its_best():
    pool = _pool([101, 102, 103, 104, 105, 25])
    fused = dict(hybrid_rank(pool, 40, 0.4))
    assert abs(fused[1] - 0.4) < 1e-9  # dense's best, no BM25
    assert abs(fused[101] - 0.6) < 1e-9  # BM25's best, the lowest cosine
    assert abs(fused[25] - (0.4 * (0.56 - 0.30) / 0.50 + 0.6 * 5 / 10)) < 1e-9
    # the fixed weight trusts BM25's best over dense's even where the two lists share nothing:
    # the case issue 37 is about (docs/benchmarks.md, "Hybrid search against each method alone")
    assert hybrid_rank(pool, 1, 0.4)[0][0] == 101


def test_candidates_are_both_top_n_and_nothing_deeper():
    pool = _pool(list(range(101, 140)))  # 39 keyword-only passages, n = 30
    ids = {i for i, _ in hybrid_rank(pool, 100, 0.4)}
    assert ids == set(range(1, 31)) | set(range(101, 131))


def test_uncovered_and_unchecked_translations_stay_off():
    # a question whose words the index lacks: no keyword part at all
    pool = _pool([101, 102, 103], coverage=0.1)
    assert [i for i, _ in hybrid_rank(pool, 3, 0.4)] == [1, 2, 3]
    # a translation none of whose best passages the asked question's dense list holds
    pool = _pool([101, 102, 103, 104, 105], checked=True)
    assert [i for i, _ in hybrid_rank(pool, 3, 0.4)] == [1, 2, 3]


def test_place_meets_every_floor_as_late_as_it_can():
    order = list(range(1, 21))
    assert place(order, [], 5) == [1, 2, 3, 4, 5]
    assert place(order, [(5, [12])], 5) == [1, 2, 3, 4, 12]  # the floor's one id at the last place it may take
    assert place(order, [(5, [12, 15])], 6) == [1, 2, 3, 12, 15, 4]
    assert place(order, [(10, [18, 19, 20])], 10) == [1, 2, 3, 4, 5, 6, 7, 18, 19, 20]
    assert place(order, [(5, [3])], 5) == [1, 2, 3, 4, 5]  # already within: nothing moves
    assert place(order, [(5, [99])], 3) == [1, 2, 3]  # an id not in the order is no floor
    assert place([1, 2], [(5, [2])], 10) == [1, 2]


def test_the_weighted_sum_never_drops_either_list_s_very_top():
    """Where the two lists share nothing and the weight trusts BM25 (issue 37's case, a corpus
    asked without its FAQ), the fused order is BM25's; the layers keep dense's best within the
    top 5 and its top 3 within the top 10, and never touch the first three."""
    flat = [(i, 10.0 - 0.1 * r) for r, i in enumerate(range(101, 131))]  # BM25 sure of all 30
    pool = _pool([])
    pool = Pool(30, pool.dense, [(flat, 1.0)], pool.cosines | {i: 0.30 for i, _ in flat})
    plain = [i for i, _ in hybrid_rank(pool, 10, 0.4, layers=False)]
    assert plain == list(range(101, 111))  # dense's best nowhere in the top 10
    layered = hybrid_rank(pool, 10, 0.4)
    ids = [i for i, _ in layered]
    assert ids[:3] == plain[:3] and 1 in ids[:5] and {1, 2, 3} <= set(ids)
    assert dict(layered)[1] == dict(hybrid_rank(pool, 40, 0.4, layers=False))[1]  # its own fused score
    assert hybrid_rank(pool, 5, 0.4) == layered[:5]  # k=5 is k=10's first five


def test_after_the_top_five_what_one_list_ranks_high_comes_first():
    """Dense candidate 25 is in neither list's top (dense rank 25, keyword rank 21), but both
    score it, so its fused score is sixth (weight 0.6, e5's); the layers put the passages one
    list ranks high before it, and keyword's best, a keyword-only passage, within the top 5."""
    keyword = [(i, 10.0 - 0.2 * r) for r, i in enumerate(range(101, 121))] + [(25, 5.85)]
    pool = _pool([])
    pool = Pool(30, pool.dense, [(keyword, 1.0)], pool.cosines | {i: 0.30 for i in range(101, 121)})
    plain = [i for i, _ in hybrid_rank(pool, 40, 0.6, layers=False)]
    layered = [i for i, _ in hybrid_rank(pool, 40, 0.6)]
    assert plain.index(25) == 5 and 101 not in plain[:10]
    assert layered[:3] == plain[:3] and 101 in layered[:5] and 25 not in layered[:10]


def test_search_is_the_fusion_of_its_pool(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    texts = {"bees.txt": "Honey bees communicate the direction of flowers with a waggle dance.",
             "etna.txt": "Mount Etna on Sicily is the most active volcano in Europe.",
             "lens.txt": "The Fresnel lens was invented by Augustin-Jean Fresnel in 1822.",
             "hive.txt": "A hive of honey bees keeps one queen and many workers."}
    for name, text in texts.items():
        (docs / name).write_text(text)
    rag = RAG(tmp_path / "index", **FAKES)
    rag.ingest([docs])
    retriever = rag.retriever
    for question in ("how do bees dance", "which volcano is active", "who invented the lens"):
        hits = retriever.search(question, 3, "hybrid")
        vector = rag.encoder.encode_query(question)
        with rag.store.snapshot() as snap:
            pool = retriever.pool(snap, question, vector, 3)
        expected = hybrid_rank(pool, 3, retriever.fusion_weight)
        assert [(h.chunk_id, h.score) for h in hits] == [(i, round(s, 4)) for i, s in expected]
        assert all(h.dense == pool.cosines[h.chunk_id] for h in hits)
