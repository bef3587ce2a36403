"""`rag eval` and the metrics behind it, on small datasets made here."""

import json
import subprocess
import sys

import pytest

from rag.evaluate import exact_match, f1_score, load, normalize_answer, sample


def squad_file(path, impossible=False):
    data = {"data": [{"paragraphs": [
        {"context": "The Amazon river flows through Brazil and Peru. It is the largest river by discharge.",
         "qas": [{"id": "1", "question": "Which countries does the Amazon flow through?",
                  "answers": [{"text": "Brazil and Peru", "answer_start": 32}]}]},
        {"context": "Mount Kilimanjaro is the highest mountain in Africa, rising 5,895 metres in Tanzania.",
         "qas": [{"id": "2", "question": "How high is Kilimanjaro?",
                  "answers": [{"text": "5,895 metres", "answer_start": 60}]},
                 {"id": "3", "question": "Who first climbed Kilimanjaro on skis?", "answers": [],
                  "is_impossible": True}] if impossible else
                [{"id": "2", "question": "How high is Kilimanjaro?",
                  "answers": [{"text": "5,895 metres", "answer_start": 60}]}]},
        {"context": "The violin has four strings tuned in perfect fifths.",
         "qas": [{"id": "4", "question": "How many strings does a violin have?",
                  "answers": [{"text": "four", "answer_start": 15}]}]},
    ]}]}
    path.write_text(json.dumps(data))
    return path


def test_official_squad_normalisation():
    assert normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert exact_match("the Denver Broncos", ["Denver Broncos"]) == 1.0
    assert round(f1_score("Denver Broncos team", ["Denver Broncos"]), 3) == 0.8
    assert f1_score("", ["x"]) == 0.0


def test_load_and_sample_are_deterministic(tmp_path):
    ds = load(squad_file(tmp_path / "d.json", impossible=True))
    assert len(ds.contexts) == 3 and len(ds.questions) == 4
    assert sum(q.impossible for q in ds.questions) == 1
    import random

    first = [q.question for q in sample(ds.questions, 2, seed=3)]
    random.seed(12345)  # the global random state must not matter
    assert [q.question for q in sample(ds.questions, 2, seed=3)] == first
    assert len(set(first)) == 2 and set(first) <= {q.question for q in ds.questions}
    seeds = {tuple(q.question for q in sample(ds.questions, 2, seed=s)) for s in range(20)}
    assert len(seeds) > 1  # the seed chooses the sample
    assert sample(ds.questions, None) == ds.questions and sample(ds.questions, 99) == ds.questions


@pytest.mark.slow  # the real encoder and decoder, end to end
def test_rag_eval_builds_index_and_reports(tmp_path):
    dataset = squad_file(tmp_path / "mini.json", impossible=True)
    r = subprocess.run([sys.executable, "-m", "rag.cli", "eval", str(dataset), "--json", "--answers"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (tmp_path / "indexes" / "eval-mini" / "manifest.json").is_file()
    for mode in ("dense", "keyword", "hybrid"):
        m = out["retrieval"][mode]
        assert m["questions"] == 3 and m["recall@1"] >= 2 / 3 and m["recall@10"] == 1.0
        assert 0 < m["mrr@10"] <= 1 and 0 < m["ndcg@10"] <= 1
    answers = out["answers"]
    assert answers["answerable"] == 3 and answers["unanswerable"] == 1
    assert answers["f1"] > 0.3
    r = subprocess.run([sys.executable, "-m", "rag.cli", "eval", str(dataset), "--mode", "hybrid", "-k", "1,3"],
                       capture_output=True, text=True, cwd=tmp_path)  # reuses the index
    assert r.returncode == 0 and "| hybrid |" in r.stdout and "recall@3" in r.stdout and "| dense |" not in r.stdout


def test_jsonl_dataset_against_existing_index(tmp_path, corpus):
    """Keyword retrieval only: the index is built with the fake encoder (rag/models/fakes.py)."""
    from rag import RAG

    RAG(tmp_path / "idx", encoder="fake", generator="fake", translator="off").ingest([corpus])
    qs = tmp_path / "own.jsonl"
    qs.write_text(json.dumps({"question": "Who invented the Fresnel lens?", "answers": ["Augustin-Jean Fresnel"],
                              "source": "lighthouse.md"}) + "\n")
    r = subprocess.run([sys.executable, "-m", "rag.cli", "eval", str(qs), "--index", str(tmp_path / "idx"),
                        "--json", "--mode", "keyword"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["retrieval"]["keyword"]["recall@1"] == 1.0
