"""The GPT-style decoder: three small backends behind one interface.

- `LlamaCpp` (`llama-cpp-python`) for GGUF files: loads in well under a second and decodes
  several times faster than transformers on a laptop CPU; the default.
- `Transformers` for any Hugging Face causal LM directory (GGUF via `gguf_file=` too).
- `OpenAI` for any OpenAI-compatible server the user runs (Ollama, vLLM, LM Studio,
  llama.cpp's server): `openai:MODEL`. Free generation only; rag still checks the citations.

A decoder is loaded once per process (`load_decoder`) and owns the one lock that serialises
generation on it, so any number of threads and `RAG` objects can ask at once: questions queue
on the model, tokens of two answers never interleave. The local backends support
span-constrained decoding: every generated token must continue a verbatim copy of the source
texts, so a tiny model chooses *where* to copy from and when to stop, and cannot invent words."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .encoder import pick_device
from .errors import ModelNotFound, RagError
from .models import cpu_count, generator_path

log = logging.getLogger(__name__)
_LOADED: dict[tuple, "Decoder"] = {}
_LOAD_LOCK = threading.Lock()
SAMPLING_TOP_K = 40  # llama.cpp's default, given to both backends so they sample alike (temperature > 0)


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


def load_decoder(name: str, backend: str = "auto", device: str = "auto", context_window: int = 2048,
                 base_url: str = "", timeout: float = 60.0) -> "Decoder":
    """The process-wide decoder for these settings (made on first call, then shared). Nothing
    heavy happens here: the weights load on first use or on `warm_up()`."""
    if name.lower().startswith("openai:"):
        backend, name = "openai", name.split(":", 1)[1]
    key = (name, backend, device, context_window, base_url if backend == "openai" else "")
    with _LOAD_LOCK:
        if key not in _LOADED:
            if backend == "openai":
                _LOADED[key] = OpenAI(name, base_url, context_window, timeout)
            else:
                path = generator_path(name)
                if backend == "auto":
                    backend = "llama.cpp" if path.endswith(".gguf") and _has_llama_cpp() else "transformers"
                if backend not in BACKENDS:
                    raise RagError(f"unknown decoder backend {backend!r}; use one of {', '.join(BACKENDS)}")
                _LOADED[key] = BACKENDS[backend](path, device, context_window)
        return _LOADED[key]


class Decoder:
    """The interface every backend implements. `stream` holds the model's lock while it runs."""

    backend = ""
    copies = True  # can constrain its output to copies of the sources

    def __init__(self, path: str, device: str, context_window: int):
        self.name = self.path = path
        self.device = device
        self.context_window = context_window
        self.threads = cpu_count()
        self.lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._model = None
        self._first_cache: dict[str, tuple[int, ...]] = {}

    def warm_up(self) -> "Decoder":
        """Load the weights now (the web UI calls this at start), once."""
        if self._model is None:
            with self._load_lock:
                if self._model is None:
                    self._model = self._load()
        return self

    @property
    def model(self):
        return self.warm_up()._model

    def _load(self):
        raise NotImplementedError

    # facts about the model
    n_ctx: int
    has_chat_template: bool
    vocab_size: int

    def tokenize(self, text: str, special: bool = False) -> list[int]:
        raise NotImplementedError

    def count(self, text: str) -> int:
        return len(self.tokenize(text, special=True))

    def render(self, messages: list[dict], prefix: str = "") -> str:
        """Chat messages to the model's prompt text (its own template where it has one, plain
        text otherwise), followed by `prefix`, the start of the reply."""
        if self.has_chat_template:
            return self._template(messages) + prefix
        return "\n\n".join(m["content"] for m in messages) + "\n" + prefix

    def _template(self, messages: list[dict]) -> str:
        raise NotImplementedError

    def stream(self, messages: list[dict], prefix: str = "", max_tokens: int = 64,
               stop: list[str] | None = None, copy_from: list[str] | None = None,
               avoid_first: str = "", temperature: float = 0.0) -> Iterator[str]:
        """Yield the reply's text pieces. `copy_from`: restrict the output to verbatim spans of
        these texts; `avoid_first`: words the copy may not start with (the question's own words)."""
        prompt = self.render(messages, prefix)
        constraint = None
        if copy_from:
            sources = [self.tokenize(t) for t in copy_from] + [self.tokenize(" " + t) for t in copy_from]
            not_first = {t for w in set(avoid_first.split()) for t in self._first_tokens(w)}
            constraint = CopyConstraint(sources, self._stop_ids(), self.vocab_size, not_first=not_first)
        with self.lock:  # one generation at a time on this model, whoever asks
            yield from self._stream(prompt, max_tokens, stop or [], constraint, temperature)

    def _stream(self, prompt, max_tokens, stop, constraint, temperature) -> Iterator[str]:
        raise NotImplementedError

    def _stop_ids(self) -> set[int]:
        raise NotImplementedError

    def _first_tokens(self, word: str) -> tuple[int, ...]:
        """The token a word starts with, alone and after a space (cached: the same ~150 function
        words are looked up for every question)."""
        if word not in self._first_cache:
            self._first_cache[word] = tuple(self.tokenize(word)[:1] + self.tokenize(" " + word)[:1])
        return self._first_cache[word]


