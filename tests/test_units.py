"""Fast checks of single parts with their real dependencies (no model loads): copy
constraint, follow-up rewriting, settings precedence, fusion, IVF calibration, the writer
lock, index format versions. `make test-fast` runs these in seconds."""

import json
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from rag.answer.followup import rewrite_follow_up
from rag.answer.retrieve import fuse
from rag.core.errors import BadIndex, IndexLocked
from rag.core.settings import Settings
from rag.index.store import FORMAT_VERSION, MANIFEST_NAME, Store
from rag.models.decoders import CopyConstraint

# --- span-constrained copying ---------------------------------------------------------------

def test_copy_constraint_allows_only_continuations_of_a_source():
    c = CopyConstraint([[5, 6, 7], [6, 8]], stop_ids={0}, vocab_size=10, not_first={5})
    assert set(c.allowed()) == {6, 7, 8}  # any source token may start, except a not-first word
    c.advance(6)
    assert set(c.allowed()) == {7, 8, 0}  # after 6: what follows 6 in either source, or stop
    c.advance(7)
    assert set(c.allowed()) == {0}  # the copy reached the end of its source: only stop
    scores = np.arange(10, dtype=np.float32)
    masked = c.mask(scores)
    assert masked[0] == 0 and np.isinf(masked[1:]).all()


def test_copy_constraint_first_token_rules():
    only_avoided = CopyConstraint([[5]], stop_ids={0}, vocab_size=10, not_first={5})
    assert set(only_avoided.allowed()) == {5}  # when every start is avoided, avoiding is dropped
    late_stop = CopyConstraint([[1, 2, 3]], stop_ids={0, 99}, vocab_size=10, min_tokens=2)
    assert 0 not in late_stop.allowed()  # no stop before min_tokens ...
    late_stop.advance(1)
    late_stop.advance(2)
    assert 0 in late_stop.allowed() and 99 not in late_stop.allowed()  # ... and ids outside the vocabulary never


# --- follow-up questions -----------------------------------------------------------------------

@pytest.mark.parametrize("history, question, rewritten, query", [
    ([], "When did it open?", "When did it open?", "When did it open?"),
    (["When did the Louvre museum open?"], "and when did it close?",
     "and when did the Louvre museum close?", "and when did the Louvre museum close?"),
    (["Who founded Acme Corp?"], "What are its products?", "What are Acme Corp's products?",
     "What are Acme Corp's products?"),
    (["what is a lighthouse?"], "how tall is it?", "how tall is it?",  # no capitalised topic: no swap
     "what is a lighthouse? how tall is it?"),
    (["When did the Louvre museum open?"], "Who designed the pyramid?", "Who designed the pyramid?",
     "When did the Louvre museum open? Who designed the pyramid?"),  # no pronoun: both searched
    ([{"role": "assistant", "content": "Paris [1]"}], "when did it close?", "when did it close?",
     "when did it close?"),  # only the person's turns count
])
def test_follow_up_rewriting(history, question, rewritten, query):
    assert rewrite_follow_up(question, history) == (rewritten, query)


# --- settings ----------------------------------------------------------------------------------

def test_settings_precedence_and_types(tmp_path, monkeypatch):
    config = tmp_path / "rag.toml"
    config.write_text('k = 7\nmode = "dense"\ncopy = false\ntemperature = 0.5\n')
    monkeypatch.setenv("RAG_CONFIG", str(config))
    monkeypatch.setenv("RAG_MODE", "keyword")  # the environment beats the file
    monkeypatch.setenv("RAG_DIVERSE", "no")
    monkeypatch.setenv("RAG_MIN_SCORE", "0.3")
    s = Settings.load(k=9)  # an explicit argument beats both
    assert (s.k, s.mode, s.copy, s.diverse, s.temperature, s.min_score) == (9, "keyword", False, False, 0.5, 0.3)
    for text, value in (("1", True), ("true", True), ("Yes", True), ("0", False), ("off", False), ("", False)):
        monkeypatch.setenv("RAG_COPY", text)
        assert Settings.load().copy is value
    assert Settings.load(k=None).k == 7  # None means "not given"
    assert Settings().replace(mode=None, k=2) == Settings(k=2)


