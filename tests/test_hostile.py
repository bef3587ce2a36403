"""Hostile files, damaged indexes and odd arguments: each is skipped or refused with a one-line
reason, the rest of the batch is ingested, and the index is never left damaged or silent."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import make_docx

from rag import RAG
from rag.core.errors import UnreadableFile
from rag.readers.base import Limits
from rag.readers.documents import read


def rag(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "rag.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env={**os.environ, **(env or {})}, timeout=600)


def zip_bomb_docx(path: Path, inflated_mb: int) -> Path:
    """A real .docx whose word/document.xml inflates to `inflated_mb` (a few hundred KB on disk)."""
    make_docx(path, [("p", "seed")])
    with zipfile.ZipFile(path) as src:
        parts = {name: src.read(name) for name in src.namelist()}
    para = b"<w:p><w:r><w:t>a</w:t></w:r></w:p>"
    head, _, tail = parts["word/document.xml"].partition(b"<w:body>")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as out:
        for name, data in parts.items():
            if name != "word/document.xml":
                out.writestr(name, data)
        with out.open("word/document.xml", "w", force_zip64=True) as f:
            f.write(head + b"<w:body>")
            block = para * (2**20 // len(para))
            for _ in range(inflated_mb):
                f.write(block)
            f.write(b"</w:body>" + tail.split(b"</w:body>", 1)[-1])
    return path


@pytest.fixture
def hostile(tmp_path):
    """A folder of good files beside hostile ones."""
    root = tmp_path / "hostile"
    root.mkdir()
    (root / "good.txt").write_text("The quokka is a small wallaby that lives on Rottnest Island near Perth.\n")
    (root / "also_good.md").write_text("# Kiwi\n\nThe kiwi is a flightless bird native to New Zealand.\n")
    zip_bomb_docx(root / "bomb.docx", inflated_mb=40)
    (root / "nospace.txt").write_text("z" * 3_000_000)
    (root / "deep.json").write_text("[" * 200_000 + "]" * 200_000)
    (root / "utf16.txt").write_bytes("The axolotl is a salamander from the lakes of Mexico City.\n".encode("utf-16-le"))
    (root / "big_cell.csv").write_text("name,notes\nokapi," + "giraffe relative " * 70_000 + "\n")  # 1.2 MB
    (root / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    (root / "empty.txt").write_text("")
    os.mkfifo(root / "pipe.txt")
    return root


@pytest.mark.slow
def test_hostile_folder_is_ingested_around_its_bad_files(hostile, tmp_path):
    r = rag("ingest", hostile, "--index", tmp_path / "idx", "--json",
            env={"RAG_MAX_INFLATED_MB": "16", "RAG_MAX_CHUNK_CHARS": "1000"})
    assert r.returncode == 1, r.stderr  # some failed, the rest is in
    assert "Traceback" not in r.stderr
    report = json.loads(r.stdout)
    failed = {Path(f["path"]).name: f["reason"] for f in report["failed"]}
    skipped = {Path(f["path"]).name: f["reason"] for f in report["skipped_files"]}
    assert "inflates to 40 MB, over the 16 MB limit" in failed["bomb.docx"]
    assert "nested" in failed["deep.json"]
    assert "empty" in failed["empty.txt"]
    assert "corrupt image" in failed["picture.png"]  # an image is read (OCR); random bytes are no image
    assert "not a regular file" in skipped["pipe.txt"]
    assert report["added"] == 5  # good, also_good, nospace, utf16, big_cell
    assert f"failed {hostile / 'bomb.docx'}:" in rag("ingest", hostile, "--index", tmp_path / "idx2",
                                                     env={"RAG_MAX_INFLATED_MB": "16"}).stderr
    qa = RAG(tmp_path / "idx")
    assert "axolotl" in qa.search("salamander from Mexico", k=1)[0].text  # UTF-16 without a BOM is text
    assert "okapi" in qa.search("okapi giraffe relative", k=1)[0].text
    with qa.store.snapshot() as snap:
        longest = snap.execute("SELECT MAX(LENGTH(text)) FROM chunks").fetchone()[0]
    assert longest <= 1000  # text without spaces was cut on characters
    assert qa.search("quokka Rottnest", k=1)[0].source.endswith("good.txt")


def test_zip_bomb_is_refused_before_it_inflates():
    import resource
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        bomb = zip_bomb_docx(Path(d) / "b.docx", inflated_mb=300)
        assert bomb.stat().st_size < 2 * 2**20
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with pytest.raises(UnreadableFile, match="over the 256 MB limit"):
            read(bomb)
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # KB: < 100 MB more


def test_json_depth_limit():
    with pytest.raises(UnreadableFile, match="nested more than 3 levels"):
        read("x.json", b'{"a": {"b": {"c": {"d": {"e": 1}}}}}', Limits(max_json_depth=3))
    assert "a.b: 1" in read("x.json", b'{"a": {"b": 1}}').text


@pytest.mark.slow
def test_damaged_vector_file_is_detected_and_rebuilt(corpus, tmp_path):
    index = tmp_path / "idx"
    assert rag("ingest", corpus, "--index", index).returncode == 0
    vectors = next(index.glob("vectors.*.faiss"))
    data = bytearray(vectors.read_bytes())
    data[200:264] = os.urandom(64)
    vectors.write_bytes(bytes(data))
    r = rag("search", "Fresnel lens", "--index", index)
    assert r.returncode == 2 and "damaged" in r.stderr and "rag rebuild" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    r = rag("rebuild", "--index", index)
    assert r.returncode == 0, r.stderr
    r = rag("search", "Fresnel lens", "--index", index, "-k", "1", "--json")
    assert r.returncode == 0 and "Fresnel" in json.loads(r.stdout)[0]["text"]
    assert list(tmp_path.glob("idx.damaged-*"))  # the old one is kept until the user deletes it


@pytest.mark.slow
def test_damaged_database_and_manifest_exit_2_with_what_to_do(corpus, tmp_path):
    index = tmp_path / "idx"
    assert rag("ingest", corpus, "--index", index).returncode == 0
    db = index / "chunks.sqlite"
    data = bytearray(db.read_bytes())
    data[0:16] = os.urandom(16)  # the header
    db.write_bytes(bytes(data))
    for command in (["search", "lens"], ["info"], ["ask", "Who invented the lens?"], ["ingest", corpus]):
        r = rag(*command, "--index", index)
        assert r.returncode == 2 and "damaged" in r.stderr and "Traceback" not in r.stderr, (command, r.stderr)

    other = tmp_path / "other"
    assert rag("ingest", corpus / "bees.txt", "--index", other).returncode == 0
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["encoder"] = "someone/unknown-encoder"
    (other / "manifest.json").write_text(json.dumps(manifest))
    r = rag("search", "bees", "--index", other, env={"HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0"})
    assert r.returncode == 2 and "downloads nothing" in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.slow
def test_links_out_of_the_folder_are_skipped_and_pruned(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("The secret ingredient is cardamom.\n")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "own.txt").write_text("Penguins live in the southern hemisphere.\n")
    (docs / "inner.txt").symlink_to(docs / "own.txt")
    (docs / "secret.txt").symlink_to(outside / "secret.txt")
    (docs / "elsewhere").symlink_to(outside)
    (docs / "loop").symlink_to(docs / "loop")
    index = tmp_path / "idx"
    report = json.loads(rag("ingest", docs, "--index", index, "--json").stdout)
    skipped = {Path(f["path"]).name: f["reason"] for f in report["skipped_files"]}
    assert "outside the folder" in skipped["secret.txt"] and "outside the folder" in skipped["elsewhere"]
    assert "loop" in skipped["loop"]
    assert {Path(d.path).name for d in RAG(index).documents()} == {"own.txt", "inner.txt"}

    r = rag("ingest", docs, "--index", index, "--follow-links", "--json")
    names = {Path(d.path).name for d in RAG(index).documents()}
    assert names == {"own.txt", "inner.txt", "secret.txt"}, (names, r.stdout)  # elsewhere/secret.txt: same content
    for d in RAG(index).documents():
        assert d.path.startswith(str(docs.resolve()))  # known by the link's name, inside the folder
    (docs / "secret.txt").unlink()
    (docs / "elsewhere").unlink()
    report = json.loads(rag("ingest", docs, "--index", index, "--follow-links", "--json").stdout)
    assert report["removed"] >= 1
    assert {Path(d.path).name for d in RAG(index).documents()} == {"own.txt", "inner.txt"}
    assert not RAG(index).search("secret ingredient cardamom", k=3) or all(
        "cardamom" not in h.text for h in RAG(index).search("secret ingredient cardamom", k=3))


@pytest.mark.slow
def test_odd_arguments(corpus, tmp_path):
    index = tmp_path / "idx"
    assert rag("ingest", corpus / "bees.txt", "--index", index).returncode == 0
    for k in ("-1", "0", "two"):
        r = rag("search", "bees", "--index", index, "-k", k)
        assert r.returncode == 2 and "at least 1" in r.stderr and "Traceback" not in r.stderr
    with pytest.raises(Exception, match="at least 1"):
        RAG(index).search("bees", k=0)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    r = rag("ingest", corpus, "--index", a_file)
    assert r.returncode == 2 and "is a file" in r.stderr and "Traceback" not in r.stderr
