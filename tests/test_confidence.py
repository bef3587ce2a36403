"""The answer's confidence (rag/confidence.py, the pipeline's Judge) and the `min_confidence`
threshold, with the real bundled models on a small corpus; the fitting and the candidates
without models."""

import json
import random
import subprocess
import sys

import pytest

from rag import RAG
from rag.answer import confidence as conf
from rag.core.errors import BadSetting
from rag.core.present import MAY_NOT_SAY
from rag.core.settings import Settings

RIGHT = "Who invented the Fresnel lens?"
# on topic (the keepers' passage is retrieved), but the documents do not say
UNANSWERABLE = "What colour were the uniforms of the lighthouse keepers?"


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    from tests.conftest import CORPUS

    root = tmp_path_factory.mktemp("confidence") / "docs"
    for name, text in CORPUS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    RAG(root.parent / "index").ingest([root])
    return root.parent / "index"


@pytest.mark.slow
def test_confidence_on_answers_and_the_threshold(index):
    rag = RAG(index)
    right, doubtful = rag.ask(RIGHT), rag.ask(UNANSWERABLE)
    assert right.found and "Fresnel" in right.short
    assert 0.0 <= doubtful.confidence < right.confidence <= 1.0
    assert right.to_dict()["confidence"] == right.confidence

    # (llama.cpp's numbers move in the third decimal with what its cache held before)
    strict = RAG(index, min_confidence=min(1.0, right.confidence + 0.05)).ask(RIGHT)
    assert not strict.found and strict.note == MAY_NOT_SAY and not strict.citations
    assert strict.confidence == pytest.approx(right.confidence, abs=0.02)  # still told, found stays truthful
    assert strict.text.startswith("The documents may not say this; the closest passages are [1] ")
    assert "lighthouse.md" in strict.text
    lenient = RAG(index, min_confidence=max(0.0, right.confidence - 0.05)).ask(RIGHT)
    assert lenient.found and lenient.text == right.text


