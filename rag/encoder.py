"""Sentence encoder: texts in, unit-length float32 vectors out (cosine = inner product).

Runtimes (benchmarks/ingest.py and the README have the measurements):
- ONNX Runtime on CPU: the model is exported once (to ~/.cache/rag/onnx) and runs about
  1.75x faster than PyTorch on 2 cores with the same vectors (cosine >= 0.99999); with
  int8 weights for passages (the CPU default) about 1.7x faster again; questions stay fp32,
  which keeps retrieval recall within 0.5 points of all-fp32;
- sentence-transformers on PyTorch: used on a GPU, for models whose pipeline is more than
  transformer + pooling, or when onnxruntime is not installed.
Models load on first use and once per process; the tokenizer alone is enough for chunking."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path

import numpy as np

from .models import cache_dir, cpu_count, encoder_path

log = logging.getLogger(__name__)
_MODELS: dict[tuple, object] = {}  # one loaded model per (path, device, runtime) per process
_MODELS_LOCK = threading.Lock()
QUERIES_KEPT = 16  # question vectors each Encoder keeps


def pick_device(device: str = "auto") -> str:
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


class Encoder:
    def __init__(self, name: str, device: str = "auto", batch_size: int = 64, runtime: str = "auto"):
        self.name = name
        self.path = encoder_path(name)
        self.device = device
        self.batch_size = batch_size
        self.runtime = runtime
        self._model = None
        self._tokenizer = None
        self._queries: dict[str, np.ndarray] = {}  # the last questions' vectors (see encode_query)
        self._queries_lock = threading.Lock()
        self.prompts = _prompts(Path(self.path))  # e.g. e5's "query: " / "passage: "

    def _pick_runtime(self, device: str) -> str:
        if self.runtime != "auto":
            return self.runtime
        if device != "cpu" or not Path(self.path).is_dir() or _pooling(Path(self.path)) is None:
            return "torch"
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "torch"
        return "onnx-int8"

    @property
    def model(self):
        if self._model is None:
            device = pick_device(self.device)
            runtime = self._pick_runtime(device)
            key = (self.path, device, runtime)
            with _MODELS_LOCK:
                if key not in _MODELS:
                    log.info("loading encoder %s on %s (%s)", self.path, device, runtime)
                    if runtime.startswith("onnx"):
                        _MODELS[key] = OnnxEncoder(Path(self.path), int8=runtime == "onnx-int8")
                    else:
                        _MODELS[key] = _load_torch(self.path, device)
                self._model = _MODELS[key]
        return self._model

    @property
    def tokenizer(self):
        """The model's tokenizer, loaded without the weights (chunking needs only this)."""
        if self._model is not None:
            return self._model.tokenizer
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.path)
        return self._tokenizer

    @property
    def max_tokens(self) -> int:
        """Longest input in word pieces, excluding [CLS] and [SEP]."""
        return self.model.max_seq_length - 2

    @property
    def dimension(self) -> int:
        model = self.model
        get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return get()

    def encode(self, texts: list[str]) -> np.ndarray:
        """Passage vectors (batched)."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        if self.prompts.get("passage"):
            texts = [self.prompts["passage"] + t for t in texts]
        vectors = self.model.encode(
            texts, batch_size=self.batch_size, convert_to_numpy=True,
            normalize_embeddings=True, show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def similarities(self, query: str, texts: list[str]) -> np.ndarray:
        """Cosine of the query to each text (texts encoded as passages)."""
        if not texts:
            return np.zeros(0, dtype=np.float32)
        return self.encode(texts) @ self.encode_query(query)

    def encode_query(self, text: str) -> np.ndarray:
        """One question's vector, always at full precision (read-only). The last few are kept:
        an answer encodes its question twice, for retrieval and for the sentence check."""
        with self._queries_lock:
            cached = self._queries.get(text)
        if cached is not None:
            return cached
        model = self.model
        prompted = self.prompts.get("query", "") + text
        if isinstance(model, OnnxEncoder):
            vector = model.encode([prompted], query=True)[0]
        else:
            vector = model.encode([prompted], convert_to_numpy=True, normalize_embeddings=True)[0]
        vector = np.ascontiguousarray(vector, dtype=np.float32)
        vector.setflags(write=False)
        with self._queries_lock:
            if len(self._queries) >= QUERIES_KEPT:
                del self._queries[next(iter(self._queries))]  # the oldest
            self._queries[text] = vector
        return vector


def _prompts(root: Path) -> dict:
    """The prompts a sentence-transformers model was trained with (config_sentence_transformers.json)."""
    try:
        return json.loads((root / "config_sentence_transformers.json").read_text()).get("prompts") or {}
    except (OSError, ValueError):
        return {}


def _load_torch(path: str, device: str):
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model = SentenceTransformer(path, device=device)
    if device == "cpu":
        torch.set_num_threads(cpu_count())
    return model


def _pooling(root: Path) -> str | None:
    """'mean' or 'cls' when the sentence-transformers pipeline is transformer + pooling
    (+ normalize) only, else None (then only sentence-transformers reproduces it)."""
    try:
        modules = json.loads((root / "modules.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or any(k not in ("Normalize",) for k in kinds[2:]):
        return None
    pooling_dir = next(m["path"] for m in modules if m["type"].endswith("Pooling"))
    config = json.loads((root / pooling_dir / "config.json").read_text())
    if config.get("pooling_mode_mean_tokens"):
        return "mean"
    if config.get("pooling_mode_cls_token"):
        return "cls"
    return None


class OnnxEncoder:
    """transformer + pooling + L2 normalisation, exported to ONNX once and run by ONNX Runtime;
    `int8`: weights quantised per channel (dynamic int8), about 1.7x faster again."""

    def __init__(self, root: Path, int8: bool = False):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.root = root
        self.tokenizer = AutoTokenizer.from_pretrained(str(root))
        try:
            self.max_seq_length = json.loads((root / "sentence_bert_config.json").read_text())["max_seq_length"]
        except (OSError, KeyError, json.JSONDecodeError):
            self.max_seq_length = min(512, self.tokenizer.model_max_length)
        options = ort.SessionOptions()
        options.intra_op_num_threads = cpu_count()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no busy-waiting after a run: spinning threads stole the cores from the FAISS search
        # that follows a question's encoding (measured: search 19 ms instead of 7 at 100k)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        path = self._export()
        # Questions always go through fp32: one at a time they cost ~5 ms, and int8 on both
        # sides doubled the error (measured: dense recall within 0.5 points only this way).
        self.query_session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.session = (ort.InferenceSession(str(_quantize(path)), options, providers=["CPUExecutionProvider"])
                        if int8 else self.query_session)
        self.inputs = [i.name for i in self.session.get_inputs()]
        # a fast tokenizer called with padding/truncation options is not safe from two threads
        # at once ("Already borrowed"); sessions are
        self._tokenizer_lock = threading.Lock()
        self.dimension = self.session.get_outputs()[0].shape[-1]

    def get_embedding_dimension(self) -> int:
        return int(self.dimension)

    def _export(self) -> Path:
        weights = sorted(self.root.glob("*.safetensors")) + sorted(self.root.glob("*.bin"))
        stamp = hashlib.sha256(f"{self.root.resolve()}:{[w.stat().st_mtime for w in weights]}".encode()).hexdigest()[:16]
        cache = cache_dir() / "onnx" / stamp
        target = cache / "model.onnx"
        if target.is_file():
            return target
        import torch
        from transformers import AutoModel

        pooling = _pooling(self.root)
        model = AutoModel.from_pretrained(str(self.root)).eval()

        class Pipeline(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask, token_type_ids):
                hidden = self.model(input_ids=input_ids, attention_mask=attention_mask,
                                    token_type_ids=token_type_ids).last_hidden_state
                if pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                return torch.nn.functional.normalize(pooled, dim=-1)

        sample = self.tokenizer(["an example sentence", "another one"], return_tensors="pt", padding=True,
                                return_token_type_ids=True)
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f"model.{os.getpid()}.onnx"
        names = ["input_ids", "attention_mask", "token_type_ids"]
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(Pipeline(), tuple(sample[n] for n in names), str(tmp), input_names=names,
                              output_names=["embedding"], opset_version=17, dynamo=False,
                              dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in names},
                                            "embedding": {0: "batch"}})
        os.replace(tmp, target)
        return target

    def encode(self, texts: list[str], batch_size: int = 64, query: bool = False, **_) -> np.ndarray:
        """Length-sorted batches, so padding wastes little work."""
        session = self.query_session if query else self.session
        order = np.argsort([len(t) for t in texts])
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            with self._tokenizer_lock:
                batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                       max_length=self.max_seq_length, return_tensors="np",
                                       return_token_type_ids=True)
            feed = {n: batch[n].astype(np.int64) for n in self.inputs}
            out[idx] = session.run(None, feed)[0]
        return out


def _quantize(path: Path) -> Path:
    target = path.with_name("model-int8.onnx")
    if not target.is_file():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        tmp = path.with_name(f"model-int8.{os.getpid()}.onnx")
        # its "consider pre-processing" hint is logged on the root logger: drop just that module's records
        hint = logging.Filter()
        hint.filter = lambda record: "onnxruntime" not in record.pathname
        logging.getLogger().addFilter(hint)
        try:
            quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
        finally:
            logging.getLogger().removeFilter(hint)
        os.replace(tmp, target)
    return target
