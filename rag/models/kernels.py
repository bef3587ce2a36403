"""Which llama.cpp library the decoder runs: the fastest one built for this CPU that has been
seen to run here, chosen before `llama_cpp` is first imported.

llama-cpp-python loads its libraries (libllama, libggml, libggml-cpu) from the folder that
LLAMA_CPP_LIB_PATH names, else from its own package. `make setup` installs the portable build
(AVX2, every x86-64 CPU since 2013) as the package's own, and `python -m rag.models.kernels setup`
adds, where the CPU has the flags, other builds of the same llama.cpp (same Python bindings), each
in its own folder ~/.cache/rag/llama/<variant>-<key>/lib (the key hashes version and CMake flags,
so a build with other flags is never reused); their wheels are cached under ~/.cache/rag/wheels
as the portable one is, so setting up again on the same machine compiles nothing.

Never a crash: a variant is chosen only after it answered a tiny prompt (Gemma 3 270M, a few
greedy tokens) in a child process on a CPU with the same flags. The outcome is kept in
~/.cache/rag/llama/probe.json, keyed by the CPU's SIMD flags; one that died of a signal (SIGILL,
exit 132 / -4; SIGSEGV in AMX kernels) is never chosen again for those flags. The AMX variant is
built only when asked for (`--variants amx`) and chosen only where its probe ran: natively built
AMX kernels crashed at the first token on an Intel Xeon (GCC 12.2, docs/decoder-kernels.md).

    python -m rag.models.kernels                  # what would be chosen here, and why (JSON)
    python -m rag.models.kernels setup            # build the variants this CPU can run, probe them
    python -m rag.models.kernels probe [--again]  # probe the built variants (again)

The llama_variant setting (RAG_LLAMA_VARIANT) forces one: portable, avx512, amx, or auto."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from rag.core.paths import cache_dir, cpu_count, package_dir
from rag.core.settings import configured
from rag.models.device import cpu_info

log = logging.getLogger(__name__)

VERSION = "0.3.36"  # llama-cpp-python; the Makefile pins the same (LLAMA_CPP_VERSION)
_OFF = ("-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF "
        "-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF")
_X86 = "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
_AVX512 = "-DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX512_VBMI=OFF"
_AVX2_FLAGS = frozenset({"avx", "avx2", "fma", "f16c", "bmi2"})
_AVX512_FLAGS = _AVX2_FLAGS | {"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw", "avx512_vnni",
                               "avx512_bf16"}
PROBE_TIMEOUT = 300.0  # seconds one probe may take (loading Gemma 3 270M and 8 tokens: about 2 s)
PROBE_TOKENS = 8


@dataclass(frozen=True)
class Variant:
    name: str
    rank: int  # the faster, the higher: auto takes the highest that is built, fits and ran here
    requires: frozenset[str]  # CPU flags (/proc/cpuinfo) its kernels use
    cmake_args: str
    built_by_default: bool = True  # `setup` builds it where the CPU has the flags, unless asked not to

    @property
    def key(self) -> str:
        return hashlib.sha256(f"{VERSION} {self.cmake_args}".encode()).hexdigest()[:12]

    @property
    def dirname(self) -> str:
        return f"{self.name}-{self.key}"

    def lib_dir(self) -> Path | None:
        """Where its libraries are; None for the portable build (the llama_cpp package's own)."""
        return None if self.name == PORTABLE else root() / self.dirname / "lib"

    def built(self) -> bool:
        lib = self.lib_dir()
        if lib is None:
            return package_dir("llama_cpp") is not None
        return (lib / "libllama.so").is_file()

    def fits(self, flags: set[str] | frozenset[str]) -> bool:
        return self.requires <= set(flags)


PORTABLE = "portable"
VARIANTS: list[Variant] = [
    # what `make setup` installs as the llama_cpp package (Makefile: LLAMA_CMAKE_ARGS)
    Variant(PORTABLE, 0, _AVX2_FLAGS, f"{_X86} -DGGML_AVX512=OFF {_OFF}"),
    Variant("avx512", 10, _AVX512_FLAGS,
            f"{_X86} {_AVX512} -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF {_OFF}"),
    Variant("amx", 20, _AVX512_FLAGS | {"amx_tile", "amx_int8", "amx_bf16"},
            f"{_X86} {_AVX512} -DGGML_AMX_TILE=ON -DGGML_AMX_INT8=ON -DGGML_AMX_BF16=ON {_OFF}",
            built_by_default=False),
]


def root() -> Path:
    return cache_dir() / "llama"


def variant(name: str) -> Variant:
    for v in VARIANTS:
        if v.name == name:
            return v
    raise ValueError(f"unknown llama.cpp variant {name!r}; use auto or one of {', '.join(v.name for v in VARIANTS)}")


def cpu_key(flags: set[str] | frozenset[str] | None = None) -> str:
    """The probe record's key: the CPU's SIMD flags (a variant that crashed on one CPU crashes on
    every CPU with the same flags; the model name is kept beside it for people)."""
    flags = cpu_info()[1] if flags is None else flags
    return " ".join(sorted(f for f in flags if f.startswith(("avx", "amx", "sse", "fma", "f16c", "bmi"))))


# --- the probe record ----------------------------------------------------------------------

def _probe_file() -> Path:
    return root() / "probe.json"


def probes() -> dict:
    try:
        return json.loads(_probe_file().read_text())
    except (OSError, ValueError):
        return {}


def probe_result(v: Variant) -> dict | None:
    return probes().get(cpu_key(), {}).get(v.dirname)


def _record(v: Variant, result: dict) -> None:
    path = _probe_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = probes()
    data.setdefault(cpu_key(), {})[v.dirname] = result
    tmp = path.with_name(f".probe.{os.getpid()}.json")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def crashed(rc: int) -> bool:
    """Died of a signal: -N from Popen, 128+N from a shell (132 SIGILL, 139 SIGSEGV, 134 SIGABRT)."""
    return rc < 0 or rc in {128 + s for s in (signal.SIGILL, signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT,
                                              signal.SIGFPE)}


def probe_command(v: Variant) -> list[str]:
    """The child that tries `v`: this module's `try`, which loads llama.cpp from the variant's
    folder and decodes a few tokens (the tests swap in a child that dies of SIGILL)."""
    return [sys.executable, "-m", "rag.models.kernels", "try", v.name]


def probe(v: Variant) -> dict:
    """Run `v` once in a child process and record how it ended."""
    env = dict(os.environ)
    env.pop("LLAMA_CPP_LIB_PATH", None)
    lib = v.lib_dir()
    if lib is not None:
        env["LLAMA_CPP_LIB_PATH"] = str(lib)
    start = time.monotonic()
    try:
        out = subprocess.run(probe_command(v), env=env, capture_output=True, text=True, timeout=PROBE_TIMEOUT,
                             check=False)
        rc, stdout, stderr = out.returncode, out.stdout, out.stderr
    except subprocess.TimeoutExpired:
        rc, stdout, stderr = None, "", f"no answer in {PROBE_TIMEOUT:.0f} s"
    result = {"rc": rc, "ok": rc == 0, "crashed": rc is not None and crashed(rc), "cpu": cpu_info()[0],
              "seconds": round(time.monotonic() - start, 2), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if rc == 0:
        try:
            result.update(json.loads(stdout.strip().splitlines()[-1]))
        except (ValueError, IndexError):
            pass
    else:
        result["error"] = (stderr or stdout).strip()[-400:]
        log.warning("llama.cpp variant %s failed its probe here (exit %s)%s", v.name, rc,
                    ": it is never chosen on this CPU" if result["crashed"] else "")
    _record(v, result)
    return result


def _try(name: str) -> int:
    """The probe's child: llama.cpp from LLAMA_CPP_LIB_PATH (set by the parent), a tiny prompt."""
    import llama_cpp

    from rag.models.catalog import generator_path

    info = llama_cpp.llama_print_system_info().decode(errors="replace")
    model = llama_cpp.Llama(model_path=generator_path("gemma3-270m"), n_ctx=256, n_threads=cpu_count(),
                            verbose=False, seed=0)
    out = model.create_completion("The capital of France is", max_tokens=PROBE_TOKENS, temperature=0.0, top_k=1)
    features = sorted(set(re.findall(r"([A-Z0-9_]+) = 1", info)))
    print(json.dumps({"variant": name, "text": out["choices"][0]["text"], "features": features}))
    return 0


# --- the choice ----------------------------------------------------------------------------

_ACTIVE: dict | None = None


def choose(setting: str | None = None, flags: set[str] | frozenset[str] | None = None,
           run_probes: bool = True) -> tuple[Variant, str]:
    """The variant to load and why. A variant is taken only when it is built, this CPU has its
    flags, and its probe ran here (a variant never probed on these flags is probed now, once)."""
    setting = (configured().llama_variant if setting is None else setting).strip().lower() or "auto"
    flags = cpu_info()[1] if flags is None else flags
    portable = variant(PORTABLE)
    if setting != "auto":
        try:
            forced = variant(setting)
        except ValueError as e:
            return portable, f"{e}: the portable build"
        if forced.name == PORTABLE:
            return portable, "forced by the llama_variant setting"
        why = _unusable(forced, flags, run_probes)
        if why:
            log.warning("llama_variant=%s: %s; the portable build runs instead", forced.name, why)
            return portable, f"llama_variant={forced.name} asked for, but {why}: the portable build"
        return forced, "forced by the llama_variant setting; its probe ran on this CPU"
    passed = []
    for v in sorted(VARIANTS, key=lambda v: -v.rank):
        if v.name == PORTABLE:
            break
        why = _unusable(v, flags, run_probes)
        if not why:
            return v, (f"the fastest variant built for this CPU's flags ({', '.join(sorted(v.requires - _AVX2_FLAGS))}); "
                       f"its probe ran here" + (f"; passed over: {'; '.join(passed)}" if passed else ""))
        passed.append(f"{v.name}: {why}")
    return portable, "no faster variant usable here" + (f" ({'; '.join(passed)})" if passed else "")


def _unusable(v: Variant, flags, run_probes: bool) -> str:
    """Why `v` cannot run here ("" when it can)."""
    if not v.fits(flags):
        return f"this CPU lacks {', '.join(sorted(v.requires - set(flags)))}"
    if not v.built():
        return f"not built (python -m rag.models.kernels setup{'' if v.built_by_default else ' --variants ' + v.name})"
    result = probe_result(v)
    if result is None or (not result.get("ok") and not result.get("crashed")):
        if not run_probes:
            return "not probed on this CPU yet"
        result = probe(v)
    if result.get("crashed"):
        return f"it crashed in its probe on a CPU with these flags (exit {result['rc']}): never chosen here"
    if not result.get("ok"):
        return f"its probe failed (exit {result.get('rc')})"
    return ""


def activate() -> dict:
    """Point llama-cpp-python at the chosen variant's libraries; call before `import llama_cpp`
    (the decoder does). Once llama_cpp is imported, its libraries stay: the first choice holds."""
    global _ACTIVE
    if _ACTIVE is not None:
        return _ACTIVE
    if "llama_cpp" in sys.modules or os.environ.get("LLAMA_CPP_LIB_PATH"):
        lib = os.environ.get("LLAMA_CPP_LIB_PATH")
        name = next((v.name for v in VARIANTS if lib and str(v.lib_dir()) == lib), PORTABLE if not lib else lib)
        _ACTIVE = {"variant": name, "library": lib or "the llama_cpp package's own",
                   "why": "LLAMA_CPP_LIB_PATH set before rag chose" if lib else "llama_cpp was imported before rag chose",
                   "proven": bool(lib) and _proven(name)}
        return _ACTIVE
    v, why = choose()
    lib = v.lib_dir()
    if lib is not None:
        os.environ["LLAMA_CPP_LIB_PATH"] = str(lib)
    _ACTIVE = {"variant": v.name, "library": str(lib) if lib else "the llama_cpp package's own", "why": why,
               "proven": v.name != PORTABLE}
    log.info("llama.cpp variant %s: %s", v.name, why)
    return _ACTIVE


def _proven(name: str) -> bool:
    try:
        result = probe_result(variant(name))
    except ValueError:
        return False
    return bool(result and result.get("ok"))


def active() -> dict | None:
    """What `activate` chose in this process (None before the decoder loaded)."""
    return _ACTIVE


# --- building ------------------------------------------------------------------------------

def wheel_dir(v: Variant) -> Path:
    return cache_dir() / "wheels" / f"llama-cpp-python-{VERSION}-{v.dirname}"


def build(v: Variant) -> Path:
    """Compile `v` once per machine (its wheel cached), then unpack its libraries into its folder."""
    wheels = wheel_dir(v)
    if not list(wheels.glob("llama_cpp_python-*.whl")):
        print(f"building llama.cpp {v.name} ({v.cmake_args.split(' -DLLAVA')[0]}): several minutes, once per machine ...",
              file=sys.stderr, flush=True)
        tmp = wheels.with_name(wheels.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        env = {**os.environ, "CMAKE_ARGS": v.cmake_args,
               "CMAKE_BUILD_PARALLEL_LEVEL": os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))}
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-cache-dir",
                        "--no-binary", "llama-cpp-python", f"llama-cpp-python=={VERSION}", "-w", str(tmp)],
                       env=env, check=True)
        os.replace(tmp, wheels)
    lib = v.lib_dir()
    assert lib is not None
    if not (lib / "libllama.so").is_file():
        wheel = max(wheels.glob("llama_cpp_python-*.whl"))
        staging = lib.parent.with_name(lib.parent.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "lib").mkdir(parents=True)
        with zipfile.ZipFile(wheel) as z:
            for member in z.namelist():
                if member.startswith("llama_cpp/lib/") and not member.endswith("/"):
                    (staging / "lib" / Path(member).name).write_bytes(z.read(member))
        (staging / "variant.json").write_text(json.dumps(
            {"variant": v.name, "llama_cpp_python": VERSION, "cmake_args": v.cmake_args, "wheel": wheel.name}, indent=2))
        shutil.rmtree(lib.parent, ignore_errors=True)
        os.replace(staging, lib.parent)
    return lib


