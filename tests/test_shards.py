"""A sharded index (rag/index/shards.py) against the same documents unsharded: the same hits
dense, keyword and hybrid; BM25 with corpus-wide statistics equal to FTS5's own bm25();
documents routed by a stable hash; remove, prune and update reach every shard."""

from __future__ import annotations

import json
import random

import pytest

from rag.core.errors import RagError
from rag.index.shards import (
    Shards,
    bm25,
    frequencies,
    route,
    shard_stats,
    tokenized_frequencies,
)
from rag.index.store import Store, is_index_dir
from rag.language import segment
from rag.qa import RAG

WORDS = ["lens", "lighthouse", "fresnel", "glass", "prism", "beam", "coast", "harbor", "storm", "keeper", "lamp", "oil", "wick", "tower", "signal", "ship", "reef", "fog", "horn", "night", "wave", "rock", "granite", "spiral", "stair", "brass", "mirror", "optics", "focus", "ray", "light", "distance", "mile", "nautical", "chart", "survey", "engineer", "council", "island", "cliff", "sand", "tide", "moon", "season", "winter", "summer", "trade", "route", "cargo", "sailor", "captain", "log", "compass", "north", "south"]


def _corpus(root, files: int = 30, seed: int = 7) -> None:
    rng = random.Random(seed)
    for i in range(files):
        sections = []
        for s in range(rng.randint(1, 3)):
            heading = " ".join(rng.sample(WORDS, 2))
            body = ". ".join(" ".join(rng.choices(WORDS, k=rng.randint(6, 14))).capitalize()
                             for _ in range(rng.randint(3, 8)))
            sections.append(f"# {heading} {i} {s}\n\n{body}.\n")
        path = root / f"group{i % 3}" / f"doc{i:02d}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(sections))


def _rag(path, **kw) -> RAG:
    return RAG(path, encoder="fake", generator="fake", translator="off", chunk_size=40, chunk_overlap=4, **kw)


QUERIES = ["fresnel lens lighthouse", "storm at night on the reef", "brass mirror optics focus",
           "captain log compass north", "granite spiral stair tower", "winter trade route cargo",
           "keeper lamp oil wick", "fog horn signal ship", "island cliff sand tide moon", "survey chart mile"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    base = tmp_path_factory.mktemp("shards")
    docs = base / "docs"
    _corpus(docs)
    plain, sharded = _rag(base / "plain"), _rag(base / "sharded")
    plain.ingest([docs])
    report = sharded.ingest([docs], shards=3)
    assert report.added == 30 and not report.failed
    return plain, sharded, docs


def _key(hits):
    return [(h.source, h.start, h.text) for h in hits]


def _same(a, b, tol: float = 1e-4) -> None:
    """The same hits in the same order up to ties: equal scores rank for rank, and the same
    passages above the last score (passages tied there may differ, as they may in any index)."""
    assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=tol)
    if a:
        last = a[-1].score
        assert {k for h, k in zip(a, _key(a)) if h.score > last + tol} == \
            {k for h, k in zip(b, _key(b)) if h.score > last + tol}


def test_sharded_index_is_a_manifest_naming_plain_indexes(pair):
    _, sharded, _ = pair
    manifest = json.loads((sharded.root / "manifest.json").read_text())
    assert manifest["shards"] == ["shard-0", "shard-1", "shard-2"] and manifest["encoder"] == "fake"
    assert is_index_dir(sharded.root)
    counts = []
    for i, name in enumerate(manifest["shards"]):
        store = Store(sharded.root / name)  # each shard opens on its own, as today's index
        docs = store.documents()
        assert docs and all(route(d.path, 3) == i for d in docs)
        counts.append(len(docs))
        store.close()
    assert sum(counts) == 30
    info = sharded.info()
    assert info.documents == 30 and info.chunks == pair[0].info().chunks and "3 shards" in info.index_type


@pytest.mark.parametrize("mode", ["dense", "keyword", "hybrid"])
def test_sharded_search_finds_what_the_unsharded_index_finds(pair, mode):
    plain, sharded, _ = pair
    for query in QUERIES:
        a, b = plain.search(query, k=8, mode=mode), sharded.search(query, k=8, mode=mode)
        _same(a, b)