class LlamaCpp(Decoder):
    backend = "llama.cpp"

    def _load(self):
        from llama_cpp import Llama

        from .selfcheck import llama_load_params

        gpu = pick_device(self.device) == "cuda"
        _quiet_llama_logs()
        with llama_load_params():
            return Llama(model_path=self.path, n_ctx=self.context_window, n_threads=self.threads,
                         n_gpu_layers=-1 if gpu else 0, verbose=False, seed=0)

    @property
    def n_ctx(self) -> int:
        return self.model.n_ctx()

    @property
    def has_chat_template(self) -> bool:
        return bool(self.model.metadata.get("tokenizer.chat_template"))

    @property
    def vocab_size(self) -> int:
        return self.model.n_vocab()

    def tokenize(self, text: str, special: bool = False) -> list[int]:
        return self.model.tokenize(text.encode(), add_bos=special, special=special)

    def _template(self, messages):
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        model = self.model
        template = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(
            model.metadata["tokenizer.chat_template"])
        bos = model.detokenize([model.token_bos()]).decode(errors="ignore") if model.token_bos() >= 0 else ""
        return template.render(messages=messages, add_generation_prompt=True, bos_token=bos, eos_token="")

    def _stop_ids(self) -> set[int]:
        model = self.model
        ids = {model.token_eos(), *model.tokenize(b"\n", add_bos=False, special=False)}
        for word in ("<|im_end|>", "<end_of_turn>", "<|endoftext|>"):
            toks = model.tokenize(word.encode(), add_bos=False, special=True)
            if len(toks) == 1:
                ids.add(toks[0])
        return ids

    def _stream(self, prompt, max_tokens, stop, constraint, temperature):
        from llama_cpp import LogitsProcessorList

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
        # sampling keeps llama.cpp's own default top_k; greedy needs only the best token
        pieces = self.model.create_completion(
            prompt, max_tokens=max_tokens, temperature=temperature, top_k=1 if temperature == 0 else SAMPLING_TOP_K,
            stop=stop or None, stream=True, logits_processor=processors, seed=0)
        for piece in pieces:
            text = piece["choices"][0]["text"]
            if text:
                yield text


