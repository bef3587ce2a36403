"""Every knob rag has, with its default, in one dataclass.

Values come from (later wins): the defaults below, `rag.toml` in the working directory
(or the file named by RAG_CONFIG), environment variables `RAG_<FIELD>`, and explicit
keyword arguments (the CLI's flags). Code with no Settings at hand reads `configured()`."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from rag.core.errors import BadSetting

MODES = ("dense", "keyword", "hybrid")  # retrieval: FAISS, SQLite FTS5 BM25, or both fused


@dataclass
class Settings:
    # Models
    # auto: chosen per index from its first documents: all-MiniLM-L6-v2 for English (faster and
    # better on English), multilingual-e5-small for Chinese and other languages (README table)
    encoder: str = "auto"
    # auto: Qwen2.5-0.5B on a multilingual (Chinese...) index where installed, else Gemma 3 270M
    # (models.catalog.choose_generator: measured per language) | gemma3-270m | qwen2.5-0.5b | smollm2 | FILE | openai:MODEL
    generator: str = "auto"
    # the decoder that translates a question in another script (Chinese, Russian...) into English
    # before an English-only index searches it (rag/answer/translate.py). auto: Qwen2.5-1.5B where installed,
    # else -0.5B, else off (models.catalog.choose_translator) | off | any generator name, FILE or openai:MODEL
    translator: str = "auto"
    device: str = "auto"  # auto | cpu | cuda
    # This machine (read where no Settings is at hand through `configured()`: rag/core/paths.py)
    threads: int = 0  # cores for the encoder, decoder and OCR; 0: every core this process may use (a Ray worker: its share)
    model_cache: str = "~/.cache/rag"  # what rag derives from the bundled models (assembled GGUF, converted e5, ONNX)
    allow_downloads: bool = False  # fetch a model name from the Hugging Face hub (never, unless this is on)
    # the llama.cpp build the decoder loads (rag/models/kernels.py). auto: the fastest one built for
    # this CPU that ran its probe here (avx512 on AVX-512 VNNI+BF16 CPUs, else portable) | portable | avx512 | amx
    llama_variant: str = "auto"
    # The doors
    index: str = "default"  # the index the CLI and the web page use without --index (a name under indexes/ or a path)
    api_key: str = field(default="", repr=False)  # `rag ask --server`: the key a `rag serve` wants (never a flag: `ps` shows those)
    # auto: PyTorch on a GPU; on a CPU with native bf16 (AVX512_BF16, AMX) OpenVINO bf16 for ingest
    # batches, else int8 ONNX Runtime for passages (questions fp32) | onnx-openvino | onnx-int8 | onnx | torch
    encoder_runtime: str = "auto"
    # Chunking (word pieces of the encoder's tokenizer; README's chunk-size table, benchmarks/retrieval.py)
    chunk_size: int = 128
    chunk_overlap: int = 16
    # Ingest
    max_file_mb: float = 50.0
    max_inflated_mb: float = 256.0  # an archive member (.docx part) may inflate to this
    max_text_mb: float = 64.0  # text extracted from one file
    max_ocr_seconds: float = 300.0  # OCR of one file's scanned pages; pages past it are reported skipped
    max_parse_seconds: float = 120.0  # parsing one archive-based file (.docx .pptx .xlsx .ods .epub), OCR aside
    max_chunk_chars: int = 2000  # also when the text has no word boundaries
    max_json_depth: int = 64
    # a file that splits into more fails with this reason (bounded work per file); a 100,000-row
    # sheet makes 49,000 passages and ingests at 1.2 GB peak (benchmarks/sheets.py)
    max_chunks_per_file: int = 100_000
    follow_links: bool = False  # follow symlinks out of an ingested folder
    encode_batch_size: int = 64
    commit_every_chunks: int = 4096  # a crash loses at most this much finished work
    ray_cpus_per_worker: int = 1  # --ray: cores per encoding actor (actors = cluster CPUs / this)
    # Index type: exact search up to this many chunks, then IVF with nprobe calibrated for
    # recall@10 >= 0.98 (exact search alone took 7 of the 15 ms budget at 100k; benchmarks/scale.py)
    ann_threshold: int = 50_000
    # Retrieval
    k: int = 4
    mode: str = "hybrid"  # dense | keyword | hybrid
    fusion_weight: float | None = None  # hybrid: weight of the rescaled cosine against BM25; None: the encoder profile (models.catalog: MiniLM 0.4, e5 0.6)
    candidates: int = 50  # hybrid: passages taken from each method before fusing
    # Answering
    backend: str = "auto"  # auto | llama.cpp | transformers | openai (or generator "openai:MODEL")
    openai_base_url: str = "http://127.0.0.1:8000/v1"  # an OpenAI-compatible server (llama.cpp, vLLM, Ollama: :11434/v1)
    request_timeout: float = 60.0  # seconds a model server may send nothing (per read)
    answer_timeout: float = 120.0  # seconds a model server may take for a whole answer
    max_tokens: int = 48
    context_window: int = 2048
    temperature: float = 0.0
    copy: bool = True  # span-constrained decoding: the answer is copied from the passages
    min_score: float | None = None  # top passage cosine below this -> "not found"; None: the encoder profile (models.catalog)
    sentence_margin: float = 0.10  # the encoder overrules the decoder's sentence when another is closer by this (cosine)
    sentence_word_weight: float = 0.6  # the sentence check adds this times the share of question words it holds (README table)
    min_support: float = 0.0  # supporting sentence's score below this -> "not found" (off: no threshold paid off, README)
    min_confidence: float = 0.06  # answers less likely right than this -> "the documents may not say this" (benchmarks/abstain.py: the most abstention with <= 5% false "not found" on SQuAD v1.1, v2.0 and CMRC)
    abstain: str = "auto"  # on | off | auto: a second example answers "unknown" (on for Gemma, measured)
    diverse: bool = True  # ask: sources are not near-copies of each other
    # passages in the decoder's prompt; None: the decoder's profile (models.catalog: 1 for the tiny
    # local decoders, measured best; several for a chat model behind openai:)
    answer_k: int | None = None
    # Serving (`rag serve`): what one request may ask for; over a limit is a JSON error, never a
    # slow server (docs/api.md). Its flags --queue and --deadline override serve_queue and serve_deadline.
    serve_max_body_bytes: int = 1 * 2**20  # a JSON request's body
    serve_max_upload_bytes: int = 64 * 2**20  # one multipart upload (each file also under max_file_mb)
    serve_max_question_chars: int = 4000  # the question of a chat, the query of a search
    serve_max_history: int = 32  # earlier messages of a conversation
    serve_max_message_chars: int = 16000  # each earlier message
    serve_max_k: int = 50  # passages a chat or search may ask for
    serve_max_tokens: int = 512  # a chat's max_tokens is cut to this
    serve_max_embed_inputs: int = 256  # texts in one embeddings request
    serve_max_embed_chars: int = 8000  # each of those texts
    serve_queue: int = 8  # questions in line for the decoder beyond the one it answers; more get 429
    serve_deadline: float = 120.0  # seconds one request may take in all, waiting included
    serve_search_threads: int = 4  # searches, embeddings and index info run in this many threads, beside generation
    # Connections: a client that opened one and sent no complete request headers in
    # serve_header_timeout seconds is closed; past serve_max_connections open at once the
    # oldest that has sent no complete request is closed to let the new one in (idle half-sent
    # requests cannot use up the process's files: never more than its open-file limit allows)
    serve_max_connections: int = 512
    serve_header_timeout: float = 10.0
    serve_keep_alive: float = 5.0  # seconds an idle keep-alive connection stays open after a response
    serve_backlog: int = 128  # connections the kernel holds before they are accepted (and accepted at once)

    def __post_init__(self):
        """Every Settings is valid, however it was made (defaults, rag.toml, RAG_*, arguments,
        `replace`): a bad value is refused with its name, the value and what is allowed."""
        for f in fields(self):
            object.__setattr__(self, f.name, check(f.name, getattr(self, f.name)))
        if self.chunk_overlap >= self.chunk_size:
            raise BadSetting(f"chunk_overlap = {self.chunk_overlap} must be smaller than "
                             f"chunk_size = {self.chunk_size}")

    def replace(self, **overrides) -> "Settings":
        """A copy with the given non-None fields changed."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    @classmethod
    def load(cls, **overrides) -> "Settings":
        values: dict = {}
        sources: dict = {}
        known = {f.name for f in fields(cls)}
        config = Path(os.environ.get("RAG_CONFIG", "rag.toml"))
        if config.is_file():
            try:
                with config.open("rb") as f:
                    loaded = tomllib.load(f)
            except tomllib.TOMLDecodeError as e:
                raise BadSetting(f"{config} is not valid TOML ({e})") from None
            except OSError as e:
                raise BadSetting(f"cannot read {config}: {e.strerror or e}") from None
            unknown = sorted(set(loaded) - known)
            if unknown:
                raise BadSetting(f"{config}: unknown setting {unknown[0]!r} (the settings are listed "
                                 f"in rag/core/settings.py and docs/usage.md)")
            values.update(loaded)
            sources.update({name: str(config) for name in loaded})
        for name in known:
            env = os.environ.get(f"RAG_{name.upper()}")
            if env is not None:
                values[name], sources[name] = env, f"RAG_{name.upper()}"
        typed = {}
        for name, value in values.items():
            try:
                typed[name] = check(name, value)
            except BadSetting as e:
                raise BadSetting(f"{e} (from {sources[name]})") from None
        return cls(**typed).replace(**overrides)


