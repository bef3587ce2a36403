"""Where things are on this machine: the model cache, an installed package's folder, the
cores this process may use, an index's name. No imports of rag's own: every module may use these."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path


def cache_dir() -> Path:
    """Where rag keeps what it derives from the bundled models (assembled GGUF, converted e5,
    ONNX exports): ~/.cache/rag, or RAG_MODEL_CACHE."""
    return Path(os.environ.get("RAG_MODEL_CACHE", Path.home() / ".cache" / "rag"))


def cpu_count() -> int:
    """Cores this process may use: a container or taskset may allow fewer than the machine
    has, and a Ray worker is given its share in RAG_THREADS."""
    return int(os.environ.get("RAG_THREADS") or 0) or max(1, len(os.sched_getaffinity(0)))


def package_dir(module: str) -> Path | None:
    """Where an installed package lives, without importing it (some bundles import absent deps)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def index_name(spec: str | Path) -> str:
    """The name an index goes by over HTTP: `handbook` for `handbook` or `/data/handbook`."""
    return Path(str(spec).rstrip("/")).name or str(spec)
