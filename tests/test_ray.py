"""`rag ingest --ray` on a real Ray: a local single-node Ray, a two-node cluster simulated on
this machine (ray.cluster_utils.Cluster), and a worker killed mid-task. Each builds the same
index as the local engine from the same files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_scanned_pdf

from rag import RAG
from rag.index.store import Store

ray = pytest.importorskip("ray", reason="the ray extra: pip install -e '.[ray]'")
pytestmark = pytest.mark.slow  # starts Ray and encoder actors

TOPICS = {
    "lighthouse": "The Fresnel lens was invented by Augustin-Jean Fresnel in 1822 for lighthouses.",
    "volcano": "Mount Etna in Sicily is the most active volcano in Europe.",
    "orchid": "The vanilla orchid is pollinated by hand in Madagascar.",
    "glacier": "The Aletsch glacier is the largest glacier in the Alps.",
    "violin": "Antonio Stradivari made violins in Cremona in the eighteenth century.",
    "harbour": "The Grand Harbour of Valletta is one of the deepest natural harbours.",
}


def write_corpus(root):
    root.mkdir(parents=True, exist_ok=True)
    for i, (name, fact) in enumerate(TOPICS.items()):
        body = "\n\n".join(f"{fact} Paragraph {j} of the {name} notes adds detail number {j * 7 + i}." for j in range(12))
        (root / f"{name}.md").write_text(f"# {name.title()}\n\n{body}\n")
    (root / "copy-of-volcano.md").write_text((root / "volcano.md").read_text())  # same content: embedded once
    (root / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    return root


def scanned_pdf(path: Path) -> Path:
    """Page 1 with a text layer, pages 2 and 3 only pictures of text (as a scanner makes them)."""
    from PIL import Image, ImageDraw

    picture = Image.new("L", (800, 200), 255)
    ImageDraw.Draw(picture).text((20, 80), "The harbour master keeps the tide tables.", fill=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    return make_scanned_pdf(path, "Page one has a text layer about the tides of Valletta.", [picture, picture])


def contents(index) -> dict:
    """path -> [(chunk text, page, heading, vector)] in chunk order: what an index holds."""
    store = Store(index)
    with store.snapshot() as snap:
        rows = snap.execute("SELECT d.path, c.id, c.text, c.page, c.heading FROM documents d JOIN chunks c "
                            "ON c.sha256=d.sha256 WHERE d.status='ok' ORDER BY d.path, c.ord").fetchall()
        vectors = snap.vectors
        out = {}
        for path, chunk_id, text, page, heading in rows:
            out.setdefault(os.path.basename(path), []).append((text, page, heading, vectors.reconstruct(chunk_id)))
    store.close()
    return out


def assert_same_index(a, b):
    ca, cb = contents(a), contents(b)
    assert ca.keys() == cb.keys()
    for name in ca:
        assert [c[:3] for c in ca[name]] == [c[:3] for c in cb[name]], name
        va, vb = np.array([c[3] for c in ca[name]]), np.array([c[3] for c in cb[name]])
        # int8 tolerance: ONNX Runtime quantises activations per batch, so the same passage
        # encoded beside other passages moves a little (cosine 0.99+ measured, not 1.0)
        assert (np.sum(va * vb, axis=1) > 0.985).all(), np.sum(va * vb, axis=1).min()


@pytest.fixture(scope="module")
def local_index(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray")
    corpus = write_corpus(root / "docs")
    report = RAG(root / "local").ingest([corpus])
    assert report.added == 7 and [os.path.basename(f.path) for f in report.failed] == ["broken.pdf"]
    return corpus, root / "local"


@pytest.fixture
def fresh_ray():
    yield
    ray.shutdown()


def test_local_ray_builds_the_same_index_and_stays_incremental(local_index, tmp_path, fresh_ray):
    corpus, local = local_index
    rag = RAG(tmp_path / "ray")
    report = rag.ingest([corpus], engine="ray")
    assert (report.added, report.chunks) == (7, RAG(local).info().chunks)
    assert [(os.path.basename(f.path), f.reason[:11]) for f in report.failed] == [("broken.pdf", "corrupt PDF")]
    assert sum(report.files_per_node.values()) == 7  # six contents and the broken file went to Ray
    assert_same_index(local, tmp_path / "ray")
    question = "Which volcano is the most active in Europe?"
    top = rag.search(question, k=1)[0]
    assert "Etna" in top.text and top.source == RAG(local).search(question, k=1)[0].source
    again = rag.ingest([corpus], engine="ray")
    assert (again.unchanged, again.added, again.chunks) == (7, 0, 0)
    assert sum(again.files_per_node.values()) == 1  # only the failed file is tried again
    import shutil

    edited = Path(shutil.copytree(corpus, tmp_path / "edited"))
    scans = scanned_pdf(tmp_path / "scans" / "tides.pdf")  # the worker OCRs page 2 and passes over 3
    skipped = RAG(tmp_path / "ray-scans", max_ocr_seconds=0.001).ingest([scans.parent], engine="ray")
    assert skipped.added == 1 and skipped.skipped == 1, skipped
    assert [(f.path, f.reason) for f in skipped.skipped_files] == [
        (f"{scans}, page 3", "scanned page not read: the file's 0.001 s of OCR were spent (max_ocr_seconds)")]  # the shared corpus stays as it is
    rag.ingest([edited], engine="ray")
    (edited / "orchid.md").write_text("# Orchid\n\nOrchids were grown in Kew Gardens from 1759.\n")
    changed = rag.ingest([edited], engine="ray")
    assert changed.updated == 1 and "Kew" in rag.search("Where were orchids grown?", k=1)[0].text


def test_two_node_cluster_spreads_the_encoding(local_index, tmp_path, fresh_ray):
    from ray.cluster_utils import Cluster

    corpus, local = local_index
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        report = RAG(tmp_path / "two").ingest([corpus], engine="ray", address=cluster.address)
        assert len(report.files_per_node) == 2, report.files_per_node  # actors on both nodes did work
        assert all(n > 0 for n in report.files_per_node.values())
        assert_same_index(local, tmp_path / "two")
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_a_worker_killed_mid_task_is_restarted_and_the_ingest_completes(local_index, tmp_path):
    corpus, local = local_index
    marker = tmp_path / "crashed"
    r = subprocess.run([sys.executable, "-m", "rag.cli", "ingest", str(corpus), "--index", str(tmp_path / "ix"),
                        "--ray", "--json"], capture_output=True, text=True,
                       env={**os.environ, "RAG_RAY_CRASH_ONCE": str(marker)})
    assert marker.exists()  # a worker did die
    assert r.returncode == 1, r.stderr  # 1: broken.pdf failed, everything else is in
    report = json.loads(r.stdout)
    assert report["added"] == 7 and [os.path.basename(f["path"]) for f in report["failed"]] == ["broken.pdf"]
    assert f"failed {corpus / 'broken.pdf'}: corrupt PDF" in r.stderr
    assert_same_index(local, tmp_path / "ix")