def setup(names: list[str] | None = None) -> dict:
    """Build (where this CPU has their flags) and probe the variants; `names` None: the default set."""
    flags = cpu_info()[1]
    report = {}
    for v in VARIANTS:
        if v.name == PORTABLE:
            continue
        wanted = v.name in names if names is not None else v.built_by_default
        if not wanted:
            report[v.name] = "not asked for"
            continue
        if not v.fits(flags):
            report[v.name] = f"skipped: this CPU lacks {', '.join(sorted(v.requires - set(flags)))}"
            continue
        try:
            build(v)
        except (subprocess.CalledProcessError, OSError) as e:  # a compiler without these flags: portable stays
            report[v.name] = f"build failed ({e}): the portable build runs"
            continue
        result = probe_result(v) or probe(v)
        report[v.name] = "runs here" if result.get("ok") else f"failed its probe (exit {result.get('rc')}): never chosen"
    return report


def describe() -> dict:
    v, why = choose(run_probes=False)
    flags = cpu_info()[1]
    return {"cpu": cpu_info()[0], "cpu_key": cpu_key(), "chosen": v.name, "why": why,
            "variants": {x.name: {"built": x.built(), "fits_cpu": x.fits(flags), "library": str(x.lib_dir() or "package"),
                                  "probe": probe_result(x)} for x in VARIANTS}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    p_setup = sub.add_parser("setup", help="build the variants this CPU can run (cached), then probe them")
    p_setup.add_argument("--variants", default="auto",
                         help="auto (those built by default: avx512), none, or a comma list (avx512,amx)")
    p_probe = sub.add_parser("probe", help="probe every built variant that fits this CPU")
    p_probe.add_argument("--again", action="store_true", help="also those probed before")
    p_try = sub.add_parser("try", help=argparse.SUPPRESS)
    p_try.add_argument("name")
    args = parser.parse_args(argv)
    if args.command == "try":
        return _try(args.name)
    if args.command == "setup":
        names = None if args.variants == "auto" else [n for n in args.variants.split(",") if n and n != "none"]
        print(json.dumps(setup(names), indent=2))
    elif args.command == "probe":
        flags = cpu_info()[1]
        for v in VARIANTS:
            if v.built() and v.fits(flags) and (args.again or probe_result(v) is None):
                result = probe(v)
                print(f"{v.name}: exit {result['rc']} in {result['seconds']} s {result.get('text', '')!r}")
    print(json.dumps(describe(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