def test_environment_variables_are_settings(tmp_path, monkeypatch):
    """RAG_THREADS, RAG_MODEL_CACHE, RAG_ALLOW_DOWNLOADS, RAG_INDEX and RAG_API_KEY are settings,
    read (and validated) through Settings, also where no Settings is at hand (core/paths.py)."""
    from rag.core import paths
    from rag.core.errors import BadSetting, ModelNotFound
    from rag.core.settings import configured
    from rag.models.catalog import _check_hub_allowed
    from rag.models.decoders.openai_chat import ChatServer

    monkeypatch.chdir(tmp_path)  # no rag.toml
    for name in ("RAG_CONFIG", "RAG_THREADS", "RAG_OPENAI_BASE_URL", "RAG_ALLOW_DOWNLOADS", "RAG_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    default = Settings()
    assert (default.threads, default.model_cache, default.allow_downloads, default.index, default.api_key) == (
        0, "~/.cache/rag", False, "default", "")
    assert paths.cpu_count() >= 1 and ChatServer("m", "", 2048, 1.0).base_url == default.openai_base_url
    monkeypatch.setenv("RAG_THREADS", "3")
    monkeypatch.setenv("RAG_MODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RAG_ALLOW_DOWNLOADS", "yes")
    monkeypatch.setenv("RAG_INDEX", "handbook")
    monkeypatch.setenv("RAG_API_KEY", "k-123")
    monkeypatch.setenv("RAG_OPENAI_BASE_URL", "http://127.0.0.1:11434/v1/")
    assert paths.cpu_count() == 3 and paths.cache_dir() == tmp_path / "cache"
    s = configured()
    assert (s.allow_downloads, s.index, s.api_key) == (True, "handbook", "k-123") and "k-123" not in repr(s)
    assert ChatServer("m", "", 2048, 1.0).base_url == "http://127.0.0.1:11434/v1"
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert _check_hub_allowed("nobody/no-such-model") is None  # allowed: nothing checked
    monkeypatch.setenv("RAG_ALLOW_DOWNLOADS", "0")
    with pytest.raises(ModelNotFound, match="RAG_ALLOW_DOWNLOADS"):
        _check_hub_allowed("nobody/no-such-model")
    monkeypatch.delenv("RAG_THREADS")
    (tmp_path / "rag.toml").write_text("threads = 2\n")  # rag.toml counts too, read again when it changes
    assert paths.cpu_count() == 2
    monkeypatch.setenv("RAG_API_KEY", "")  # a key may be empty (none), an index may not
    assert configured().api_key == ""
    for name, bad in (("RAG_THREADS", "-1"), ("RAG_THREADS", "many"), ("RAG_ALLOW_DOWNLOADS", "2"),
                      ("RAG_INDEX", " ")):
        monkeypatch.setenv(name, bad)
        with pytest.raises(BadSetting, match=f"{name[4:].lower()} .*from {name}"):
            configured()
        monkeypatch.delenv(name)


# --- hybrid fusion -----------------------------------------------------------------------------

def test_fusion_rescales_the_cosine_and_divides_bm25_by_its_best():
    dense = {1: 0.8, 2: 0.4, 3: 0.6}
    keyword = {2: 10.0, 3: 5.0}
    fused = fuse(dense, keyword, {1, 2, 3}, weight=0.5)
    # cosines 0.8/0.4/0.6 -> 1/0/0.5 over the candidates; BM25 -> 0/1/0.5
    assert fused == pytest.approx({1: 0.5, 2: 0.5, 3: 0.5})
    assert fuse(dense, {}, {1, 3}, 1.0) == pytest.approx({1: 1.0, 3: 0.5})
    assert fuse({}, keyword, {3}, 0.0) == {3: 0.5}
    # the cosine's scale does not matter: e5's compressed cosines rank like MiniLM's wide ones
    squeezed = {i: 0.8 + c / 10 for i, c in dense.items()}
    assert fuse(squeezed, keyword, {1, 2, 3}, 0.4) == pytest.approx(fuse(dense, keyword, {1, 2, 3}, 0.4))


# --- vectors -----------------------------------------------------------------------------------

def test_nprobe_calibration_reaches_its_recall_target():
    from rag.index.vectors import build_ivf, exact_top, recall_at

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 32))
    vectors = (centres[rng.integers(0, 40, 20_000)] + 0.6 * rng.normal(size=(20_000, 32))).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(100, 20_100, dtype=np.int64)
    index = build_ivf(vectors, ids, target_recall=0.95)
    assert 1 <= index.nprobe < index.nlist  # cheaper than searching every list
    queries = vectors[rng.choice(20_000, 300)] + 0.3 * rng.normal(size=(300, 32)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    assert recall_at(index, queries, exact_top(vectors, ids, queries, 10), 10) >= 0.93  # held-out queries


# --- the index directory -----------------------------------------------------------------------

def test_manifest_of_another_format_is_refused(tmp_path):
    Store.create(tmp_path / "ix", {"encoder": "x"}).close()
    manifest = json.loads((tmp_path / "ix" / MANIFEST_NAME).read_text())
    (tmp_path / "ix" / MANIFEST_NAME).write_text(json.dumps({**manifest, "format": FORMAT_VERSION + 1}))
    with pytest.raises(BadIndex, match=f"format {FORMAT_VERSION + 1}.*re-ingest"):
        Store(tmp_path / "ix")


def test_second_writer_process_waits_or_is_refused(tmp_path):
    Store.create(tmp_path / "ix", {"encoder": "x"}).close()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from rag.index.store import Store
        with Store({str(tmp_path / "ix")!r}).writer():
            print("locked", flush=True)
            time.sleep(2)
        """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    store = Store(tmp_path / "ix")
    with pytest.raises(IndexLocked, match="--wait"):
        store.writer(wait=0)
    started = time.monotonic()
    with store.writer(wait=30):  # --wait: blocks until the other process lets go
        waited = time.monotonic() - started
    assert 0.3 < waited < 25
    holder.wait()


def test_removing_a_path_never_indexed_removes_nothing(tmp_path):
    from rag import RAG

    Store.create(tmp_path / "ix", {"encoder": "all-MiniLM-L6-v2", "chunk_size": 128, "chunk_overlap": 16}).close()
    assert RAG(tmp_path / "ix").remove(tmp_path / "never-here.txt") == 0
    r = subprocess.run([sys.executable, "-m", "rag.cli", "remove", str(tmp_path / "never"), "--index",
                        str(tmp_path / "ix")], capture_output=True, text=True)
    assert r.returncode == 1 and "removed 0" in r.stdout


def test_without_ray_installed_the_error_says_how_to_install(monkeypatch):
    from rag.core.errors import RagError
    from rag.index.cluster import connect

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(RagError, match=r"pip install -e '\.\[ray\]'"):
        connect(None)


# --- encoder runtimes (loads the real MiniLM three ways: a few seconds) -------------------------

@pytest.mark.slow
def test_question_vectors_are_kept_and_read_only():
    from rag.models.encoder import QUERIES_KEPT, Encoder

    encoder = Encoder("all-MiniLM-L6-v2")
    first = encoder.encode_query("Who invented the Fresnel lens?")
    assert encoder.encode_query("Who invented the Fresnel lens?") is first  # retrieval, then the sentence check
    with pytest.raises(ValueError):
        first[0] = 1.0  # shared: nobody may change it
    for i in range(QUERIES_KEPT):
        encoder.encode_query(f"question {i}")
    again = encoder.encode_query("Who invented the Fresnel lens?")  # the oldest was dropped: computed anew
    assert again is not first and np.allclose(again, first, atol=1e-6)
    sims = encoder.similarities("Who invented the Fresnel lens?", ["Fresnel invented the lens.", "Bread."])
    assert sims[0] > sims[1]


@pytest.mark.slow
def test_onnx_vectors_match_pytorch():
    """The README's claim: fp32 ONNX gives PyTorch's vectors; int8 ONNX keeps their ranking."""
    from rag.models.encoder import Encoder

    texts = ["The Fresnel lens was invented in 1822.", "Bison can run at fifty kilometres an hour.",
             "長江是中國最長的河流。", "A lighthouse keeper trimmed the wicks every night."]
    query = "Who made the lens for lighthouses?"
    runs = {rt: Encoder("all-MiniLM-L6-v2", runtime=rt) for rt in ("torch", "onnx", "onnx-int8")}
    vecs = {rt: e.encode(texts) for rt, e in runs.items()}
    queries = {rt: e.encode_query(query) for rt, e in runs.items()}
    assert np.abs(vecs["onnx"] - vecs["torch"]).max() < 1e-4
    assert np.abs(queries["onnx"] - queries["torch"]).max() < 1e-4
    assert (np.sum(vecs["onnx-int8"] * vecs["torch"], axis=1) > 0.98).all()
    ranking = {rt: list(np.argsort(-(vecs[rt] @ queries["torch"]))) for rt in vecs}
    assert ranking["onnx-int8"] == ranking["torch"] == ranking["onnx"]


# --- the answer a person reads -----------------------------------------------------------------

def test_sentences_follow_prose_lists_tables_and_chinese():
    from rag.answer.compose import sentences

    text = ("A file whose size and\nmodification time are unchanged is skipped. Two files are embedded once.\n\n"
            "- one item\n  that wraps\n- another\n| HTML | .html |\n# Heading\n长江很长。它流经十一个省！")
    assert sentences(text) == ["A file whose size and modification time are unchanged is skipped.",
                               "Two files are embedded once.", "- one item that wraps", "- another",
                               "| HTML | .html |", "# Heading", "长江很长。", "它流经十一个省！"]


def test_readable_and_short_answers():
    from rag.answer.compose import readable, usable_short

    assert readable("| HTML | .html, .htm | visible text |") == "HTML, .html, .htm, visible text"
    assert readable("- **Encoder**: `all-MiniLM`") == "Encoder: all-MiniLM"
    assert readable("## Install") == "Install"
    assert usable_short("2", "What is BERT?") == ""  # a list number is no answer to a what-question
    assert usable_short("2", "How many layers?") == "2"
    assert usable_short("`--generator`", "How do I change it?") == "--generator"
    assert usable_short("HTML | .html", "Which format?") == "HTML, .html"
    assert usable_short("a b c d e f g h i j k l", "Who?") == ""  # a clause, not a short answer


def _reads(made) -> str:
    """What a person reads of a composed statement (present.py words every answer)."""
    from rag.core.present import markdown
    from rag.core.records import Answer, Sentence

    return markdown(Answer("q", short=made.short, short_first=made.short_first, sentences=[Sentence(t) for t in made.said]))


def test_compose_puts_the_short_answer_in_its_sentence():
    from rag.answer.compose import compose

    passage = ("The Quillfeather Lighthouse stands on the cape. It was first lit in 1897 by keeper\n"
               "Tobias Renwick. Its lamp burned whale oil.")
    made = compose("1897", passage, "When was the Quillfeather Lighthouse first lit?")
    assert _reads(made) == "**1897**: It was first lit in 1897 by keeper Tobias Renwick."
    assert made.short == "1897" and made.evidence.startswith("It was first lit") and "\n" in made.evidence
    why = compose("whale oil", passage, "How did the lamp work?")  # not a factoid: the sentences
    assert _reads(why) == "Its lamp burned whale oil." and why.short == "whale oil"


def test_compose_lets_the_encoder_overrule_a_far_off_sentence():
    from rag.answer.compose import compose, sentences

    passage = "The museum opened in 1793. The pyramid was designed by I. M. Pei. Tickets cost 17 euros."
    # stands in for the encoder's scores: the pyramid sentence is closest
    scores = [0.9 if "pyramid" in s else 0.2 for s in sentences(passage)]

    made = compose("17 euros", passage, "Who designed the pyramid?", lambda table: scores, 0.10)
    assert "I. M. Pei" in _reads(made) and made.short == "" and made.support == 0.9
    assert made.respanned == "The pyramid was designed by I. M. Pei." and made.copied == ""
    again = compose("17 euros", passage, "Who designed the pyramid?", lambda table: scores, 0.10,
                    respan=lambda sentence: "I. M. Pei")  # the decoder copies again from the closer sentence
    assert again.short == "I. M. Pei" and again.copied == "I. M. Pei" and _reads(again).startswith("**I. M. Pei**")
    kept = compose("I. M. Pei", passage, "Who designed the pyramid?", lambda table: scores, 0.10)
    assert kept.short == "I. M. Pei" and _reads(kept).startswith("**I. M. Pei**") and not kept.respanned


def test_free_answers_keep_only_supported_citations():
    from rag.answer.citations import check_free_answer
    from rag.core.present import statement

    passages = ["The Fresnel lens was invented by Augustin-Jean Fresnel in 1822.",
                "Mount Etna is the most active volcano in Europe."]
    checked = check_free_answer(
        "Augustin-Jean Fresnel invented the lens in 1822 [2]. It was made of gold and sold in Tokyo [1].", passages)
    text = statement(checked)
    cited = {n for s in checked for n in s.cites}
    unsupported = sum(not s.supported for s in checked)
    assert text.startswith("Augustin-Jean Fresnel invented the lens in 1822. [1]")  # wrong [2] moved to [1]
    assert "Tokyo. (not supported by the sources)" in text or "Tokyo (not supported" in text
    assert cited == {1} and unsupported == 1


def test_an_answer_is_rebuilt_from_its_json_and_renders_the_same():
    """`rag ask --server`: the server's JSON gives back the answer record (sentences, short
    answer, note, sources around Hits), never read out of its Markdown; the page's HTML is
    built from the same parts, escaped."""
    from rag.core import present
    from rag.core.records import Answer, Hit, Sentence, Source, Timings

    hit = Hit(1, 0.81, "docs/light.md", 3, "History", "Built in 1890. The lamp was first lit in 1897.", 42)
    other = Hit(2, 0.4, "notes.txt", None, "", "Keepers <b>lived</b> there.", 7)
    answer = Answer("When was it lit?", short="1897", short_first=True,
                    sentences=[Sentence("The lamp was first lit in 1897.", [1]), Sentence("It *shone*.", [], False)],
                    sources=[Source(1, hit, hit.text, cited=True, evidence="The lamp was first lit in 1897."),
                             Source(2, other, other.text)],
                    timings=Timings(12.0, 150.0, 900.0, 40, 44.4, None), supporting=["The lamp was first lit in 1897."],
                    confidence=0.9, searched="when lit")
    data = json.loads(json.dumps(answer.to_dict()))
    assert data["short_first"] is True and data["note"] == "" and data["sources"][0]["chunk_id"] == 42
    assert data["sentences"] == [{"text": "The lamp was first lit in 1897.", "cites": [1], "supported": True},
                                 {"text": "It *shone*.", "cites": [], "supported": False}]
    again = Answer.from_dict(data)
    assert again.to_dict() == data and again.sources[0].hit == Hit(1, 0.81, "docs/light.md", 3, "History", hit.text, 42)
    for bold in (True, False):
        assert present.terminal(again, bold) == present.terminal(answer, bold)
    assert present.html(again, anchors="src-2") == (
        '<div><strong>1897</strong>: The lamp was first lit in 1897. <a href="#src-2-1">[1]</a> '
        'It *shone*. (not supported by the sources)</div>')

    doubtful = Answer("Who?", found=False, note=present.MAY_NOT_SAY, sources=answer.sources)
    back = Answer.from_dict(json.loads(json.dumps(doubtful.to_dict())))
    assert present.terminal(back, True) == present.terminal(doubtful, True) and "[1] light.md" in back.text
    old = {k: v for k, v in data.items() if k not in ("short_first", "sentences", "note")}  # an older server
    assert present.terminal(Answer.from_dict(old), False) == data["answer"]
    with pytest.raises((KeyError, TypeError, ValueError)):
        Answer.from_dict({"answer": "x"})
