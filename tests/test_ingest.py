"""Incremental ingest, bad input isolation, and retrieval through the public API. The
bookkeeping runs on the fake encoder (rag/models/fakes.py: real index, deterministic
bag-of-words vectors); the real encoder ingests and searches in the tests marked slow."""

import os

import pytest

from rag import RAG
from rag.core.errors import BadIndex, IndexLocked, RagError
from rag.index.store import Store

FAKES = {"encoder": "fake", "generator": "fake", "translator": "off"}


def open_rag(index_dir, **kw):
    """A RAG on the fake encoder (no model loads): what is checked here is the index's bookkeeping."""
    return RAG(index_dir, commit_every_chunks=kw.pop("commit_every_chunks", None), **{**FAKES, **kw})


@pytest.mark.slow  # the real encoder, chosen for English documents
def test_ingest_and_search(corpus, index_dir):
    rag = RAG(index_dir)
    report = rag.ingest([corpus])
    assert (report.added, report.failed) == (4, [])
    hits = rag.search("Who invented the Fresnel lens?", k=3)
    assert hits[0].source.endswith("lighthouse.md")
    assert hits[0].heading == "Lighthouses > Fresnel lens"
    assert [h.rank for h in hits] == [1, 2, 3]
    rain = rag.search("annual rainfall in Valletta", k=1, mode="dense")[0]
    assert rain.source.endswith("report.pdf") and rain.page == 2
    html = rag.search("most active volcano in Europe", k=1)[0]
    assert "Etna" in html.text and "NAVTEXT" not in html.text and "SCRIPTTEXT" not in html.text
    info = rag.info()
    assert info.documents == 4 and info.chunks == info.vectors > 0
    assert info.encoder == "all-MiniLM-L6-v2" and info.index_type == "flat (exact)"


def test_reingest_is_incremental(corpus, index_dir):
    rag = open_rag(index_dir)
    rag.ingest([corpus])
    again = rag.ingest([corpus])
    assert (again.added, again.updated, again.removed, again.unchanged, again.chunks) == (0, 0, 0, 4, 0)

    (corpus / "bees.txt").write_text("Bumblebees can fly in colder weather than honey bees.\n")
    (corpus / "notes" / "volcano.html").unlink()
    (corpus / "new.txt").write_text("Basalt forms when lava cools quickly.\n")
    report = rag.ingest([corpus])
    assert (report.added, report.updated, report.removed, report.unchanged) == (1, 1, 1, 2)
    assert rag.info().documents == 4
    texts = " ".join(h.text for h in rag.search("honey bees waggle dance direction", k=10))
    assert "waggle" not in texts and "Bumblebees" in texts
    assert not any("volcano" in h.source for h in rag.search("Etna volcano", k=10))
    info = rag.info()
    assert info.chunks == info.vectors


def test_touch_without_change_is_unchanged(corpus, index_dir):
    rag = open_rag(index_dir)
    rag.ingest([corpus])
    os.utime(corpus / "bees.txt", (1, 1))
    report = rag.ingest([corpus])
    assert report.unchanged == 4 and report.chunks == 0


def test_no_prune_and_explicit_remove(corpus, index_dir):
    rag = open_rag(index_dir)
    rag.ingest([corpus])
    (corpus / "bees.txt").unlink()
    assert rag.ingest([corpus], prune=False).removed == 0
    assert rag.info().documents == 4
    assert rag.remove(corpus / "bees.txt") == 1
    assert rag.info().documents == 3
    assert rag.remove(corpus / "notes") == 1


def test_identical_content_embedded_once(tmp_path, index_dir):
    (tmp_path / "d").mkdir()
    for name in ("a.txt", "b.txt"):
        (tmp_path / "d" / name).write_text("The same words in two files about zebras.\n")
    rag = open_rag(index_dir)
    report = rag.ingest([tmp_path / "d"])
    assert report.added == 2 and report.chunks == 1
    assert rag.info().vectors == 1
    (tmp_path / "d" / "a.txt").unlink()
    rag.ingest([tmp_path / "d"])
    assert rag.search("zebras", k=1)[0].source.endswith("b.txt")


def test_bad_files_fail_alone(corpus, index_dir):
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.7\nnot really a pdf at all")
    (corpus / "empty.txt").write_bytes(b"")
    (corpus / "binary.md").write_bytes(os.urandom(5000).replace(b"\x00", b"\x01") + b"\x00" * 10)
    (corpus / "huge.txt").write_text("word " * 300_000)
    (corpus / "image.png").write_bytes(b"\x89PNG....")
    rag = open_rag(index_dir, max_file_mb=1.0)
    report = rag.ingest([corpus])
    reasons = {os.path.basename(f.path): f.reason for f in report.failed}
    assert set(reasons) == {"broken.pdf", "empty.txt", "binary.md", "huge.txt", "image.png"}  # .png: OCR, not an image
    assert "corrupt PDF" in reasons["broken.pdf"] and "empty" in reasons["empty.txt"]
    assert "binary" in reasons["binary.md"] and "limit" in reasons["huge.txt"]
    assert report.added == 4 and report.skipped == 0
    assert {os.path.basename(f.path) for f in rag.info().failed} == set(reasons)