def configured() -> Settings:
    """The settings rag.toml and RAG_* give this process, for code with no Settings at hand
    (paths.cache_dir and cpu_count, the model catalog, the HTTP client). Loaded once, and again
    when a RAG_* variable, the working directory's rag.toml or the file RAG_CONFIG names changes."""
    config = Path(os.environ.get("RAG_CONFIG", "rag.toml"))
    try:
        stat = config.stat()
        stamp = (str(config.resolve()), stat.st_mtime_ns, stat.st_size)
    except OSError:
        stamp = None
    return _configured(tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("RAG_"))), stamp)


@functools.lru_cache(maxsize=4)
def _configured(environment: tuple, config: tuple | None) -> Settings:
    return Settings.load()


# --- validation ---------------------------------------------------------------------------

INF = math.inf
# name -> allowed range (numbers, inclusive) or choices (strings). Numbers without an entry
# must be finite; a new setting gets its range here.
RANGES: dict[str, tuple] = {
    "chunk_size": (8, 8192), "chunk_overlap": (0, 8191),
    "max_file_mb": (0.001, 1e6), "max_inflated_mb": (0.001, 1e6), "max_text_mb": (0.001, 1e6), "max_ocr_seconds": (0.001, 86400.0),
    "max_parse_seconds": (0.001, 86400.0),
    "max_chunk_chars": (64, 10_000_000), "max_json_depth": (1, 900),  # CPython's parser stops near 1000
    "max_chunks_per_file": (1, 100_000_000),
    "encode_batch_size": (1, 65536), "commit_every_chunks": (1, 10**12), "ray_cpus_per_worker": (1, 4096),
    "ann_threshold": (1, 10**12),
    "threads": (0, 4096),
    "k": (1, 1000), "fusion_weight": (0.0, 1.0), "candidates": (1, 100_000),
    "request_timeout": (0.001, 86400.0), "answer_timeout": (0.001, 86400.0), "max_tokens": (1, 1_000_000), "context_window": (16, 10_000_000),
    "temperature": (0.0, 2.0), "min_score": (-1.0, 1.0), "sentence_margin": (0.0, 2.0),
    "sentence_word_weight": (0.0, 10.0), "min_support": (-1.0, 10.0), "min_confidence": (0.0, 1.0), "answer_k": (1, 1000),
    "serve_max_body_bytes": (1024, 2**40), "serve_max_upload_bytes": (1024, 2**40),
    "serve_max_question_chars": (1, 10**8), "serve_max_history": (0, 10**6), "serve_max_message_chars": (1, 10**9),
    "serve_max_k": (1, 100_000), "serve_max_tokens": (1, 1_000_000), "serve_max_embed_inputs": (1, 10**6),
    "serve_max_embed_chars": (1, 10**9), "serve_queue": (0, 10**6), "serve_deadline": (0.001, 86400.0),
    "serve_search_threads": (1, 1024), "serve_max_connections": (8, 10**6), "serve_header_timeout": (0.1, 3600.0),
    "serve_keep_alive": (0.1, 3600.0), "serve_backlog": (1, 65535),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "encoder_runtime": ("auto", "onnx-openvino", "onnx-int8", "onnx", "torch"),
    "mode": MODES,
    "backend": ("auto", "llama.cpp", "transformers", "openai"),
    "abstain": ("auto", "on", "off", "1", "0", "true", "false", "yes", "no"),
}
PATTERNS: dict[str, tuple[str, str]] = {  # name -> (regex, what it means)
    "device": (r"auto|cpu|mps|cuda(:\d+)?", "auto, cpu, cuda or cuda:N"),
    "openai_base_url": (r"https?://\S+", "an http:// or https:// address"),
}
TRUE, FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")
# settings whose default is None ("decided per model") and whose values are not plain numbers
OPTIONAL_KINDS: dict[str, type] = {"answer_k": int}
_DEFAULTS: dict = {}


