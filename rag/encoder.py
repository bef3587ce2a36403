"""Sentence encoder: texts in, unit-length float32 vectors out (cosine = inner product).
The model loads on first use and once; the tokenizer alone is enough for chunking."""

from __future__ import annotations

import logging
import threading

import numpy as np

from .models import encoder_path

log = logging.getLogger(__name__)
_MODELS: dict[tuple[str, str], object] = {}  # one loaded model per (path, device) per process
_MODELS_LOCK = threading.Lock()


def pick_device(device: str = "auto") -> str:
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


class Encoder:
    def __init__(self, name: str, device: str = "auto", batch_size: int = 64):
        self.name = name
        self.path = encoder_path(name)
        self.device = device
        self.batch_size = batch_size
        self._model = None
        self._tokenizer = None

    @property
    def model(self):
        if self._model is None:
            device = pick_device(self.device)
            with _MODELS_LOCK:
                if (self.path, device) not in _MODELS:
                    from sentence_transformers import SentenceTransformer
                    from transformers.utils import logging as hf_logging

                    hf_logging.disable_progress_bar()
                    log.info("loading encoder %s on %s", self.path, device)
                    _MODELS[self.path, device] = SentenceTransformer(self.path, device=device)
                    if device == "cpu":
                        _use_all_cores()
                self._model = _MODELS[self.path, device]
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

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        vectors = self.model.encode(
            texts, batch_size=self.batch_size, convert_to_numpy=True,
            normalize_embeddings=True, show_progress_bar=progress,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


def _use_all_cores() -> None:
    import os

    import torch

    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
