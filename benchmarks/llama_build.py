"""Portable llama.cpp (what `make setup` installs: AVX2, no AMX kernels) against a build with
native CPU flags (-march=native), on this machine: prefill and decode tokens per second for
the bundled decoders, each build in its own process.

    python benchmarks/llama_build.py                 # builds the native peer once (~10 min on 2 cores)
    python benchmarks/llama_build.py --native DIR    # a peer already installed with pip --target DIR

The native build is the one that crashes on Intel Xeons with AMX; on an AMD EPYC it runs, and
this table shows what portability costs there."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

VERSION = "0.3.36"
CACHE = Path(__file__).resolve().parent / ".cache" / f"llama-native-{VERSION}"
NATIVE_ARGS = ("-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF "
               "-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF")

MEASURE = r"""
import json, sys, time
import llama_cpp
from rag.models.catalog import generator_path
from rag.core.paths import cpu_count
info = llama_cpp.llama_print_system_info().decode()
out = {"library": llama_cpp.__file__, "amx": "AMX_INT8 = 1" in info,
       "avx512": "AVX512 = 1" in info}
prompt = ("The Quillfeather Lighthouse was first lit in 1897 by keeper Tobias Renwick. " * 24)
for name in ("gemma3-270m", "smollm2"):
    model = llama_cpp.Llama(model_path=generator_path(name), n_ctx=2048, n_threads=cpu_count(),
                            verbose=False, seed=0)
    tokens = model.tokenize(prompt.encode())
    rows = []
    for _ in range(3):
        model.reset()
        start = time.perf_counter()
        model.eval(tokens)
        prefill = time.perf_counter() - start
        start = time.perf_counter()
        n = 0
        for t in model.generate(tokens[-1:], top_k=1, reset=False):
            n += 1
            if n == 64:
                break
        decode = time.perf_counter() - start
        rows.append((len(tokens) / prefill, n / decode))
    best = max(rows, key=lambda r: r[0] + r[1])
    out[name] = {"prompt_tokens": len(tokens), "prefill_tok_s": round(best[0], 1),
                 "decode_tok_s": round(best[1], 1)}
print(json.dumps(out))
"""


def build_native(target: Path) -> None:
    print(f"building llama-cpp-python {VERSION} with native flags into {target} (once) ...", file=sys.stderr)
    env = {**os.environ, "CMAKE_ARGS": NATIVE_ARGS, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count())}
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-cache-dir",
                    "--no-binary", "llama-cpp-python", "--target", str(target),
                    f"llama-cpp-python=={VERSION}"], env=env, check=True)


def measure(extra_path: Path | None) -> dict:
    env = dict(os.environ)
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), str(Path(__file__).resolve().parents[1])])
    out = subprocess.run([sys.executable, "-c", MEASURE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--native", type=Path, help="a pip --target folder holding a native build")
    args = parser.parse_args()
    native = args.native or CACHE
    if not (native / "llama_cpp").is_dir():
        build_native(native)
    from rag.models.selfcheck import cpu

    results = {"portable (make setup)": measure(None), "native (-march=native)": measure(native)}
    print(f"CPU: {cpu()['model']}, flags {' '.join(cpu()['flags'])}\n")
    print("| build | AMX kernels | decoder | prompt tokens | prefill tok/s | decode tok/s |")
    print("|---|---|---|---:|---:|---:|")
    for build, r in results.items():
        for name in ("gemma3-270m", "smollm2"):
            m = r[name]
            print(f"| {build} | {'yes' if r['amx'] else 'no'} | {name} | {m['prompt_tokens']} | "
                  f"{m['prefill_tok_s']:.0f} | {m['decode_tok_s']:.0f} |")


if __name__ == "__main__":
    main()