def _default(name: str):
    if not _DEFAULTS:
        _DEFAULTS.update({f.name: f.default for f in fields(Settings)})
    return _DEFAULTS[name]


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check(name: str, value):
    """`value` (from TOML, the environment or Python) as the type of setting `name`, or
    BadSetting naming the setting, the value and what is allowed."""
    default = _default(name)
    kind = OPTIONAL_KINDS.get(name, float) if default is None else float if isinstance(default, float) else type(default)
    if default is None and (value is None or (isinstance(value, str) and value.strip().lower() in ("", "none"))):
        return None
    bad = lambda allowed: BadSetting(f"setting {name} = {_show(value)}: must be {allowed}")  # noqa: E731
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in TRUE + FALSE:
            return value.strip().lower() in TRUE
        raise bad("true or false (1/0, yes/no, on/off)")
    if kind is str:
        if not isinstance(value, str) or not (value.strip() or default == ""):  # "": may be empty (api_key)
            raise bad("a string" if default == "" else "a non-empty string" if name not in CHOICES
                      else "one of " + ", ".join(CHOICES[name]))
        value = value.strip()
        if name in CHOICES and value.lower() not in CHOICES[name]:
            raise bad("one of " + ", ".join(CHOICES[name]))
        if name in PATTERNS and not re.fullmatch(PATTERNS[name][0], value):
            raise bad(PATTERNS[name][1])
        return value.lower() if name in CHOICES else value
    lo, hi = RANGES.get(name, (-INF, INF))
    span = (f"a whole number from {_fmt(lo)} to {_fmt(hi)}" if kind is int and math.isfinite(lo) else
            f"a number from {_fmt(lo)} to {_fmt(hi)}" if math.isfinite(lo) else
            "a whole number" if kind is int else "a finite number")
    number = _number(value, kind)
    if number is None or not lo <= number <= hi:
        raise bad(span)
    return number


def _fmt(x) -> str:
    return f"{x:,.10g}"


def _number(value, kind):
    """int/float from a number or its text; None when it is none (bools, nan, inf, 1.5 for a whole number)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        try:
            value = int(text) if kind is int and re.fullmatch(r"[+-]?\d+", text) else float(text)
        except ValueError:
            return None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    if kind is int:
        if value != int(value):
            return None
        return int(value)
    return float(value)
