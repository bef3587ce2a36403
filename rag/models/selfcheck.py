"""Is the llama.cpp in this environment safe on this CPU, and which build runs?

llama.cpp compiled with `-march=native` on an Intel Xeon with AMX (Sapphire Rapids and later)
crashes with SIGSEGV in `ggml_backend_amx_mul_mat` at the first question. `make setup` installs
a portable build (AVX2, no AMX kernels) and, where the CPU has the flags, faster ones beside it
(rag/models/kernels.py: chosen when the decoder loads, only after each ran a probe here). This
module checks that at run time:

- `python -m rag.models.selfcheck [--json]` prints the CPU, the variant chosen and why, the
  library's compiled features and a verdict; it exits 1 when the library carries AMX kernels
  that no probe saw run on this CPU (`make setup` runs it, so a wrong build fails the install
  loudly instead of crashing later);
- `llama_load_params()` is what the decoder loads under: if the library does carry AMX kernels,
  this CPU has AMX and no probe proved them here, weights load without llama.cpp's extra buffer
  types, the only path into those kernels (the workaround that made such a build answer)."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from contextlib import contextmanager
from functools import cache

from rag.models.device import cpu_info

log = logging.getLogger(__name__)
_PATCH_LOCK = threading.Lock()


def cpu() -> dict:
    """The CPU's model name and its SIMD/AMX flags."""
    name, flags = cpu_info()
    simd = sorted(f for f in flags if re.match(r"(avx|amx|fma|f16c|bmi2)", f))
    return {"model": name, "flags": simd, "amx": any(f.startswith("amx") for f in flags)}


@cache
def llama_features() -> dict[str, bool]:
    """What the loaded libggml was compiled with, from llama.cpp's system info
    (e.g. 'CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | ... | AMX_INT8 = 0 | REPACK = 1')."""
    from rag.models.kernels import activate

    activate()
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode(errors="replace")
    return {k: v == "1" for k, v in re.findall(r"([A-Z0-9_]+) = (\d)", info)}


def llama_has_amx() -> bool:
    return any(v for k, v in llama_features().items() if k.startswith("AMX"))


def crash_prone() -> bool:
    """True when this library would take an AMX path that no probe saw run on this CPU."""
    from rag.models.kernels import activate

    return llama_has_amx() and cpu()["amx"] and not activate()["proven"]


@contextmanager
def llama_load_params():
    """Load a model with llama.cpp's extra buffer types off where the AMX path would crash."""
    if not crash_prone():
        yield
        return
    import llama_cpp.llama_cpp as lib

    log.warning("llama.cpp was built with AMX kernels and this CPU has AMX: loading without "
                "extra buffer types (slower). Rebuild portable with `make clean setup`.")
    with _PATCH_LOCK:
        default = lib.llama_model_default_params

        def params():
            p = default()
            p.use_extra_bufts = False
            return p

        lib.llama_model_default_params = params
        try:
            yield
        finally:
            lib.llama_model_default_params = default


def report() -> dict:
    from rag.models.kernels import activate, describe

    features = llama_features()
    chosen = activate()
    return {"cpu": cpu()["model"], "cpu_flags": cpu()["flags"], "cpu_has_amx": cpu()["amx"],
            "llama_variant": chosen["variant"], "llama_variant_why": chosen["why"],
            "llama_library": chosen["library"], "llama_variant_proven_here": chosen["proven"],
            "llama_cpp_features": sorted(k for k, v in features.items() if v),
            "llama_cpp_has_amx_kernels": llama_has_amx(), "crash_prone": crash_prone(),
            "variants": describe()["variants"]}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="the report alone, as JSON on stdout (the verdict on stderr)")
    args = parser.parse_args(argv)
    result = report()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"CPU: {result['cpu']}\nllama.cpp variant: {result['llama_variant']} ({result['llama_library']})\n"
              f"why: {result['llama_variant_why']}\nfeatures: {' '.join(result['llama_cpp_features'])}")
    if result["llama_cpp_has_amx_kernels"] and not result["llama_variant_proven_here"]:
        print("rag selfcheck: FAILED: this llama.cpp carries AMX kernels, which crash on Intel Xeons "
              "with AMX, and no probe saw them run here; rebuild it portable with `make clean setup`", file=sys.stderr)
        return 1
    print(f"rag selfcheck: ok: llama.cpp {result['llama_variant']}; "
          + ("no AMX kernels" if not result["llama_cpp_has_amx_kernels"] else "AMX kernels, probed on this CPU"),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
