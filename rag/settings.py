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
    encoder: str = "all-MiniLM-L6-v2"
    generator: str = "gemma3-270m"  # measured best and fastest of the bundled decoders (README)
    device: str = "auto"  # auto | cpu | cuda
    encoder_runtime: str = "auto"  # auto (int8 ONNX Runtime on CPU, PyTorch on GPU) | onnx-int8 | onnx | torch
    # Chunking (word pieces of the encoder's tokenizer; chosen by benchmarks/chunking.py)
    chunk_size: int = 128
    chunk_overlap: int = 16
    # Ingest
    max_file_mb: float = 50.0
    encode_batch_size: int = 64
    commit_every_chunks: int = 4096  # a crash loses at most this much finished work
    # Index type: exact search up to this many chunks, then IVF with nprobe calibrated for
    # recall@10 >= 0.98 (exact search alone took 7 of the 15 ms budget at 100k; benchmarks/scale.py)
    ann_threshold: int = 50_000
    # Retrieval
    k: int = 4
    mode: str = "hybrid"  # dense | keyword | hybrid
    # Answering
    backend: str = "auto"  # auto | llama.cpp | transformers
    max_tokens: int = 48
    context_window: int = 2048
    temperature: float = 0.0
    copy: bool = True  # span-constrained decoding: the answer is copied from the passages
    min_score: float = 0.20  # top passage cosine below this -> "not found" (calibrated, see README)
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
                typed[name] = kind(value) if kind is not bool else str(value).lower() in ("1", "true", "yes")
        return cls(**typed).replace(**overrides)
