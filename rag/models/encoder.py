"""Sentence encoder: texts in, unit-length float32 vectors out (cosine = inner product).

Runtimes (benchmarks/ingest.py and the README have the measurements):
- ONNX Runtime on CPU: the model is exported once (to ~/.cache/rag/onnx) and runs about
  1.75x faster than PyTorch on 2 cores with the same vectors (cosine >= 0.99999); with
  int8 weights for passages (the CPU default) about 1.7x faster again; questions stay fp32,
  which keeps retrieval recall within 0.5 points of all-fp32;
- OpenVINO in bf16 for ingest-sized batches of passages, where the CPU computes bf16 natively
  (AVX512_BF16 or AMX) and openvino is installed: faster than int8 ONNX Runtime there, and its
  vectors stay those of fp32 (cosine >= 0.9998; benchmarks/encoder_runtimes.py). Smaller calls
  (a few passages, an answer's sentences) then run on the fp32 session, so every vector of
  such an index is fp32's to within that cosine;
- sentence-transformers on PyTorch: used on a GPU, for models whose pipeline is more than
  transformer + pooling, or when onnxruntime is not installed.
Models load on first use and once per process; the tokenizer alone is enough for chunking.
The ONNX path imports neither torch nor transformers (about 2 s of every cold `rag search`):
the tokenizer is the model's tokenizer.json run by `tokenizers` (the same ids), CUDA is looked
for by its device files before torch is asked, and the passage (int8) session loads only when
passages are encoded."""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import logging
import os
import threading
from pathlib import Path

import numpy as np

from rag.core.paths import cache_dir, cpu_count
from rag.models.catalog import FAKE, encoder_path
from rag.models.device import openvino_bf16, pick_device

log = logging.getLogger(__name__)
_MODELS: dict[tuple, object] = {}  # one loaded model per (path, device, runtime) per process
_MODELS_LOCK = threading.Lock()
QUERIES_KEPT = 16  # question vectors each Encoder keeps
BULK_TEXTS = 128  # passages per encode() from which the OpenVINO path pays for its first compile


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
        if importlib.util.find_spec("onnxruntime") is None:
            return "torch"
        return "onnx-openvino" if openvino_bf16() else "onnx-int8"

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
                        _MODELS[key] = OnnxEncoder(Path(self.path), int8=runtime == "onnx-int8",
                                                   openvino=runtime == "onnx-openvino")
                    else:
                        _MODELS[key] = _load_torch(self.path, device)
                self._model = _MODELS[key]
        return self._model

    @property
    def tokenizer(self):
        """The model's tokenizer, loaded without the weights (chunking needs only this): its
        tokenizer.json run by `tokenizers` where there is one, else transformers' AutoTokenizer."""
        if self._model is not None:
            return self._model.tokenizer
        if self._tokenizer is None:
            if (Path(self.path) / "tokenizer.json").is_file():
                self._tokenizer = FastTokenizer.load(Path(self.path))
            else:
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


def load_encoder(name: str, device: str = "auto", batch_size: int = 64, runtime: str = "auto"):
    """The encoder called `name`: a real one (its model loads on first use), or for "fake"
    the tests' deterministic one (models/fakes.py)."""
    if name == FAKE:
        from rag.models.fakes import FakeEncoder

        return FakeEncoder()
    return Encoder(name, device, batch_size, runtime)


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


