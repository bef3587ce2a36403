"""Where things are on this machine: the model cache, an installed package's folder, the
cores this process may use, an index's name. Imports only rag.core.settings (which imports
nothing of this module's): every module may use these."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from rag.core.settings import configured


def cache_dir() -> Path:
    """Where rag keeps what it derives from the bundled models (assembled GGUF, converted e5,
    ONNX exports): the model_cache setting (RAG_MODEL_CACHE), ~/.cache/rag by default."""
    return Path(configured().model_cache).expanduser()


def cpu_count() -> int:
    """Cores this process may use: the threads setting (RAG_THREADS; a Ray worker is given its
    share there), else what a container or taskset allows, which may be fewer than the machine has."""
    return configured().threads or max(1, len(os.sched_getaffinity(0)))


def package_dir(module: str) -> Path | None:
    """Where an installed package lives, without importing it (some bundles import absent deps)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def index_name(spec: str | Path) -> str:
    """The name an index goes by over HTTP: `handbook` for `handbook` or `/data/handbook`."""
    return Path(str(spec).rstrip("/")).name or str(spec)
