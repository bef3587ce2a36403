"""The llama.cpp build per CPU (rag/models/kernels.py): the fastest variant that is built, fits
the CPU's flags and ran its probe here; a variant that crashes (SIGILL) is never chosen, on this
CPU or another with the same flags, and the portable build answers instead. The fakes need no
compiled variant: these tests pass on a machine where only the portable build exists."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rag.models import kernels
from rag.models.kernels import PORTABLE, Variant

slow = pytest.mark.slow  # runs llama.cpp in a child process

CPU = frozenset({"avx", "avx2", "fma", "f16c", "bmi2", "avx512f"})
SIGILL_CHILD = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGILL)"]
OK_CHILD = [sys.executable, "-c", "import json; print(json.dumps({'text': ' Paris', 'features': ['FAKE']}))"]


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A model cache of its own holding one built fake variant, "fast", above the portable one."""
    monkeypatch.setattr(kernels, "root", lambda: tmp_path)
    monkeypatch.delenv("RAG_LLAMA_VARIANT", raising=False)
    fast = Variant("fast", 30, frozenset({"avx512f"}), "-DFAKE=ON")
    lacking = Variant("lacking", 40, frozenset({"amx_tile"}), "-DFAKE=AMX")
    monkeypatch.setattr(kernels, "VARIANTS", [kernels.variant(PORTABLE), fast, lacking])
    for v in (fast, lacking):
        v.lib_dir().mkdir(parents=True)
        (v.lib_dir() / "libllama.so").write_bytes(b"")
    calls = []

    def child(command):
        def probe_command(v):
            calls.append(v.name)
            return command
        monkeypatch.setattr(kernels, "probe_command", probe_command)

    child(OK_CHILD)
    return fast, calls, child


def test_a_variant_that_dies_of_sigill_is_never_chosen(fake):
    fast, calls, child = fake
    child(SIGILL_CHILD)
    chosen, why = kernels.choose("auto", CPU)
    assert chosen.name == PORTABLE and calls == ["fast"], why
    assert "crashed" in why and "lacks amx_tile" in why, why  # the AMX-like one is not even tried
    record = kernels.probes()[kernels.cpu_key()][fast.dirname]
    assert record["rc"] == -signal.SIGILL and record["crashed"] and not record["ok"]
    # kept: the next choice (another process, the same flags) does not run it again
    child(OK_CHILD)
    assert kernels.choose("auto", CPU)[0].name == PORTABLE and calls == ["fast"]
    # forcing it does not bring it back either
    chosen, why = kernels.choose("fast", CPU)
    assert chosen.name == PORTABLE and "crashed" in why and calls == ["fast"]


def test_a_shell_exit_of_132_counts_as_a_crash():
    assert kernels.crashed(132) and kernels.crashed(-4) and kernels.crashed(139)
    assert not kernels.crashed(1) and not kernels.crashed(0)


def test_the_fastest_variant_that_ran_its_probe_is_chosen_once_probed(fake):
    fast, calls, _ = fake
    chosen, why = kernels.choose("auto", CPU)
    assert chosen is fast and "probe ran" in why and calls == ["fast"]
    assert kernels.probe_result(fast)["text"] == " Paris"
    assert kernels.choose("auto", CPU)[0] is fast and calls == ["fast"]  # probed once
    assert kernels.choose("portable", CPU)[0].name == PORTABLE  # the setting forces one
    assert kernels.choose("fast", CPU)[0] is fast


def test_a_cpu_without_the_flags_gets_the_portable_build(fake):
    _, calls, _ = fake
    avx2_only = frozenset({"avx", "avx2", "fma", "f16c", "bmi2"})
    chosen, why = kernels.choose("auto", avx2_only)
    assert chosen.name == PORTABLE and "lacks avx512f" in why and calls == []
    chosen, why = kernels.choose("fast", avx2_only)  # forced, but this CPU cannot run it
    assert chosen.name == PORTABLE and "lacks avx512f" in why


