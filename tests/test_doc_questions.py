"""Thirty what/how/why questions a new user asks about rag's own documentation (docs/), each
with the phrases a correct answer contains (tests/data/docs_questions.json). The bundled
default decoder must answer at least 80% of them with a usable statement."""

import json
from pathlib import Path

import pytest

from rag import RAG

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = json.loads((ROOT / "tests" / "data" / "docs_questions.json").read_text())
pytestmark = pytest.mark.slow  # thirty answers from the real decoder


def correct(answer, phrases) -> bool:
    return answer.found and any(p.lower() in answer.text.lower() for p in phrases)


def test_questions_about_the_docs_get_usable_answers(tmp_path):
    rag = RAG(tmp_path / "docs-index")
    rag.ingest([ROOT / "docs"])
    answers = [(q, rag.ask(q["question"])) for q in QUESTIONS]
    wrong = [f"{q['question']} -> {a.text}" for q, a in answers if not correct(a, q["any"])]
    assert len(wrong) <= 0.2 * len(QUESTIONS), "\n".join(wrong)
    for _, a in answers:
        assert not a.text.strip(" []0123456789").isdigit()  # never a bare list number
        assert "|" not in a.text and "`" not in a.text and not a.text.startswith("#")  # never markup
