"""Every llama.cpp variant built on this machine (rag/models/kernels.py: the portable AVX2 build
`make setup` installs, the AVX-512 one, AMX where built) on the bundled decoders: prefill and
decode tokens per second, each variant in its own process, the processes interleaved (portable,
avx512, portable, avx512, ...) so that a change of load on the machine falls on all of them, and
the best of the repeats kept. Also the first greedy tokens of each, to show where text differs.

    nice -n 15 .venv/bin/python benchmarks/llama_build.py                 # every built variant, best of 3
    .venv/bin/python benchmarks/llama_build.py --variants portable,avx512 --models gemma3-270m --repeats 5

Variants not built are listed as such (build them: `python -m rag.models.kernels setup`)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODELS = ("gemma3-270m", "qwen2.5-0.5b", "qwen2.5-1.5b")

MEASURE = r"""
import json, sys, time
import llama_cpp
from rag.models.catalog import generator_path
from rag.core.paths import cpu_count
models, n_decode, inner = sys.argv[1].split(","), int(sys.argv[2]), int(sys.argv[3])
info = llama_cpp.llama_print_system_info().decode()
out = {"library": llama_cpp.llama_cpp._base_path.as_posix(), "amx": "AMX_INT8 = 1" in info,
       "avx512": "AVX512 = 1" in info, "threads": cpu_count()}
prompt = ("The Quillfeather Lighthouse was first lit in 1897 by keeper Tobias Renwick. " * 24)
for name in models:
    start = time.perf_counter()
    model = llama_cpp.Llama(model_path=generator_path(name), n_ctx=2048, n_threads=cpu_count(),
                            verbose=False, seed=0)
    load = time.perf_counter() - start
    tokens = model.tokenize(prompt.encode())
    model.eval(tokens[:16])  # weights paged in, threads started
    prefill = prefill_cpu = float("inf")
    for _ in range(inner):  # the fastest of `inner` prefills: a preempted one does not count
        model.reset()
        start, cpu = time.perf_counter(), time.process_time()
        model.eval(tokens)
        prefill, prefill_cpu = min(prefill, time.perf_counter() - start), min(prefill_cpu, time.process_time() - cpu)
    start, cpu = time.perf_counter(), time.process_time()
    text = []
    for t in model.generate(tokens[-1:], top_k=1, reset=False):
        text.append(t)
        if len(text) == n_decode:
            break
    decode, decode_cpu = time.perf_counter() - start, time.process_time() - cpu
    out[name] = {"prompt_tokens": len(tokens), "load_s": round(load, 2), "prefill_tok_s": len(tokens) / prefill,
                 "decode_tok_s": len(text) / decode, "prefill_tok_cpu_s": len(tokens) / prefill_cpu,
                 "decode_tok_cpu_s": len(text) / decode_cpu,
                 "text": model.detokenize(text[:16]).decode(errors="replace")}
    del model
print(json.dumps(out))
"""


def measure(lib: Path | None, models: list[str], n_decode: int, threads: int = 0, inner: int = 1) -> dict:
    env = dict(os.environ)
    if threads:
        env["RAG_THREADS"] = str(threads)
    env.pop("LLAMA_CPP_LIB_PATH", None)
    if lib is not None:
        env["LLAMA_CPP_LIB_PATH"] = str(lib)
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", MEASURE, ",".join(models), str(n_decode), str(inner)], env=env,
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"error": f"exit {out.returncode}: {out.stderr.strip()[-300:]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from rag.models import kernels
    from rag.models.device import cpu_info

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="", help="comma list (default: every built one that fits this CPU)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--inner", type=int, default=1, help="prefills per process, the fastest kept (steadier under load)")
    parser.add_argument("--threads", type=int, default=0,
                        help="llama.cpp threads (default: every core this process may use; 1 is steadier on a loaded machine)")
    parser.add_argument("--json", type=Path, help="also write every run here")
    args = parser.parse_args()
    flags = cpu_info()[1]
    names = [n for n in args.variants.split(",") if n] or [v.name for v in kernels.VARIANTS]
    variants = [kernels.variant(n) for n in names]
    runnable = [v for v in variants if v.built() and v.fits(flags)]
    for v in variants:
        if v not in runnable:
            print(f"{v.name}: {'not built' if v.fits(flags) else 'this CPU lacks its flags'}", file=sys.stderr)
    models = args.models.split(",")
    runs: dict[str, list[dict]] = {v.name: [] for v in runnable}
    for i in range(args.repeats):
        for v in runnable:
            r = measure(v.lib_dir(), models, args.decode_tokens, args.threads, args.inner)
            runs[v.name].append(r)
            print(f"run {i + 1} {v.name}: " + ("; ".join(
                f"{m} prefill {r[m]['prefill_tok_s']:.0f} decode {r[m]['decode_tok_s']:.1f}" for m in models)
                if "error" not in r else r["error"]), file=sys.stderr, flush=True)
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_info()[0], "cpu_key": kernels.cpu_key(), "runs": runs}, indent=2))
    chosen, why = kernels.choose(run_probes=False)
    print(f"CPU: {cpu_info()[0]}; flags {kernels.cpu_key()}")
    print(f"chosen by rag here: {chosen.name} ({why})\n")
    threads = next((r["threads"] for rs in runs.values() for r in rs if "threads" in r), "?")
    print(f"Best of {args.repeats} processes per variant (each the fastest of {args.inner} prefills), interleaved; "
          f"{threads} threads; {args.decode_tokens} "
          "tokens decoded greedily after the prompt.\n")
    print("On a loaded machine the wall-clock rates fall with the share of the cores this process gets;"
          " tokens per CPU-second (process time, every thread's) are steadier, exact with --threads 1.\n")
    print("| variant | decoder | prompt tokens | prefill tok/s | x portable | decode tok/s | x portable | "
          "prefill tok/CPU-s | x portable | decode tok/CPU-s | x portable | load s | first greedy tokens |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    best: dict[tuple[str, str], dict] = {}
    for name, rs in runs.items():
        ok = [r for r in rs if "error" not in r]
        for m in models:
            if ok:
                best[name, m] = {"prefill": max(r[m]["prefill_tok_s"] for r in ok),
                                 "decode": max(r[m]["decode_tok_s"] for r in ok),
                                 "prefill_cpu": max(r[m]["prefill_tok_cpu_s"] for r in ok),
                                 "decode_cpu": max(r[m]["decode_tok_cpu_s"] for r in ok),
                                 "load": min(r[m]["load_s"] for r in ok), "tokens": ok[0][m]["prompt_tokens"],
                                 "text": ok[0][m]["text"]}
    for m in models:
        base = best.get((kernels.PORTABLE, m))
        for name in runs:
            b = best.get((name, m))
            if b is None:
                print(f"| {name} | {m} | failed: {runs[name][0].get('error', '')[:80]} |||||||")
                continue
            x = {k: f"{b[k] / base[k]:.2f}" if base else "-" for k in ("prefill", "decode", "prefill_cpu", "decode_cpu")}
            print(f"| {name} | {m} | {b['tokens']} | {b['prefill']:.0f} | {x['prefill']} | {b['decode']:.1f} | "
                  f"{x['decode']} | {b['prefill_cpu']:.0f} | {x['prefill_cpu']} | {b['decode_cpu']:.1f} | "
                  f"{x['decode_cpu']} | {b['load']:.2f} | {json.dumps(b['text'])} |")


if __name__ == "__main__":
    main()
