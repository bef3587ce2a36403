"""The encoder's per-CPU runtime: which one a CPU gets, and that the bulk (OpenVINO bf16)
path keeps fp32's vectors where it runs."""

import importlib.util

import numpy as np
import pytest

from rag.models.device import cpu_flags, native_bf16, openvino_bf16
from rag.models.encoder import BULK_TEXTS, Encoder

TEXTS = [f"Passage {i}: coronavirus spike proteins bind the ACE2 receptor in the lung, study {i} found."
         for i in range(BULK_TEXTS)] + ["A longer passage about influenza vaccines and how their strains "
                                        "are picked each year by the surveillance network. " * 3]


def test_choice_follows_the_cpu_flags():
    assert native_bf16({"avx2", "avx512f", "avx512_bf16"})
    assert native_bf16({"avx2", "amx_bf16", "amx_tile"})
    assert not native_bf16({"avx2", "fma", "avx512f", "avx512_vnni"})  # VNNI alone: int8 ONNX Runtime
    assert not openvino_bf16({"avx2", "fma"})  # an AVX2-only CPU keeps int8 whatever is installed
    wanted = "onnx-openvino" if openvino_bf16() else "onnx-int8"
    assert Encoder("all-MiniLM-L6-v2")._pick_runtime("cpu") == wanted
    assert Encoder("all-MiniLM-L6-v2", runtime="onnx")._pick_runtime("cpu") == "onnx"  # a setting wins


@pytest.mark.skipif(not native_bf16(cpu_flags()) or importlib.util.find_spec("openvino") is None,
                    reason="OpenVINO bf16 runs only on a CPU with AVX512_BF16 or AMX, with openvino installed")
def test_openvino_bulk_path_keeps_fp32_vectors():
    fast = Encoder("all-MiniLM-L6-v2", runtime="onnx-openvino")
    exact = Encoder("all-MiniLM-L6-v2", runtime="onnx").encode(TEXTS)
    bulk = fast.encode(TEXTS)
    assert fast.model._bulk is not None  # the batch went through OpenVINO
    cosines = np.sum(bulk * exact, axis=1)
    assert cosines.min() >= 0.999, cosines.min()
    assert not np.array_equal(bulk, exact)  # a different runtime, not the fp32 session again
    few = fast.encode(TEXTS[:3])  # small calls: the fp32 session, identical vectors
    np.testing.assert_allclose(few, exact[:3], atol=1e-6)
    assert np.allclose(np.linalg.norm(bulk, axis=1), 1, atol=1e-4)
