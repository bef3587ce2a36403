"""Where the models run: the device (a GPU when torch can use one, else the CPU) and the CPU's
own features, read once from /proc/cpuinfo for the encoder's runtime choice and the decoder's
self-check. No imports of rag's own beyond the core."""

from __future__ import annotations

import glob
import importlib.util
import os
import sys
from functools import cache


def pick_device(device: str = "auto") -> str:
    """"cuda" when torch can use a GPU, else "cpu". torch is imported only when it is already
    loaded, or installed on a machine that shows a GPU device (NVIDIA, WSL2 or ROCm): importing
    it costs about a second, and a machine without such a device has no GPU torch could use."""
    if device != "auto":
        return device
    torch = sys.modules.get("torch")
    if torch is None:
        if not _gpu_device_files() or importlib.util.find_spec("torch") is None:
            return "cpu"
        try:
            import torch
        except ImportError:
            return "cpu"
    try:
        return "cuda" if torch.cuda.is_available() else "cpu"
    except Exception:  # a broken CUDA install: the CPU still works
        return "cpu"


def _gpu_device_files() -> bool:
    """A GPU device node: /dev/nvidia0.. (NVIDIA, also inside containers given a GPU), /dev/dxg
    (WSL2), /dev/kfd (ROCm, which torch reports as "cuda")."""
    return bool(glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/dxg") or os.path.exists("/dev/kfd"))


@cache
def cpu_info() -> tuple[str, frozenset[str]]:
    """The CPU's model name and feature flags (Linux /proc/cpuinfo; "unknown" and none elsewhere)."""
    name, flags = "unknown", frozenset()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and name == "unknown":
                    name = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = frozenset(value.split())
    except OSError:
        pass
    return name, flags


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    return set(cpu_info()[1])


def native_bf16(flags: set[str]) -> bool:
    """bf16 dot products in hardware: AVX512_BF16 (AMD Zen 4/5, Intel Cooper Lake on) or AMX."""
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def openvino_bf16(flags: set[str] | None = None) -> bool:
    """The per-CPU choice for passages, measured (benchmarks/encoder_runtimes.py, 2-core AMD EPYC
    Zen 5 with AVX512_BF16): OpenVINO bf16 200 chunks/s at cosine >= 0.9998 against fp32, ONNX
    Runtime int8 162 at >= 0.969, fp32 89. Without native bf16 OpenVINO runs fp32 (111 there),
    slower than int8 ONNX Runtime, so such CPUs keep int8."""
    return native_bf16(cpu_flags() if flags is None else flags) and importlib.util.find_spec("openvino") is not None