class FastTokenizer:
    """A model's tokenizer.json run by the `tokenizers` library directly: the ids, attention masks
    and token types that transformers' fast tokenizer gives for the same calls (tested), without
    importing transformers. Where the directory has no tokenizer.json, or its tokenizer_config.json
    asks for something the file does not hold (a lower-casing switch, an added token), the
    backend comes from transformers instead, so the ids never differ."""

    def __init__(self, backend, pad_token: str, model_max_length: int, padding_side: str = "right",
                 truncation_side: str = "right"):
        self.backend_tokenizer = backend  # what chunking counts with (rag.chunking copies it)
        self.pad_token = pad_token
        self.pad_token_id = backend.token_to_id(pad_token) if pad_token is not None else None
        if self.pad_token_id is None:
            self.pad_token, self.pad_token_id = pad_token, 0
        self.model_max_length = model_max_length
        self.padding_side = padding_side
        self.truncation_side = truncation_side
        self._batchers: dict[int, object] = {}  # max_length -> a copy set to truncate and pad
        self._plain = None  # a copy that neither truncates nor pads
        self._lock = threading.Lock()

    @classmethod
    def load(cls, root: Path) -> "FastTokenizer":
        try:
            config = json.loads((root / "tokenizer_config.json").read_text())
        except (OSError, ValueError):
            config = {}
        sides = {k: config[k] for k in ("padding_side", "truncation_side") if config.get(k) in ("left", "right")}
        max_length = config.get("model_max_length")
        max_length = int(max_length) if isinstance(max_length, (int, float)) and max_length < 1e12 else 10**30
        file = root / "tokenizer.json"
        if file.is_file():
            from tokenizers import Tokenizer

            backend = Tokenizer.from_file(str(file))
            if _agrees(backend, config):
                return cls(backend, _token(config.get("pad_token")), max_length, **sides)
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(str(root))
        if not getattr(hf, "is_fast", False):
            raise ValueError(f"{root}: the ONNX encoder needs a fast (tokenizers) tokenizer")
        return cls(hf.backend_tokenizer, hf.pad_token, hf.model_max_length, hf.padding_side, hf.truncation_side)

    def batch(self, texts: list[str], max_length: int) -> dict[str, np.ndarray]:
        """As transformers' `tokenizer(texts, padding=True, truncation=True, max_length=...,
        return_tensors="np", return_token_type_ids=True)`, as int64."""
        batcher = self._batchers.get(max_length)
        if batcher is None:
            with self._lock:
                # a copy configured once and never changed again: a tokenizer whose truncation
                # is set per call is not safe from two threads at once ("Already borrowed")
                batcher = copy.deepcopy(self.backend_tokenizer)
                batcher.enable_truncation(max_length, stride=0, strategy="longest_first",
                                          direction=self.truncation_side)
                batcher.enable_padding(direction=self.padding_side, pad_id=self.pad_token_id, pad_type_id=0,
                                       pad_token=self.pad_token or "[PAD]")
                self._batchers[max_length] = batcher
        encodings = batcher.encode_batch(list(texts), add_special_tokens=True)
        return {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64)}

    def __call__(self, texts, add_special_tokens: bool = True, **_) -> dict:
        """Word-piece ids without truncation or padding, as transformers' `tokenizer(texts)["input_ids"]`."""
        plain = self._plain
        if plain is None:
            with self._lock:
                plain = copy.deepcopy(self.backend_tokenizer)
                plain.no_truncation()
                plain.no_padding()
                self._plain = plain
        if isinstance(texts, str):
            encoding = plain.encode(texts, add_special_tokens=add_special_tokens)
            return {"input_ids": encoding.ids, "attention_mask": encoding.attention_mask}
        encodings = plain.encode_batch(list(texts), add_special_tokens=add_special_tokens)
        return {"input_ids": [e.ids for e in encodings], "attention_mask": [e.attention_mask for e in encodings]}


def _token(value) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    return value.get("content") if isinstance(value, dict) else value


def _agrees(backend, config: dict) -> bool:
    """Whether tokenizer.json alone gives transformers' ids: transformers rebuilds a BERT
    normaliser whose switches differ from tokenizer_config.json's, and adds the tokens listed
    there that the file lacks."""
    for entry in (config.get("added_tokens_decoder") or {}).values():
        if backend.token_to_id(_token(entry)) is None:
            return False
    for key in ("pad_token", "unk_token", "cls_token", "sep_token", "bos_token", "eos_token", "mask_token"):
        if config.get(key) is not None and backend.token_to_id(_token(config[key])) is None:
            return False
    normalizer = backend.normalizer
    if normalizer is not None and type(normalizer).__name__ == "BertNormalizer":
        state = json.loads(normalizer.__getstate__())
        wanted = {"lowercase": config.get("do_lower_case", True),
                  "strip_accents": config.get("strip_accents"),
                  "handle_chinese_chars": config.get("tokenize_chinese_chars", True)}
        if any(state.get(k, v) != v for k, v in wanted.items()):
            return False
    return True