class Transformers(Decoder):
    backend = "transformers"

    def _load(self):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kwargs = {}
        source = self.path
        if self.path.endswith(".gguf"):
            source, kwargs["gguf_file"] = str(Path(self.path).parent), Path(self.path).name
        self.tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **kwargs)
        model.to(pick_device(self.device)).eval()
        torch.set_num_threads(self.threads)
        return model

    @property
    def n_ctx(self) -> int:
        limit = getattr(self.model.config, "max_position_embeddings", None) or self.context_window
        return min(limit, self.context_window)

    @property
    def has_chat_template(self) -> bool:
        self.warm_up()
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def vocab_size(self) -> int:
        self.warm_up()
        return len(self.tokenizer)

    def tokenize(self, text: str, special: bool = False) -> list[int]:
        self.warm_up()
        return self.tokenizer(text, add_special_tokens=special)["input_ids"]

    def _template(self, messages):
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _stop_ids(self) -> set[int]:
        tok = self.tokenizer
        ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
        ids.update(tok("\n", add_special_tokens=False)["input_ids"][-1:])
        return ids

    def _stream(self, prompt, max_tokens, stop, constraint, temperature):
        """transformers' own `generate` loop on a thread, its streamer feeding us text; the copy
        constraint and the newline stop are logits processors."""
        import torch
        from transformers import (LogitsProcessor, LogitsProcessorList, StoppingCriteria,
                                  StoppingCriteriaList, TextIteratorStreamer)

        model, tok = self.model, self.tokenizer
        ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"].to(model.device)
        stop_ids = sorted(self._stop_ids())

        class Constrain(LogitsProcessor):
            def __call__(self, input_ids, scores):
                if constraint is not None:
                    for token in input_ids[0, ids.shape[1] + constraint.generated:]:
                        constraint.advance(int(token))
                    masked = constraint.mask(scores[0].float().cpu().numpy())
                    scores = torch.from_numpy(masked).to(scores.device).unsqueeze(0)
                return scores

        halt = threading.Event()  # set when a stop string ended the answer early

        class Halt(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return halt.is_set()

        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
        kwargs = dict(stopping_criteria=StoppingCriteriaList([Halt()]), input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                      logits_processor=LogitsProcessorList([Constrain()]), streamer=streamer,
                      eos_token_id=stop_ids, pad_token_id=tok.eos_token_id or stop_ids[0],
                      do_sample=temperature > 0)
        if temperature > 0:
            kwargs.update(temperature=temperature, top_k=SAMPLING_TOP_K)
        errors = []

        def run():
            try:
                with torch.inference_mode():
                    model.generate(**kwargs)
            except Exception as e:  # surfaced to the caller below
                errors.append(e)
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        text, emitted = "", 0
        longest = max((len(s) for s in stop), default=1)
        try:
            for piece in streamer:
                text += piece
                cut = min((text.find(s) for s in stop if s in text), default=-1)
                if cut >= 0:
                    if cut > emitted:
                        yield text[emitted:cut]
                    return
                safe = len(text) - longest + 1
                if safe > emitted:
                    yield text[emitted:safe]
                    emitted = safe
            if len(text) > emitted:
                yield text[emitted:]
        finally:
            halt.set()
            thread.join()  # the model is free only when its loop is done
        if errors:
            raise errors[0]


class OpenAI(Decoder):
    """A model served over the OpenAI API. rag sends the chat messages; the server renders and
    decodes. The key comes from OPENAI_API_KEY and is never printed or logged."""

    backend = "openai"
    copies = False
    has_chat_template = False  # the server applies it; rendering here is only for counting

    def __init__(self, model: str, base_url: str, context_window: int, timeout: float):
        super().__init__(model, "cpu", context_window)
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        self.timeout = timeout
        # a remote server has no local queue to protect: let requests run side by side
        self.lock = _NoLock()

    def _load(self):
        import openai

        return openai.OpenAI(base_url=self.base_url, api_key=os.environ.get("OPENAI_API_KEY") or "none",
                             timeout=self.timeout, max_retries=1)

    @property
    def n_ctx(self) -> int:
        return self.context_window

    vocab_size = 0

    def tokenize(self, text: str, special: bool = False) -> list[int]:
        """No tokenizer here: about one token per 3 characters (an over-estimate for English,
        about right for Chinese), so the prompt budget errs on the short side."""
        return [0] * (len(text.encode()) // 3 + 1)

    def stream(self, messages, prefix="", max_tokens=64, stop=None, copy_from=None, avoid_first="",
               temperature=0.0):
        import openai

        client = self.model
        try:
            reply = client.chat.completions.create(
                model=self.name, messages=messages, max_tokens=max_tokens, temperature=temperature,
                stream=True, stop=(stop or [])[:4] or None)
            started = False
            for event in reply:
                if not event.choices:
                    continue
                text = event.choices[0].delta.content or ""
                if not started:  # a chat model may repeat the "Answer:" the prompt used
                    text = text.lstrip()
                    if prefix and text.startswith(prefix.strip()):
                        text = text[len(prefix.strip()):].lstrip()
                    started = bool(text)
                if text:
                    yield text
        except openai.APIConnectionError as e:
            raise RagError(f"cannot reach the OpenAI-compatible server at {self.base_url} ({type(e).__name__}); "
                           "start it, or set RAG_OPENAI_BASE_URL") from None
        except openai.NotFoundError:
            raise ModelNotFound(f"the server at {self.base_url} does not serve a model {self.name!r}") from None
        except openai.AuthenticationError:
            raise RagError(f"the server at {self.base_url} refused the API key (set OPENAI_API_KEY)") from None
        except openai.APIStatusError as e:
            raise RagError(f"the server at {self.base_url} answered HTTP {e.status_code}") from None


class _NoLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


BACKENDS = {"llama.cpp": LlamaCpp, "transformers": Transformers}


def _has_llama_cpp() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


_LOG_CALLBACK = None


def _quiet_llama_logs() -> None:
    """Silence llama.cpp's C logging through its own log callback (not by redirecting the
    process's stderr, which other threads such as Streamlit's are writing to)."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is None:
        import llama_cpp

        @llama_cpp.llama_log_callback
        def swallow(level, text, user_data):
            return None

        _LOG_CALLBACK = swallow  # must outlive every later log call: llama.cpp keeps the pointer
        llama_cpp.llama_log_set(_LOG_CALLBACK, None)
