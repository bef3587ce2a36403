"""The GPT-style decoders, one module per backend behind the two interfaces of `base`:

- `llama.LlamaCpp`: GGUF files through llama.cpp, the default (fast on a laptop CPU);
- `hf.Transformers`: any Hugging Face causal LM directory;
- `openai_chat.ChatServer`: `openai:MODEL` on an OpenAI-compatible server; writes freely.

The local two copy spans under `constraint.CopyConstraint`; "fake" is the tests' scripted
decoder (rag/models/fakes.py). A decoder is made once per process for its settings
(`load_decoder`; `decoder_for` takes them from a Settings) and shared by every `RAG`; its
weights load on first use or `warm_up()`."""

from __future__ import annotations

import importlib.util
import threading

from rag.core.errors import RagError
from rag.models.catalog import FAKE, generator_path
from rag.models.decoders.base import Decoder, LocalModel
from rag.models.decoders.constraint import CopyConstraint

__all__ = ["Decoder", "LocalModel", "CopyConstraint", "load_decoder", "decoder_for"]

_LOADED: dict[tuple, Decoder] = {}
_LOAD_LOCK = threading.Lock()
LOCAL_BACKENDS = ("llama.cpp", "transformers")


def load_decoder(name: str, backend: str = "auto", device: str = "auto", context_window: int = 2048,
                 base_url: str = "", timeout: float = 60.0, deadline: float = 120.0) -> Decoder:
    """The process-wide decoder for these settings (made on first call, then shared). Nothing
    heavy happens here: the weights load on first use or on `warm_up()`."""
    if name.lower().startswith("openai:"):
        backend, name = "openai", name.split(":", 1)[1]
    remote = backend == "openai"
    key = (name, backend, device, context_window) + ((base_url, timeout, deadline) if remote else ())
    with _LOAD_LOCK:
        if key not in _LOADED:
            _LOADED[key] = _make(name, backend, device, context_window, base_url, timeout, deadline)
        return _LOADED[key]


def decoder_for(name: str, settings, backend: str | None = None) -> Decoder:
    """`load_decoder` with the device, context window, model server and timeouts of `settings`."""
    s = settings
    return load_decoder(name, backend or s.backend, s.device, s.context_window, s.openai_base_url,
                        s.request_timeout, s.answer_timeout)


def _make(name, backend, device, context_window, base_url, timeout, deadline) -> Decoder:
    if name == FAKE:  # the tests' scripted decoder (models/fakes.py)
        from rag.models.fakes import FakeDecoder

        return FakeDecoder(n_ctx=context_window)
    if backend == "openai":
        from rag.models.decoders.openai_chat import ChatServer

        return ChatServer(name, base_url, context_window, timeout, deadline)
    path = generator_path(name)
    if backend == "auto":
        backend = "llama.cpp" if path.endswith(".gguf") and importlib.util.find_spec("llama_cpp") else "transformers"
    if backend == "llama.cpp":
        from rag.models.decoders.llama import LlamaCpp

        return LlamaCpp(path, device, context_window)
    if backend == "transformers":
        from rag.models.decoders.hf import Transformers

        return Transformers(path, device, context_window)
    raise RagError(f"unknown decoder backend {backend!r}; use one of auto, {', '.join(LOCAL_BACKENDS)}, openai")
