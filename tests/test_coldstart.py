"""Cold start: the CPU/ONNX path runs without torch and transformers, and gives the same
token ids and vectors as they do (real models, a real index, new processes)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "PYTHONPATH": str(ROOT)}
HEAVY = ("torch", "transformers", "sentence_transformers")
TEXTS = ["The Fresnel lens was invented in 1822.", "  Leading and trailing spaces.  ", "Café naïve résumé ÅNGSTRÖM",
         "長江是中國最長的河流。", "GPT是由OpenAI开发的生成式预训练模型，发布于2018年。", "mixed 中文 and English 123",
         "word " * 300, ""]


def _child(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_pick_device_looks_for_a_gpu_without_torch():
    found = _child("import json, sys, glob, os\n"
                   "from rag.models.device import pick_device, _gpu_device_files\n"
                   "device = pick_device()\n"
                   "imported = 'torch' in sys.modules\n"
                   "import torch\n"
                   "print(json.dumps({'device': device, 'imported': imported, 'gpu_files': _gpu_device_files(),\n"
                   "                  'torch_says': 'cuda' if torch.cuda.is_available() else 'cpu',\n"
                   "                  'again': pick_device(), 'explicit': pick_device('cpu')}))")
    assert found["device"] == found["torch_says"] == found["again"]  # the same answer as torch's
    assert found["imported"] == found["gpu_files"]  # torch only where a GPU device exists
    assert found["explicit"] == "cpu"


@pytest.mark.slow
@pytest.mark.parametrize("model", ["all-MiniLM-L6-v2", "multilingual-e5-small"])
def test_tokenizer_gives_transformers_ids(model):
    from transformers import AutoTokenizer

    from rag.models.catalog import encoder_path
    from rag.models.encoder import Encoder, FastTokenizer

    root = Path(encoder_path(model))
    ours, theirs = FastTokenizer.load(root), AutoTokenizer.from_pretrained(str(root))
    assert type(Encoder(model).tokenizer) is FastTokenizer  # what chunking gets, too
    for max_length in (128, 512):
        got = ours.batch(TEXTS, max_length)
        want = theirs(TEXTS, padding=True, truncation=True, max_length=max_length, return_tensors="np",
                      return_token_type_ids=True)
        for name in ("input_ids", "attention_mask", "token_type_ids"):
            assert got[name].dtype == np.int64
            assert np.array_equal(got[name], want[name]), (model, name, max_length)
    # counting for chunking: every word piece, no special tokens, no truncation
    want = theirs(TEXTS, add_special_tokens=False, truncation=False)["input_ids"]
    assert ours(TEXTS, add_special_tokens=False)["input_ids"] == want
    assert [len(e.ids) for e in ours.backend_tokenizer.encode_batch(TEXTS, add_special_tokens=False)] != []


@pytest.mark.slow
def test_onnx_vectors_match_sentence_transformers_in_english_and_chinese():
    """fp32 ONNX (tokenised without transformers) against sentence-transformers on PyTorch."""
    from rag.models.encoder import Encoder

    texts = [t for t in TEXTS if t.strip()]
    for model, query in (("all-MiniLM-L6-v2", "Who made the lens for lighthouses?"),
                         ("multilingual-e5-small", "谁开发了GPT？")):
        onnx, torch = Encoder(model, runtime="onnx"), Encoder(model, runtime="torch")
        a, b = onnx.encode(texts), torch.encode(texts)
        assert (np.sum(a * b, axis=1) >= 0.999).all(), (model, np.sum(a * b, axis=1))
        assert float(onnx.encode_query(query) @ torch.encode_query(query)) >= 0.999


@pytest.mark.slow
def test_search_on_a_built_index_imports_neither_torch_nor_transformers(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "lens.md").write_text("# Lighthouses\n\nThe Fresnel lens was invented by Augustin-Jean Fresnel in 1822.\n")
    (docs / "river.txt").write_text("长江是中国最长的河流，全长约6300公里。\n")
    ix = tmp_path / "ix"
    subprocess.run([sys.executable, "-m", "rag.cli", "ingest", str(docs), "--index", str(ix)], env=ENV,
                   check=True, capture_output=True, cwd=tmp_path)
    found = _child("import contextlib, io, json, sys\n"
                   "from rag.cli import main\n"
                   "out = io.StringIO()\n"
                   "with contextlib.redirect_stdout(out):\n"
                   f"    code = main(['search', 'Who invented the Fresnel lens?', '--index', {str(ix)!r}, '--json'])\n"
                   "print(json.dumps({'code': code, 'hits': json.loads(out.getvalue()),\n"
                   f"                  'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))")
    assert found["code"] == 0
    assert "Fresnel" in found["hits"][0]["text"]
    assert found["heavy"] == []