def test_a_failed_probe_that_was_no_crash_is_tried_again(fake):
    fast, calls, child = fake
    child([sys.executable, "-c", "raise SystemExit(1)"])
    assert kernels.choose("auto", CPU)[0].name == PORTABLE
    child(OK_CHILD)
    assert kernels.choose("auto", CPU)[0] is fast and calls == ["fast", "fast"]


def test_an_unbuilt_variant_or_an_unknown_name_falls_back(fake):
    fast, calls, _ = fake
    (fast.lib_dir() / "libllama.so").unlink()
    chosen, why = kernels.choose("auto", CPU)
    assert chosen.name == PORTABLE and "not built" in why and calls == []
    chosen, why = kernels.choose("nonsense", CPU)
    assert chosen.name == PORTABLE and "unknown" in why


def test_setup_skips_a_variant_this_cpu_cannot_run(fake, monkeypatch):
    """`make setup` on a CPU without AVX-512 finishes: nothing is compiled for it."""
    monkeypatch.setattr(kernels, "cpu_info", lambda: ("AVX2-only", frozenset({"avx", "avx2", "fma", "f16c", "bmi2"})))
    monkeypatch.setattr(kernels, "build", lambda v: pytest.fail(f"built {v.name}"))
    report = kernels.setup(None)
    assert report["fast"].startswith("skipped: this CPU lacks avx512f"), report


def test_the_build_keys_hash_version_and_flags():
    """The portable key is the Makefile's (LLAMA_KEY: the same version and CMake flags)."""
    portable, avx512 = kernels.variant(PORTABLE), kernels.variant("avx512")
    assert portable.key != avx512.key and len(portable.key) == 12
    makefile = Path("Makefile").read_text()
    args = " ".join(makefile.split("LLAMA_CMAKE_ARGS  := ")[1].split("\nLLAMA_KEY")[0].replace("\\\n", " ").split())
    assert args == portable.cmake_args
    assert "-DGGML_AMX_INT8=OFF" in avx512.cmake_args and "-DGGML_AVX512=ON" in avx512.cmake_args


@slow
def test_the_probe_runs_the_real_portable_build(tmp_path, monkeypatch):
    monkeypatch.setattr(kernels, "root", lambda: tmp_path)
    result = kernels.probe(kernels.variant(PORTABLE))
    assert result["ok"] and result["text"].strip() and "AVX2" in result["features"], result


@slow
def test_selfcheck_reports_the_variant_and_why():
    out = subprocess.run([sys.executable, "-m", "rag.models.selfcheck", "--json"], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["llama_variant"] in {v.name for v in kernels.VARIANTS} and report["llama_variant_why"]
    assert not report["crash_prone"]


def test_the_chosen_variant_is_the_library_llama_cpp_loads(tmp_path):
    """The switch itself, in a fresh process: a variant folder (here holding the portable
    libraries, copied) that ran its probe is what llama-cpp-python loads, through
    LLAMA_CPP_LIB_PATH set before its import; a CPU without AVX-512 keeps the package's own."""
    import shutil

    from rag.core.paths import package_dir

    v = kernels.variant("avx512")
    lib = tmp_path / "llama" / v.dirname / "lib"
    shutil.copytree(package_dir("llama_cpp") / "lib", lib)
    (tmp_path / "llama" / "probe.json").write_text(json.dumps({kernels.cpu_key(): {v.dirname: {"ok": True, "rc": 0}}}))
    code = ("from rag.models import kernels; a = kernels.activate(); import llama_cpp, json; "
            "print(json.dumps([a['variant'], str(llama_cpp.llama_cpp._base_path)]))")
    env = {k: val for k, val in os.environ.items() if k not in ("LLAMA_CPP_LIB_PATH", "RAG_LLAMA_VARIANT")}
    out = subprocess.run([sys.executable, "-c", code], env={**env, "RAG_MODEL_CACHE": str(tmp_path)},
                         capture_output=True, text=True, check=True)
    name, loaded = json.loads(out.stdout.strip().splitlines()[-1])
    if v.fits(kernels.cpu_info()[1]):
        assert (name, loaded) == ("avx512", str(lib))
    else:
        assert name == PORTABLE and loaded != str(lib)
