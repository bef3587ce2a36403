"""Answers from the real bundled decoders (Gemma 3 270M and SmolLM2-135M GGUF), grounded in a small corpus;
the plumbing around them (the CLI's output, citation markers, near-copies, an empty index) with
the fakes of rag/models/fakes.py, and each stage alone in test_stages.py."""

import json
import os
import subprocess
import sys

import pytest

from rag import RAG
from rag.answer.citations import cite_span
from rag.answer.prompt import fit_passages
from rag.core.present import EMPTY_INDEX, NOT_FOUND
from rag.core.records import Answer, Hit

FAKES = {"encoder": "fake", "generator": "fake", "translator": "off"}
slow = pytest.mark.slow  # loads the decoders


def write_corpus(root):
    from tests.conftest import CORPUS, make_pdf

    for name, text in CORPUS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    make_pdf(root / "report.pdf", ["Page one is about the harbour master of Valletta.",
                                   "Page two says the annual rainfall in Valletta is 550 millimetres."])
    (root / "louvre.txt").write_text("The Louvre museum in Paris closed in 2020 for three months because of "
                                     "the pandemic.")
    (root / "prado.txt").write_text("The Prado museum in Madrid closed in 1936 during the war.")
    return root


@pytest.fixture(scope="module")
def rag(tmp_path_factory):
    root = write_corpus(tmp_path_factory.mktemp("answer") / "docs")
    r = RAG(root.parent / "index")
    r.ingest([root])
    return r


@pytest.fixture(scope="module")
def fake_rag(tmp_path_factory):
    """The same corpus indexed with the fake encoder, answered by the fake decoder."""
    root = write_corpus(tmp_path_factory.mktemp("answer-fakes") / "docs")
    r = RAG(root.parent / "index", **FAKES)
    r.ingest([root])
    return r


@slow
def test_grounded_answer_with_cited_source(rag):
    answer = rag.ask("Who invented the Fresnel lens?")
    assert answer.found
    assert "Fresnel" in answer.text
    # a short answer inside the whole sentence that supports it
    assert answer.short and answer.text.startswith(f"**{answer.short}**: ") and answer.supporting
    cited = [s for s in answer.sources if s.cited]
    assert cited and cited[0].source.endswith("lighthouse.md")
    # the supporting sentence is the source's own, and it is what the answer says after the short answer
    assert answer.supporting[0] in " ".join(cited[0].text.split())
    assert answer.supporting[0].rstrip(".") in answer.text
    assert f"[{cited[0].n}]" in answer.text
    assert "Fresnel" in cited[0].evidence
    t = answer.timings
    assert 0 < t.retrieve_ms <= t.first_token_ms <= t.total_ms and t.tokens >= 1


@slow
def test_source_page_of_pdf(rag):
    answer = rag.ask("What is the annual rainfall in Valletta?")
    assert "550" in answer.text
    cited = [s for s in answer.sources if s.cited]
    assert cited[0].source.endswith("report.pdf") and cited[0].page == 2


