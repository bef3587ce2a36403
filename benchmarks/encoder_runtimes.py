"""Encoder runtimes on this CPU: the same COVID-QA chunks (rag's own splitter, 128 word pieces)
encoded by each runtime/option, against PyTorch fp32 (sentence-transformers) as the reference.

    .venv/bin/python benchmarks/encoder_runtimes.py                      # every runtime installed
    .venv/bin/python benchmarks/encoder_runtimes.py --only ort-int8,ort-fp32 --chunks 1000

Columns: chunks/s (length-sorted batches of 64, tokenisation included, after one warm-up
batch), cosine to PyTorch fp32 (min / mean over chunks), and dense recall@5 of COVID-QA
questions whose article is in the sample (questions always fp32, as rag encodes them).
Optional runtimes: `pip install openvino`, `pip install ctranslate2`.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
COVID = ROOT.parent / "shared" / "datasets" / "covidqa_deepset" / "200423_covidQA.json"
BATCH = 64


def sample_chunks(encoder, n: int):
    """rag's chunks of the first COVID-QA articles (by name) until there are `n`."""
    from rag.core.settings import Settings
    from rag.evaluate import load
    from rag.index.chunking import Splitter
    from rag.index.prepare import embedded
    from rag.readers.documents import read

    s = Settings()
    splitter = Splitter(encoder.tokenizer, s.chunk_size, s.chunk_overlap, s.max_chunk_chars)
    data = load(COVID)
    chunks, sources = [], []
    for name in sorted(data.contexts):
        for c in splitter.split(read(Path(name), data.contexts[name].encode())):
            chunks.append(c)
            sources.append(name)
        if len(chunks) >= n:
            break
    names = set(sources)
    questions = [q for q in data.questions if q.source in names and not q.impossible]
    return chunks, sources, [embedded(c) for c in chunks], questions


def cpu_name() -> str:
    flags, model = set(), platform.processor()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and not model.strip():
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    simd = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8") if f in flags]
    return f"{model or 'unknown'} ({', '.join(simd) or 'no AVX2'}), {os.cpu_count()} CPUs"


# --- runtimes: each returns encode(list[str]) -> unit vectors -----------------------------

def sorted_batches(texts, tokenizer, max_length, run, dim=384):
    order = np.argsort([len(t) for t in texts])
    out = np.empty((len(texts), dim), dtype=np.float32)
    for start in range(0, len(texts), BATCH):
        idx = order[start:start + BATCH]
        out[idx] = run(tokenizer.batch([texts[i] for i in idx], max_length))
    return out


def mean_pool(hidden, mask):
    m = mask[..., None].astype(np.float32)
    pooled = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def torch_fp32(ctx):
    from rag.models.encoder import _load_torch

    model = _load_torch(ctx.path, "cpu")
    return lambda texts: model.encode(texts, batch_size=BATCH, convert_to_numpy=True, normalize_embeddings=True)


def ort_session(path, level="all", threads=None, spinning=False):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count()
    options.graph_optimization_level = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_runner(ctx, path, **kw):
    session = ort_session(path, **kw)
    names = [i.name for i in session.get_inputs()]
    run = lambda batch: session.run(None, {n: batch[n] for n in names})[0]  # noqa: E731
    return lambda texts: sorted_batches(texts, ctx.tokenizer, ctx.max_length, run)


def quantized(ctx, name, **kw) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = ctx.work / f"{name}.onnx"
    if not target.is_file():
        source = kw.pop("source", ctx.onnx)
        kw["weight_type"] = {"s8": QuantType.QInt8, "u8": QuantType.QUInt8}[kw.pop("weights", "s8")]
        quantize_dynamic(str(source), str(target), **kw)
    return target


def bert_fused(ctx) -> Path:
    """ONNX Runtime's transformer optimiser (attention, LayerNorm, GELU fusion) for BERT."""
    from onnxruntime.transformers.optimizer import optimize_model

    target = ctx.work / "fused.onnx"
    if not target.is_file():
        optimize_model(str(ctx.onnx), model_type="bert", num_heads=12, hidden_size=384).save_model_to_file(str(target))
    return target


def openvino_runner(ctx, path, precision=None):
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": os.cpu_count(), "PERFORMANCE_HINT": "LATENCY"}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()
    names = [i.get_any_name() for i in compiled.inputs]
    run = lambda batch: request.infer({n: batch[n] for n in names})[compiled.outputs[0]]  # noqa: E731
    return lambda texts: sorted_batches(texts, ctx.tokenizer, ctx.max_length, run)


def ctranslate2_runner(ctx, compute_type):
    import ctranslate2

    target = ctx.work / "ct2"
    if not (target / "model.bin").is_file():
        from ctranslate2.converters import TransformersConverter

        TransformersConverter(ctx.path).convert(str(target), force=True)
    encoder = ctranslate2.Encoder(str(target), device="cpu", compute_type=compute_type,
                                  intra_threads=os.cpu_count())

    def run(batch):
        mask = batch["attention_mask"]
        ids = [row[:m.sum()].tolist() for row, m in zip(batch["input_ids"], mask)]
        out = encoder.forward_batch(ids)
        return mean_pool(np.array(out.last_hidden_state), mask)

    return lambda texts: sorted_batches(texts, ctx.tokenizer, ctx.max_length, run)


def rag_auto(ctx):
    """What rag ingests with on this CPU (Encoder's automatic choice)."""
    from rag.models.encoder import Encoder

    encoder = Encoder(ctx.path)
    print(f"rag-auto on this CPU: {encoder._pick_runtime('cpu')}")
    return encoder.encode