def test_bm25_with_shard_statistics_equals_fts5_bm25(pair):
    """The recomputation (FTS5's formula, statistics read from the shadow tables) gives FTS5's
    own bm25() on one index, with the phrase counts read back from FTS5 as search does and with
    them counted independently (the texts cut again, read by an FTS5 table in memory)."""
    plain, _, _ = pair
    store = plain.store
    checked = 0
    with store.snapshot() as snap:
        for query in QUERIES + ["lens", "the lens of the lighthouse lens", "storm-keeper's lamp"]:
            fts5 = dict(snap.keyword(query, 10_000))
            phrases = segment.query_words(query, store.segmenter)
            stats = shard_stats(snap, phrases)
            read_back = frequencies(snap, phrases, list(fts5), stats)
            counted = tokenized_frequencies(snap, phrases, list(fts5), store.segmenter)
            assert read_back == counted
            for found in (bm25(stats, read_back), bm25(stats, counted)):
                assert set(found) == set(fts5)
                for i, score in fts5.items():
                    assert found[i] == pytest.approx(score, abs=1e-6, rel=0)
                    checked += 1
    assert checked > 200


def test_phrase_counts_read_back_either_way(pair, monkeypatch):
    """Per candidate (rowid IN) or from every match: the same counts."""
    from rag.index import shards

    store = pair[0].store
    with store.snapshot() as snap:
        phrases = segment.query_words("lighthouse lens storm", store.segmenter)
        ids = [i for i, _ in snap.keyword("lighthouse lens storm", 12)]
        stats = shard_stats(snap, phrases)
        every = frequencies(snap, phrases, ids, stats)
        monkeypatch.setattr(shards, "LOOKUPS_FROM", 0)
        assert frequencies(snap, phrases, ids, stats) == every


def test_chunk_ids_are_unique_and_lead_to_their_passages(pair):
    _, sharded, _ = pair
    hits = sharded.search("lighthouse keeper lamp", k=20, mode="hybrid")
    assert len({h.chunk_id for h in hits}) == len(hits)
    with sharded.store.snapshot() as snap:
        rows = snap.chunks([h.chunk_id for h in hits])
        assert all(rows[h.chunk_id].text == h.text for h in hits)
        for h in hits:
            after = snap.next_chunk(h.chunk_id)
            if after is not None:
                assert after.source == h.source and after.start > h.start
                assert snap.chunks([after.chunk_id])[after.chunk_id].text == after.text
        assert 0.9 < snap.coverage("fresnel lens") <= 1.0 and snap.coverage("zzzz qqqq") == 0.0
        assert len(snap.sample_texts(6)) == 6


def test_routing_is_stable():
    assert route("/data/a.txt", 4) == route("/data/a.txt", 4)
    # a fixed answer: the same in every process and on every machine (not Python's hash())
    assert [route(f"/corpus/doc{i}.md", 3) for i in range(8)] == [route(f"/corpus/doc{i}.md", 3) for i in range(8)]
    spread = {route(f"/corpus/doc{i}.md", 4) for i in range(200)}
    assert spread == {0, 1, 2, 3}
    assert route("/x", 1) == 0


def test_route_values_are_fixed():
    import hashlib

    path = "/corpus/doc1.md"
    expected = int.from_bytes(hashlib.sha256(path.encode()).digest()[:8], "big") % 5
    assert route(path, 5) == expected


def test_update_prune_and_remove_across_shards(tmp_path):
    docs = tmp_path / "docs"
    _corpus(docs, files=12, seed=3)
    plain, sharded = _rag(tmp_path / "plain"), _rag(tmp_path / "sharded")
    plain.ingest([docs])
    sharded.ingest([docs], shards=4)
    changed = docs / "group0" / "doc00.md"
    changed.write_text("# brand new heading\n\nA zebra crossed the harbor at dawn.\n")
    (docs / "group1" / "doc01.md").unlink()
    for rag in (plain, sharded):
        report = rag.ingest([docs])  # keeps its shards
        assert (report.updated, report.removed) == (1, 1)
        assert rag.search("zebra", k=3, mode="keyword")[0].source == str(changed)
    assert len(sharded.store.stores) == 4
    assert [d.path for d in sharded.documents()] == [d.path for d in plain.documents()]
    for rag in (plain, sharded):
        assert rag.remove(docs / "group2") == 4
    assert [d.path for d in sharded.documents()] == [d.path for d in plain.documents()]
    for query in QUERIES:
        _same(plain.search(query, k=5, mode="hybrid"), sharded.search(query, k=5, mode="hybrid"))
        assert all("group2" not in h.source for h in sharded.search(query, k=20, mode="keyword"))
    assert sharded.info().documents == plain.info().documents == 7