class OnnxEncoder:
    """transformer + pooling + L2 normalisation, exported to ONNX once and run by ONNX Runtime;
    `int8`: weights quantised per channel (dynamic int8), about 1.7x faster again. Questions
    run on the fp32 session, loaded first; the int8 one loads when passages are first encoded
    (a search never needs it)."""

    def __init__(self, root: Path, int8: bool = False, openvino: bool = False):
        self.root = root
        self.int8 = int8 and not openvino
        self.openvino = openvino  # OpenVINO bf16 for BULK_TEXTS passages or more; else fp32
        self._bulk = None
        self.tokenizer = FastTokenizer.load(root)
        try:
            self.max_seq_length = json.loads((root / "sentence_bert_config.json").read_text())["max_seq_length"]
        except (OSError, KeyError, json.JSONDecodeError):
            self.max_seq_length = min(512, self.tokenizer.model_max_length)
        self.path = self._export()
        # Questions always go through fp32: one at a time they cost ~5 ms, and int8 on both
        # sides doubled the error (measured: dense recall within 0.5 points only this way).
        self.query_session = self._session(self.path)
        self._passage_session = None if self.int8 else self.query_session
        self._session_lock = threading.Lock()
        self.inputs = [i.name for i in self.query_session.get_inputs()]
        self.dimension = self.query_session.get_outputs()[0].shape[-1]

    @staticmethod
    def _session(path: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = cpu_count()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no busy-waiting after a run: spinning threads stole the cores from the FAISS search
        # that follows a question's encoding (measured: search 19 ms instead of 7 at 100k)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    @property
    def session(self):
        """The passage session (int8 when asked for), loaded on first use."""
        if self._passage_session is None:
            with self._session_lock:
                if self._passage_session is None:
                    self._passage_session = self._session(_quantize(self.path))
        return self._passage_session

    @property
    def bulk(self):
        """The OpenVINO model for large batches of passages, compiled on first use (about 1.4 s,
        less once its cache in ~/.cache/rag/openvino holds it)."""
        if self._bulk is None:
            with self._session_lock:
                if self._bulk is None:
                    import openvino as ov

                    self._bulk = ov.Core().compile_model(str(self.path), "CPU", {
                        "INFERENCE_NUM_THREADS": cpu_count(), "PERFORMANCE_HINT": "LATENCY",
                        "INFERENCE_PRECISION_HINT": "bf16", "CACHE_DIR": str(cache_dir() / "openvino")})
        return self._bulk

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

        sample = self.tokenizer.batch(["an example sentence", "another one"], self.max_seq_length)
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f"model.{os.getpid()}.onnx"
        names = ["input_ids", "attention_mask", "token_type_ids"]
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(Pipeline(), tuple(torch.from_numpy(sample[n]) for n in names), str(tmp),
                              input_names=names, output_names=["embedding"], opset_version=17, dynamo=False,
                              dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in names},
                                            "embedding": {0: "batch"}})
        os.replace(tmp, target)
        return target

    def encode(self, texts: list[str], batch_size: int = 64, query: bool = False, **_) -> np.ndarray:
        """Length-sorted batches, so padding wastes little work."""
        if self.openvino and not query and len(texts) >= BULK_TEXTS:
            request = self.bulk.create_infer_request()  # one per call: safe from several threads
            run = lambda feed: request.infer(feed)[0]  # noqa: E731
        else:
            session = self.query_session if query else self.session
            run = lambda feed: session.run(None, feed)[0]  # noqa: E731
        order = np.argsort([len(t) for t in texts])
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            batch = self.tokenizer.batch([texts[i] for i in idx], self.max_seq_length)
            out[idx] = run({n: batch[n] for n in self.inputs})
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