@pytest.mark.slow
def test_cli_json_has_the_confidence(index):
    r = subprocess.run([sys.executable, "-m", "rag.cli", "ask", RIGHT, "--index", str(index), "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert 0.0 <= json.loads(r.stdout)["confidence"] <= 1.0


@pytest.mark.slow
def test_scoring_leaves_the_decoder_as_it_was(index):
    """score() reads the prompt through llama.cpp's cache and drops the candidates after: the
    next answer is the same as without it, and the span the decoder wrote scores above others."""
    from rag.answer.prompt import build_messages
    from rag.core.records import Hit

    rag = RAG(index)
    decoder = rag.generator
    hit = Hit(1, 1.0, "lighthouse.md", None, "", "", 0)
    passage = ("The Fresnel lens was invented by Augustin-Jean Fresnel in 1822 to make lighthouse beams "
               "visible for over twenty miles.")
    messages = build_messages(RIGHT, [(hit, passage)], abstain=True)
    other = build_messages("How far were the beams visible?", [(hit, passage)], abstain=True)
    before = "".join(decoder.stream(messages, prefix="Answer:", max_tokens=8, stop=["\n"])).strip()
    scores = decoder.score(messages, "Answer:", [before, "twenty miles", conf.UNKNOWN])
    assert all(s and all(v <= 0 for v in s) for s in scores)
    assert conf.mean(scores[0]) > max(conf.mean(scores[1]), conf.mean(scores[2]))
    decoder.score(other, "Answer:", ["1822", "twenty miles"])  # another prompt in the cache
    assert "".join(decoder.stream(messages, prefix="Answer:", max_tokens=8, stop=["\n"])).strip() == before
    again = decoder.score(messages, "Answer:", [before, "twenty miles", conf.UNKNOWN])
    # the same ranking; the numbers move a little with how llama.cpp batched the prompt
    assert conf.mean(again[0]) > max(conf.mean(again[1]), conf.mean(again[2]))
    assert conf.mean(again[0]) == pytest.approx(conf.mean(scores[0]), abs=0.5)


def test_fit_is_calibrated_on_its_own_kind_of_data():
    rng = random.Random(0)
    rows = []
    for _ in range(4000):
        x = rng.gauss(0, 1)
        rows.append({"support": x, "top_dense": rng.gauss(0, 1), "right": rng.random() < 1 / (1 + 2.718 ** -(2 * x))})
    model = conf.fit(rows[:2000], ("support", "top_dense"))
    w = dict(zip(model["features"], model["weights"]))
    assert 1.5 < w["support"] < 2.5 and abs(w["top_dense"]) < 0.2
    probs = [conf.probability(r, "en", {"en": model}) for r in rows[2000:]]
    assert conf.calibration_error(probs, [r["right"] for r in rows[2000:]]) < 0.05
    # a missing signal counts as its mean: the prediction of the others alone
    assert conf.probability({"support": None, "top_dense": None}, "en", {"en": model}) == pytest.approx(
        1 / (1 + 2.718281828 ** -model["weights"][-1]), abs=1e-6)
    assert conf.probability({"support": 1.0}, "zh", {"en": model}) is None


def test_calibration_error():
    assert conf.calibration_error([0.8] * 10, [True] * 8 + [False] * 2) == pytest.approx(0.0)
    assert conf.calibration_error([0.9] * 10, [False] * 10) == pytest.approx(0.9)


def test_the_shipped_models_give_probabilities():
    assert {"en", "en-rank", "zh", "zh-rank"} <= set(conf.MODELS)
    for key, model in conf.MODELS.items():
        assert len(model["features"]) == len(model["mean"]) == len(model["scale"]) == len(model["weights"]) - 1
        p = conf.probability({f: m for f, m in zip(model["features"], model["mean"])}, key)
        assert 0.0 < p < 1.0


def test_the_decoder_picks_its_own_model():
    """Qwen's answers on a multilingual index get the model fitted on them; Gemma's, and an
    English index's (no "en-qwen" fitted), the encoder's."""
    from rag.models.catalog import MULTILINGUAL, QWEN_ALIASES, decoder_profile, encoder_profile

    def key(encoder, decoder="gemma3-270m"):
        return conf.model_key(encoder_profile(encoder).confidence, decoder_profile(decoder).family)

    assert {"zh-qwen", "zh-qwen-rank"} <= set(conf.MODELS)
    assert key(MULTILINGUAL, QWEN_ALIASES[0]) == "zh-qwen"
    assert key(MULTILINGUAL, "/models/Qwen2.5-Coder-0.5B-Instruct-Q4_K_M.gguf") == "zh-qwen"
    assert key(MULTILINGUAL, "gemma3-270m") == key("intfloat/multilingual-e5-small") == "zh"
    assert key("sentence-transformers/all-MiniLM-L6-v2", "qwen2.5-0.5b") == (
        "en-qwen" if "en-qwen" in conf.MODELS else "en")
    # the Judge's ranking reads "<language>-rank": Qwen's own, not Gemma's
    question, sentence = "长江全长多少公里？", "长江是中国最长的河流，全长约6300公里。"
    scores = [[-0.2, -0.1], [-9.0], [-0.5, -0.4, -0.3]]
    answer = {"top_dense": 0.9, "margin": 0.2, "support": 1.2, "overruled": 0.0, "overlap": 0.5}
    qwen = conf.choose(question, "约6300公里", ["6300公里"], scores, [sentence], answer, "zh-qwen")
    gemma = conf.choose(question, "约6300公里", ["6300公里"], scores, [sentence], answer, "zh")
    without = conf.choose(question, "约6300公里", ["6300公里"], scores, [sentence], answer, "zh-qwen",
                          {k: v for k, v in conf.MODELS.items() if k != "zh-qwen-rank"})
    assert 0 < qwen[1] < 1 and qwen[1] != gemma[1] and qwen[1] != without[1]


def test_calibrate_key_extends_one_language(tmp_path):
    """`calibrate.py fit --key zh-qwen` relabels the dumps' "zh" rows, and refuses other languages."""
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from calibrate import read

    dump = tmp_path / "d.jsonl"
    dump.write_text(json.dumps({"dataset": "x", "language": "zh", "right": True}) + "\n")
    assert [r["language"] for r in read([dump], "zh-qwen")] == ["zh-qwen"]
    assert read([dump])[0]["language"] == "zh"
    with pytest.raises(SystemExit, match="extends one language"):
        read([dump], "en-qwen")


def test_candidates():
    sentence = ("The Fresnel lens was invented by Augustin-Jean Fresnel in 1822 to make lighthouse beams "
                "visible for over twenty miles.")
    found = conf.candidates("When was the Fresnel lens invented?", [sentence])
    assert "1822" in found and "Augustin-Jean Fresnel" in found and "twenty miles" in found
    assert not any(c.lower() in ("fresnel lens", "the fresnel lens", "1822 to") for c in found)
    zh = conf.candidates("长江全长多少公里？", ["长江是中国最长的河流，全长约6300公里。"])
    assert "约6300公里" in zh and "长江" not in zh
    assert len(conf.candidates("What?", [" ".join(f"Word{i} x" for i in range(50))])) == conf.MAX_CANDIDATES


def test_min_confidence_setting():
    assert Settings(min_confidence=0.3).min_confidence == 0.3
    with pytest.raises(BadSetting, match="min_confidence"):
        Settings(min_confidence=1.5)