def test_a_copy_under_two_paths_is_kept_in_each_shard(tmp_path):
    """The same content under two paths routed to different shards: each shard holds it."""
    docs = tmp_path / "docs"
    docs.mkdir()
    text = "# lens\n\nThe fresnel lens made the lighthouse visible far out at sea.\n"
    names = [f"copy{i}.md" for i in range(12)]
    for name in names:
        (docs / name).write_text(text)
    rag = _rag(tmp_path / "ix")
    rag.ingest([docs], shards=3)
    used = {route(str(docs / n), 3) for n in names}
    assert len(used) > 1
    hits = rag.search("fresnel lens", k=10, mode="keyword")
    assert {h.source for h in hits} <= {str(docs / n) for n in names} and len(hits) == len(used)
    assert rag.remove(docs / names[0]) == 1
    assert len(rag.documents()) == 11 and rag.search("fresnel lens", k=1, mode="keyword")


def test_an_index_keeps_its_number_of_shards(tmp_path):
    docs = tmp_path / "docs"
    _corpus(docs, files=4)
    rag = _rag(tmp_path / "ix")
    rag.ingest([docs], shards=2)
    with pytest.raises(RagError, match="2 shard"):
        rag.ingest([docs], shards=3)
    with pytest.raises(RagError, match="1 shard"):
        plain = _rag(tmp_path / "plain")
        plain.ingest([docs])
        plain.ingest([docs], shards=2)
    with pytest.raises(RagError, match="--shards"):
        _rag(tmp_path / "other").ingest([docs], shards=0)
    again = _rag(tmp_path / "ix")  # a new process: opens it sharded
    assert isinstance(again.store, Shards) and again.ingest([docs]).unchanged == 4


def test_rebuild_keeps_the_shards(tmp_path):
    docs = tmp_path / "docs"
    _corpus(docs, files=6)
    rag = _rag(tmp_path / "ix")
    rag.ingest([docs], shards=2)
    report = rag.rebuild()
    assert report.added == 6
    assert isinstance(rag.store, Shards) and rag.store.n == 2 and rag.info().documents == 6


def test_cli_ingest_shards(tmp_path, monkeypatch, capsys):
    from rag.cli import main

    docs = tmp_path / "docs"
    _corpus(docs, files=5)
    monkeypatch.setenv("RAG_ENCODER", "fake")
    monkeypatch.setenv("RAG_GENERATOR", "fake")
    monkeypatch.setenv("RAG_TRANSLATOR", "off")
    assert main(["ingest", str(docs), "--index", str(tmp_path / "ix"), "--shards", "2", "--json"]) == 0
    assert json.loads((tmp_path / "ix" / "manifest.json").read_text())["shards"] == ["shard-0", "shard-1"]
    capsys.readouterr()
    assert main(["ingest", str(docs), "--index", str(tmp_path / "ix"), "--shards", "3"]) == 2
    assert "2 shard" in capsys.readouterr().err


@pytest.mark.slow  # starts Ray and its encoder actors
def test_ray_ingest_writes_every_shard(tmp_path):
    ray = pytest.importorskip("ray")
    docs = tmp_path / "docs"
    _corpus(docs, files=9)
    local, on_ray = _rag(tmp_path / "local"), _rag(tmp_path / "ray")
    local.ingest([docs], shards=3)
    try:
        report = on_ray.ingest([docs], shards=3, engine="ray")
    finally:
        ray.shutdown()
    assert report.added == 9 and not report.failed and sum(report.files_per_node.values()) == 9
    for a, b in zip(local.store.stores, on_ray.store.stores):
        assert [d.path for d in a.documents()] == [d.path for d in b.documents()] and a.documents()
    for query in QUERIES:
        _same(local.search(query, k=5, mode="hybrid"), on_ray.search(query, k=5, mode="hybrid"))


def test_progress_and_uploads_over_shards(tmp_path):
    docs = tmp_path / "docs"
    _corpus(docs, files=8)
    rag = _rag(tmp_path / "ix")
    seen = []
    rag.ingest([docs], shards=3, on_file=lambda done, total, path: seen.append((done, total)))
    assert [d for d, _ in seen] == list(range(1, 9)) and seen[-1] == (8, 8)
    report = rag.upload([("zebra.txt", b"A zebra crossed the harbor at dawn.\n")])
    assert report.added == 1 and isinstance(rag.store, Shards)
    hit = rag.search("zebra harbor", k=1, mode="keyword")[0]
    assert hit.source.endswith("zebra.txt") and len(rag.documents()) == 9