def test_failed_update_keeps_previous_version(tmp_path, index_dir):
    (tmp_path / "d").mkdir()
    f = tmp_path / "d" / "a.txt"
    f.write_text("Otters hold hands while sleeping.\n")
    rag = open_rag(index_dir)
    rag.ingest([tmp_path / "d"])
    f.write_bytes(b"\x00\x01\x02" * 100)
    report = rag.ingest([tmp_path / "d"])
    assert len(report.failed) == 1
    assert "Otters" in rag.search("otters sleeping", k=1)[0].text


def test_hidden_files_index_dir_and_symlink_loops(tmp_path):
    root = tmp_path / "d"
    (root / ".hidden").mkdir(parents=True)
    (root / ".hidden" / "secret.txt").write_text("hidden words")
    (root / ".dotfile.txt").write_text("dot words")
    (root / "sub").mkdir()
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)
    (root / "sub" / "ok.txt").write_text("visible words about kites")
    rag = open_rag(root / "myindex")  # the index lives inside the folder it indexes
    report = rag.ingest([root])
    assert report.added == 1 and report.failed == []
    report = rag.ingest([root])
    assert report.unchanged == 1 and report.added == 0


def test_encoder_mismatch_is_a_clear_error(corpus, index_dir):
    open_rag(index_dir).ingest([corpus / "bees.txt"])
    with pytest.raises(BadIndex, match="built with encoder"):
        RAG(index_dir, encoder=str(corpus))  # any other encoder name


def test_missing_path_and_missing_index(tmp_path):
    with pytest.raises(RagError, match="no such file"):
        open_rag(tmp_path / "i").ingest([tmp_path / "nope"])
    with pytest.raises(BadIndex, match="no index"):
        RAG(tmp_path / "i").search("x")


def test_second_writer_is_refused(corpus, index_dir):
    rag = open_rag(index_dir)
    rag.ingest([corpus / "bees.txt"])
    with Store(index_dir).writer():
        with pytest.raises(IndexLocked, match="another rag process"):
            rag.ingest([corpus])


def test_large_index_switches_to_ivf(tmp_path):
    """Above the threshold the index becomes IVF; search, update and removal keep working."""
    root = tmp_path / "d"
    root.mkdir()
    for i in range(60):
        (root / f"f{i}.txt").write_text(f"Document number {i} discusses topic {i * 7} in depth. " * 3)
    rag = open_rag(tmp_path / "ix", ann_threshold=40)
    rag.ingest([root])
    assert rag.info().index_type.startswith("ivf")
    assert rag.search("Document number 17 discusses topic 119", k=1, mode="dense")[0].source.endswith("f17.txt")
    (root / "f17.txt").unlink()
    rag.ingest([root])
    info = rag.info()
    assert info.vectors == info.chunks == 59


def test_keyword_index_follows_incremental_updates(corpus, index_dir):
    rag = open_rag(index_dir)
    rag.ingest([corpus])
    assert rag.search("waggle", k=1, mode="keyword")[0].source.endswith("bees.txt")
    (corpus / "bees.txt").write_text("Bumblebees buzz-pollinate tomatoes.\n")
    rag.ingest([corpus])
    assert rag.search("waggle", k=3, mode="keyword") == []
    assert rag.search("tomatoes", k=1, mode="keyword")[0].source.endswith("bees.txt")
    rag.remove(corpus / "bees.txt")
    assert rag.search("tomatoes", k=3, mode="keyword") == []


@pytest.mark.slow  # the real encoder: a paraphrase is found by meaning
def test_hybrid_ranks_exact_terms_and_meaning(corpus, index_dir):
    rag = RAG(index_dir)
    rag.ingest([corpus])
    # a rare exact term (keyword wins) and a paraphrase (dense wins) both land first in hybrid
    assert rag.search("Etna", k=1, mode="hybrid")[0].source.endswith("volcano.html")
    assert rag.search("how do insects tell others where food is", k=1, mode="hybrid")[0].source.endswith("bees.txt")


def test_readers_see_committed_state_only(corpus, index_dir):
    """A question asked while an ingest is writing is answered from the last committed index."""

    from rag.index.chunking import Chunk

    rag = open_rag(index_dir)
    rag.ingest([corpus / "bees.txt"])
    before = rag.info().chunks
    with Store(index_dir).writer() as w:
        vector = rag.encoder.encode(["Quokkas live on Rottnest Island."])
        w.add_content("x" * 64, [Chunk("Quokkas live on Rottnest Island.", 0, None, "", 0, 31)], vector, 7)
        w.put_document("/virtual/quokka.txt", "x" * 64, 0.0, 31)
        assert rag.info().chunks == before  # uncommitted: invisible
        assert not any("Quokkas" in h.text for h in rag.search("quokka island", k=3))
        w.commit()
        assert rag.info().chunks == before + 1  # committed: visible at once
        assert rag.search("quokka island", k=1)[0].text.startswith("Quokkas")
