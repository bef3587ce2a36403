"""Every knob rag has, with its default, in one dataclass.

Values come from (later wins): the defaults below, `rag.toml` in the working directory
(or the file named by RAG_CONFIG), environment variables `RAG_<FIELD>`, and explicit
keyword arguments (the CLI's flags)."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path


@dataclass
class Settings:
    # Models
    # auto: chosen per index from its first documents: all-MiniLM-L6-v2 for English (faster and
    # better on English), multilingual-e5-small for Chinese and other languages (README table)
    encoder: str = "auto"
    generator: str = "gemma3-270m"  # measured best and fastest of the bundled decoders (README)
    device: str = "auto"  # auto | cpu | cuda
    encoder_runtime: str = "auto"  # auto (int8 ONNX Runtime on CPU, PyTorch on GPU) | onnx-int8 | onnx | torch
    # Chunking (word pieces of the encoder's tokenizer; README's chunk-size table, benchmarks/retrieval.py)
    chunk_size: int = 128
    chunk_overlap: int = 16
    # Ingest
    max_file_mb: float = 50.0
    max_inflated_mb: float = 256.0  # an archive member (.docx part) may inflate to this
    max_text_mb: float = 64.0  # text extracted from one file
    max_chunk_chars: int = 2000  # also when the text has no word boundaries
    max_json_depth: int = 64
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
    fusion_weight: float = 0.4  # hybrid: weight of the rescaled cosine against BM25 (benchmarks/fusion.py: SQuAD, COVID-QA, CMRC)
    candidates: int = 50  # hybrid: passages taken from each method before fusing
    # Answering
    backend: str = "auto"  # auto | llama.cpp | transformers | openai (or generator "openai:MODEL")
    openai_base_url: str = "http://127.0.0.1:8000/v1"  # an OpenAI-compatible server (llama.cpp, vLLM, Ollama: :11434/v1)
    request_timeout: float = 60.0  # seconds to wait for a server's reply
    max_tokens: int = 48
    context_window: int = 2048
    temperature: float = 0.0
    copy: bool = True  # span-constrained decoding: the answer is copied from the passages
    min_score: float | None = None  # top passage cosine below this -> "not found"; None: calibrated per encoder (models.MIN_SCORE)
    sentence_margin: float = 0.10  # the encoder overrules the decoder's sentence when another is closer by this (cosine)
    sentence_word_weight: float = 0.6  # the sentence check adds this times the share of question words it holds (README table)
    min_support: float = 0.0  # supporting sentence's score below this -> "not found" (off: no threshold paid off, README)
    abstain: str = "auto"  # on | off | auto: a second example answers "unknown" (on for Gemma, measured)
    diverse: bool = True  # ask: sources are not near-copies of each other
    answer_k: int = 1  # passages in the decoder's prompt (measured best for the tiny default decoders)

    def replace(self, **overrides) -> "Settings":
        """A copy with the given non-None fields changed."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    @classmethod
    def load(cls, **overrides) -> "Settings":
        values: dict = {}
        config = Path(os.environ.get("RAG_CONFIG", "rag.toml"))
        if config.is_file():
            with config.open("rb") as f:
                values.update(tomllib.load(f))
        for f in fields(cls):
            env = os.environ.get(f"RAG_{f.name.upper()}")
            if env is not None:
                values[f.name] = env
        known = {f.name: f for f in fields(cls)}
        typed = {}
        for name, value in values.items():
            if name in known:
                kind = type(getattr(cls(), name))
                if kind is type(None):  # optional numbers: given means a number
                    kind = float
                typed[name] = kind(value) if kind is not bool else str(value).lower() in ("1", "true", "yes")
        return cls(**typed).replace(**overrides)