@slow
def test_not_found_skips_the_decoder(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("Sourdough bread needs a starter of flour and water.")
    r = RAG(tmp_path / "i")
    r.ingest([tmp_path / "d"])
    answer = r.ask("What is the orbital period of the moons of Neptune?")
    assert not answer.found and answer.text == NOT_FOUND
    assert answer.sources and answer.sources[0].source.endswith("a.txt")  # closest passages shown
    assert r._generator is None  # no time spent in the decoder
    # a question the English-only encoder cannot read says why it found nothing
    chinese = r.ask("海王星的卫星绕行一周需要多长时间？")
    assert not chinese.found and chinese.text.startswith(NOT_FOUND)
    assert "reads English only" in chinese.text and "multilingual-e5-small" in chinese.text


@slow
def test_a_supporting_sentence_under_min_support_is_not_found(rag):
    question = "How do honey bees show the direction of flowers?"  # a passage of two sentences: checked
    answered = rag.ask(question)
    assert answered.found and answered.support is not None
    strict = RAG(rag.root, min_support=answered.support + 0.01)  # the same question, a stricter setting
    refused = strict.ask(question)
    assert not refused.found and refused.text == NOT_FOUND and refused.support == pytest.approx(answered.support)
    assert refused.sources and not any(s.cited for s in refused.sources)


def test_empty_index_says_how_to_ingest(tmp_path):
    answer = RAG(tmp_path / "nothing").ask("anything?")
    assert not answer.found and answer.text == EMPTY_INDEX and "rag ingest" in answer.text


@slow
def test_stream_yields_pieces_then_answer(rag):
    items = list(rag.stream("Which volcano is the most active in Europe?"))
    *pieces, final = items
    assert isinstance(final, Answer) and pieces and all(isinstance(p, str) for p in pieces)
    streamed = " ".join("".join(pieces).split())
    assert any(streamed in " ".join(src.text.split()) for src in final.sources)  # a verbatim copy was streamed
    assert "Etna" in final.text and final.text.endswith("]")  # then the whole, cited statement


@slow
def test_follow_up_question_uses_history(rag):
    history = [{"role": "user", "content": "Where is the Louvre museum?"},
               {"role": "assistant", "content": "Paris [1]"}]
    answer = rag.ask("and when did it close?", history=history)
    assert answer.question == "and when did it close?"
    assert answer.sources[0].source.endswith("louvre.txt")
    assert "2020" in answer.text


@slow
def test_token_budget_with_long_passages(rag):
    gen = rag.generator
    long = " ".join(["The committee discussed the budget of the harbour at length."] * 40)
    hits = [Hit(i + 1, 1.0, f"f{i}.txt", None, "", long, i) for i in range(10)]
    for budget in (100, 400, 1500):
        chosen = fit_passages(hits, gen.count, budget)
        used = sum(gen.count(f"[{i}] ({h.source})\n{t}\n\n") for i, (h, t) in enumerate(chosen, 1))
        assert used <= budget
        assert len(chosen) < 10
    small = RAG(rag.root, context_window=384, answer_k=10)  # ten passages offered, few fit
    question = "What did the keepers of lighthouses trim?"
    answer = small.ask(question, k=10)
    # the prompt fits: no decoder failure (with ten passages the tiny model may copy from a passage
    # about something else, which is then "not found", not a wrong answer)
    assert "decoder failed" not in answer.text and (answer.found or answer.note == NOT_FOUND)
    # every retrieved passage is still listed: those that did not fit as further reading
    assert len(answer.sources) == len(small.search(question, k=10, diverse=True))


def test_citation_markers_are_checked():
    hits = [Hit(1, 0.9, "a.txt", None, "", "Paris is the capital of France.", 1),
            Hit(2, 0.8, "b.txt", 3, "", "Berlin is the capital of Germany.", 2)]
    passages = [(h, h.text) for h in hits]
    sources = cite_span("Berlin [7] [2]", passages)  # [7] is no passage of this answer
    assert [s.cited for s in sources] == [False, True]
    assert sources[1].evidence == "Berlin is the capital of Germany." and sources[1].page == 3
    sources = cite_span("Paris [2]", passages)  # the model cited the wrong passage
    assert [s.cited for s in sources] == [True, False]


@slow
def test_transformers_backend_gives_the_same_kind_of_answer(rag):
    hf = RAG(rag.root, generator="smollm2", backend="transformers")
    answer = hf.ask("Who invented the Fresnel lens?")
    assert hf.generator.backend == "transformers"
    assert "Fresnel" in answer.text


def test_cli_ask_json(fake_rag):
    """The output's shape (the real decoder answers through the CLI in test_confidence.py)."""
    env = {**os.environ, "RAG_GENERATOR": "fake", "RAG_TRANSLATOR": "off"}  # the index names its encoder
    r = subprocess.run([sys.executable, "-m", "rag.cli", "ask", "Who invented the Fresnel lens?",
                        "--index", str(fake_rag.root), "--json"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) == {"question", "answer", "short_answer", "supporting", "found", "confidence", "sources", "timings",
                        "searched_as", "short_first", "sentences", "note"}  # the parts `rag ask --server` rebuilds from
    assert out["searched_as"] is None  # an English question is searched as asked
    assert out["supporting"] and any(out["supporting"][0] in " ".join(s["text"].split()) for s in out["sources"])
    assert set(out["sources"][0]) >= {"n", "source", "page", "heading", "score", "text", "cited"}
    assert set(out["timings"]) == {"retrieve_ms", "first_token_ms", "total_ms", "tokens", "tokens_per_s", "translate_ms"}
    r = subprocess.run([sys.executable, "-m", "rag.cli", "ask", "Who invented the Fresnel lens?",
                        "--index", str(fake_rag.root)], capture_output=True, text=True, env=env)
    assert "Fresnel" in r.stdout and "lighthouse.md" in r.stdout and "first token" in r.stderr


def test_sources_are_not_near_copies(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    base = "The Hubble telescope was launched in 1990 aboard the space shuttle Discovery"
    (d / "v1.txt").write_text(base + ".\n")
    (d / "v2.txt").write_text(base + "!\n")  # a near-copy, different bytes
    (d / "other.txt").write_text("Hubble's mirror was ground slightly wrong and fixed in 1993.\n")
    r = RAG(tmp_path / "i", **FAKES)
    r.ingest([d])
    plain = r.search("When was the Hubble telescope launched?", k=3)
    assert sum("Discovery" in h.text for h in plain) == 2
    diverse = r.search("When was the Hubble telescope launched?", k=3, diverse=True)
    assert sum("Discovery" in h.text for h in diverse) == 1 and len(diverse) == 2
    assert [h.rank for h in diverse] == [1, 2]
