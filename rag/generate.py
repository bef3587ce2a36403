"""The GPT-style decoder behind one small interface, with two backends:

- llama.cpp (`llama-cpp-python`) for GGUF files: loads in well under a second and decodes
  several times faster than transformers on a laptop CPU; the default.
- transformers `AutoModelForCausalLM` for any Hugging Face causal LM name or directory
  (and GGUF files via `gguf_file=` when llama.cpp is not installed).

Both load lazily, once per process, and support span-constrained decoding: given source
texts, every generated token must continue a verbatim copy of those texts, so a tiny model
chooses *where* to copy from and when to stop, and cannot invent words."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .encoder import pick_device
from .models import generator_path

log = logging.getLogger(__name__)
_LOADED: dict[tuple, object] = {}
_LOAD_LOCK = threading.Lock()


class CopyConstraint:
    """Allows only tokens that extend a verbatim copy of one of the source token sequences.
    `stop_ids` (end of text, newline) are always allowed once something was copied."""

    def __init__(self, sources: list[list[int]], stop_ids: set[int], vocab_size: int, min_tokens: int = 1,
                 not_first: set[int] | None = None):
        self.sources = [np.asarray(s, dtype=np.int64) for s in sources if len(s)]
        self.stop_ids = [i for i in stop_ids if 0 <= i < vocab_size]
        self.vocab_size = vocab_size
        self.min_tokens = min_tokens
        # positions (source, index of the next token to copy) consistent with what was generated
        self.positions = [(s, i) for s, seq in enumerate(self.sources) for i in range(len(seq))]
        self.generated = 0
        self.not_first = not_first or set()

    def allowed(self) -> np.ndarray:
        ids = {int(self.sources[s][i]) for s, i in self.positions if i < len(self.sources[s])}
        if self.generated == 0 and ids - self.not_first:
            ids -= self.not_first
        if self.generated >= self.min_tokens or not ids:
            ids.update(self.stop_ids)
        return np.fromiter(ids, dtype=np.int64)

    def advance(self, token: int) -> None:
        self.generated += 1
        self.positions = [(s, i + 1) for s, i in self.positions
                          if i < len(self.sources[s]) and self.sources[s][i] == token]

    def mask(self, scores: np.ndarray) -> np.ndarray:
        allowed = self.allowed()
        masked = np.full_like(scores, -np.inf)
        allowed = allowed[allowed < scores.shape[-1]]
        masked[..., allowed] = scores[..., allowed]
        return masked


class Generator:
    """load lazily; count tokens; generate or stream text for chat messages or a raw prompt."""

    def __init__(self, name: str = "smollm2", backend: str = "auto", device: str = "auto",
                 context_window: int = 2048, threads: int | None = None):
        self.name = name
        self.path = generator_path(name)
        self.is_gguf = self.path.endswith(".gguf")
        if backend == "auto":
            backend = "llama.cpp" if self.is_gguf and _has_llama_cpp() else "transformers"
        self.backend = backend
        self.device = device
        self.context_window = context_window
        self.threads = threads or max(1, len(os.sched_getaffinity(0)))
        self._model = None
        self._tokenizer = None
        self._first_cache: dict[str, tuple[int, ...]] = {}

    # --- loading -----------------------------------------------------------------------

    def load(self):
        if self._model is None:
            key = (self.path, self.backend, self.device, self.context_window)
            with _LOAD_LOCK:
                if key not in _LOADED:
                    _LOADED[key] = self._load_llama() if self.backend == "llama.cpp" else self._load_hf()
                self._model, self._tokenizer = _LOADED[key]
        return self._model

    def _load_llama(self):
        from llama_cpp import Llama

        gpu = pick_device(self.device) == "cuda"
        with _quiet_stderr():  # llama.cpp logs from C even with verbose=False
            model = Llama(model_path=self.path, n_ctx=self.context_window, n_threads=self.threads,
                          n_gpu_layers=-1 if gpu else 0, verbose=False, seed=0)
        return model, None

    def _load_hf(self):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kwargs = {}
        source = self.path
        if self.is_gguf:
            source, kwargs["gguf_file"] = str(Path(self.path).parent), Path(self.path).name
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **kwargs)
        device = pick_device(self.device)
        model.to(device).eval()
        torch.set_num_threads(self.threads)
        return model, tokenizer

    # --- facts about the model ---------------------------------------------------------

    @property
    def n_ctx(self) -> int:
        model = self.load()
        if self.backend == "llama.cpp":
            return model.n_ctx()
        limit = getattr(model.config, "max_position_embeddings", None) or self.context_window
        return min(limit, self.context_window)

    @property
    def has_chat_template(self) -> bool:
        model = self.load()
        if self.backend == "llama.cpp":
            return bool(model.metadata.get("tokenizer.chat_template"))
        return bool(getattr(self._tokenizer, "chat_template", None))

    def tokenize(self, text: str, special: bool = False) -> list[int]:
        model = self.load()
        if self.backend == "llama.cpp":
            return model.tokenize(text.encode(), add_bos=special, special=special)
        return self._tokenizer(text, add_special_tokens=special)["input_ids"]

    def count(self, text: str) -> int:
        return len(self.tokenize(text, special=True))

    def render(self, messages: list[dict], prefix: str = "") -> str:
        """Chat messages to the model's prompt text (its own template where it has one, plain
        text otherwise), followed by `prefix`, the start of the reply."""
        return self._render(messages) + prefix

    def _render(self, messages: list[dict]) -> str:
        model = self.load()
        if self.has_chat_template:
            if self.backend == "llama.cpp":
                from jinja2.sandbox import ImmutableSandboxedEnvironment

                template = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(
                    model.metadata["tokenizer.chat_template"])
                bos = model.detokenize([model.token_bos()]).decode(errors="ignore") if model.token_bos() >= 0 else ""
                return template.render(messages=messages, add_generation_prompt=True, bos_token=bos,
                                       eos_token="")
            return self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in messages) + "\n"

    def _stop_ids(self) -> set[int]:
        model = self.load()
        if self.backend == "llama.cpp":
            ids = {model.token_eos(), *model.tokenize(b"\n", add_bos=False, special=False)}
            for word in ("<|im_end|>", "<end_of_turn>", "<|endoftext|>"):
                toks = model.tokenize(word.encode(), add_bos=False, special=True)
                if len(toks) == 1:
                    ids.add(toks[0])
            return ids
        tok = self._tokenizer
        ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
        ids.update(tok("\n", add_special_tokens=False)["input_ids"][-1:])
        return ids

    # --- generation --------------------------------------------------------------------

    def stream(self, prompt: str, max_tokens: int = 64, stop: list[str] | None = None,
               copy_from: list[str] | None = None, avoid_first: str = "",
               temperature: float = 0.0) -> Iterator[str]:
        """Yield text pieces. `copy_from`: restrict the output to verbatim spans of these texts;
        `avoid_first`: words the copy may not start with (the question's own words)."""
        self.load()
        constraint = None
        if copy_from:
            sources = [self.tokenize(t) for t in copy_from] + [self.tokenize(" " + t) for t in copy_from]
            not_first = {t for w in set(avoid_first.split()) for t in self._first_tokens(w)}
            constraint = CopyConstraint(sources, self._stop_ids(), self.vocab_size, not_first=not_first)
        if self.backend == "llama.cpp":
            yield from self._stream_llama(prompt, max_tokens, stop or [], constraint, temperature)
        else:
            yield from self._stream_hf(prompt, max_tokens, stop or [], constraint, temperature)

    def _first_tokens(self, word: str) -> tuple[int, ...]:
        """The token a word starts with, alone and after a space (cached: the same ~150 function
        words are looked up for every question)."""
        if word not in self._first_cache:
            self._first_cache[word] = tuple(self.tokenize(word)[:1] + self.tokenize(" " + word)[:1])
        return self._first_cache[word]

    def generate(self, prompt: str, **kwargs) -> str:
        return "".join(self.stream(prompt, **kwargs))

    @property
    def vocab_size(self) -> int:
        model = self.load()
        return model.n_vocab() if self.backend == "llama.cpp" else len(self._tokenizer)

    def _stream_llama(self, prompt, max_tokens, stop, constraint, temperature):
        from llama_cpp import LogitsProcessorList

        model = self._model
        processors = None
        if constraint is not None:
            start = [None]

            def processor(input_ids, scores):
                if start[0] is None:
                    start[0] = len(input_ids)
                for token in input_ids[start[0] + constraint.generated:]:
                    constraint.advance(int(token))
                return constraint.mask(scores)

            processors = LogitsProcessorList([processor])
        pieces = model.create_completion(
            prompt, max_tokens=max_tokens, temperature=temperature, top_k=1 if temperature == 0 else 40,
            stop=stop or None, stream=True, logits_processor=processors, seed=0)
        for piece in pieces:
            text = piece["choices"][0]["text"]
            if text:
                yield text

    def _stream_hf(self, prompt, max_tokens, stop, constraint, temperature):
        import torch

        model, tok = self._model, self._tokenizer
        ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"].to(model.device)
        stop_ids = self._stop_ids()
        past, text, emitted = None, "", 0
        generated: list[int] = []
        with torch.inference_mode():
            for _ in range(max_tokens):
                out = model(input_ids=ids, past_key_values=past, use_cache=True)
                past = out.past_key_values
                scores = out.logits[0, -1].float().cpu().numpy()
                if constraint is not None:
                    scores = constraint.mask(scores)
                if temperature > 0:
                    p = np.exp((scores - scores.max()) / temperature)
                    token = int(np.random.default_rng(len(generated)).choice(len(p), p=p / p.sum()))
                else:
                    token = int(np.argmax(scores))
                if token in stop_ids and (tok.decode([token]) != "\n" or generated):
                    break
                if constraint is not None:
                    constraint.advance(token)
                generated.append(token)
                text = tok.decode(generated, skip_special_tokens=True)
                cut = min((text.find(s) for s in stop if s in text), default=-1)
                if cut >= 0:
                    if cut > emitted:
                        yield text[emitted:cut]
                    return
                safe = len(text) - max((len(s) for s in stop), default=1) + 1
                if safe > emitted:
                    yield text[emitted:safe]
                    emitted = safe
                ids = torch.tensor([[token]], device=model.device)
        if len(text) > emitted:
            yield text[emitted:]


def _has_llama_cpp() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


class _quiet_stderr:
    """Silence file descriptor 2 (C code's logging) for a block."""

    def __enter__(self):
        import sys

        sys.stderr.flush()
        self.saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)

    def __exit__(self, *exc):
        os.dup2(self.saved, 2)
        os.close(self.saved)