RUNTIMES = {
    "torch-fp32": lambda c: torch_fp32(c),
    "rag-auto": rag_auto,
    "ort-fp32": lambda c: ort_runner(c, c.onnx),
    "ort-fp32-basic": lambda c: ort_runner(c, c.onnx, level="basic"),
    "ort-fp32-spin": lambda c: ort_runner(c, c.onnx, spinning=True),
    "ort-fp32-1thread": lambda c: ort_runner(c, c.onnx, threads=1),
    "ort-fp32-fused": lambda c: ort_runner(c, bert_fused(c)),
    "ort-int8": lambda c: ort_runner(c, quantized(c, "s8-pc", per_channel=True)),  # rag's today
    "ort-int8-spin": lambda c: ort_runner(c, quantized(c, "s8-pc", per_channel=True), spinning=True),
    "ort-int8-tensor": lambda c: ort_runner(c, quantized(c, "s8-pt", per_channel=False)),
    "ort-int8-reduce": lambda c: ort_runner(c, quantized(c, "s8-pc-rr", per_channel=True, reduce_range=True)),
    "ort-int8-u8": lambda c: ort_runner(c, quantized(c, "u8-pc", weights="u8", per_channel=True)),
    "ort-int8-u8-tensor": lambda c: ort_runner(c, quantized(c, "u8-pt", weights="u8", per_channel=False)),
    "ort-int8-matmul": lambda c: ort_runner(c, quantized(c, "s8-pc-mm", per_channel=True, op_types_to_quantize=["MatMul"])),
    "ort-int8-fused": lambda c: ort_runner(c, quantized(c, "s8-pc-fused", source=bert_fused(c), per_channel=True)),
    "openvino-fp32": lambda c: openvino_runner(c, c.onnx),
    "openvino-f32-hint": lambda c: openvino_runner(c, c.onnx, precision="f32"),
    "openvino-bf16": lambda c: openvino_runner(c, c.onnx, precision="bf16"),
    "openvino-int8": lambda c: openvino_runner(c, quantized(c, "s8-pc", per_channel=True)),
    "ct2-fp32": lambda c: ctranslate2_runner(c, "float32"),
    "ct2-int8": lambda c: ctranslate2_runner(c, "int8"),
    "ct2-int8-fp32": lambda c: ctranslate2_runner(c, "int8_float32"),
}


class Context:
    def __init__(self, work: Path):
        from rag.models.catalog import encoder_path
        from rag.models.encoder import Encoder, OnnxEncoder

        self.path = encoder_path("all-MiniLM-L6-v2")
        self.encoder = Encoder(self.path, runtime="onnx")
        onnx = OnnxEncoder(Path(self.path))
        self.onnx, self.tokenizer, self.max_length = onnx.path, onnx.tokenizer, onnx.max_seq_length
        self.query = lambda texts: onnx.encode(texts, query=True)
        self.work = work


def recall_at_5(vectors, chunks, sources, questions, query_vectors) -> float:
    from types import SimpleNamespace

    from rag.evaluate import is_hit

    top = np.argsort(-(query_vectors @ vectors.T), axis=1)[:, :5]
    hits = 0
    for q, row in zip(questions, top):
        hits += any(is_hit(SimpleNamespace(source=sources[i], start=chunks[i].start, end=chunks[i].end), q, True)
                    for i in row)
    return hits / len(questions)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=2000)
    ap.add_argument("--only", help="comma-separated runtimes (default: all installed)")
    ap.add_argument("--work", help="folder for converted models (default: a temporary one)")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="rag-runtimes-"))
    work.mkdir(parents=True, exist_ok=True)
    ctx = Context(work)
    chunks, sources, texts, questions = sample_chunks(ctx.encoder, args.chunks)
    tokens = sum(len(ids) for ids in ctx.tokenizer(texts)["input_ids"])
    print(f"CPU: {cpu_name()}; {len(texts)} chunks ({tokens / len(texts):.0f} word pieces each on average) "
          f"of {len(set(sources))} articles; {len(questions)} questions")
    query_vectors = ctx.query([q.question for q in questions])
    names = args.only.split(",") if args.only else list(RUNTIMES)
    cached = work / f"reference-{len(texts)}.npy"  # torch fp32 vectors, kept with --work
    reference = np.load(cached) if cached.is_file() else None
    if reference is None and "torch-fp32" not in names:
        names.insert(0, "torch-fp32")
    print("| runtime | chunks/s | cosine to torch fp32 min / mean | dense recall@5 |")
    print("|---|---|---|---|")
    for name in names:
        try:
            encode = RUNTIMES[name](ctx)
            encode(texts[:BATCH])  # warm-up (first-run allocations, kernel selection)
        except ImportError as e:
            print(f"| {name} | not installed ({e.name}) | | |")
            continue
        except Exception as e:  # noqa: BLE001 - one runtime failing does not stop the table
            print(f"| {name} | failed: {type(e).__name__}: {str(e).splitlines()[0][:120]} | | |")
            continue
        t = time.perf_counter()
        vectors = np.asarray(encode(texts), dtype=np.float32)
        seconds = time.perf_counter() - t
        if name == "torch-fp32":
            reference = vectors
            np.save(cached, vectors)
        cos = np.sum(vectors * reference, axis=1)
        recall = recall_at_5(vectors, chunks, sources, questions, query_vectors)
        print(f"| {name} | {len(texts) / seconds:.1f} | {cos.min():.5f} / {cos.mean():.6f} | {recall:.3f} |", flush=True)


if __name__ == "__main__":
    main()
