"""GGUF files through llama.cpp (`llama-cpp-python`): loads in well under a second and
decodes several times faster than transformers on a laptop CPU; the default backend."""

from __future__ import annotations

from rag.models.decoders.base import LocalModel
from rag.models.device import pick_device

SAMPLING_TOP_K = 40  # llama.cpp's default, given to both local backends so they sample alike (temperature > 0)


class LlamaCpp(LocalModel):
    backend = "llama.cpp"

    def _load(self):
        from rag.models.kernels import activate

        activate()  # the llama.cpp build for this CPU (rag/models/kernels.py), before llama_cpp is imported
        from llama_cpp import Llama

        from rag.models.selfcheck import llama_load_params

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

    def score(self, messages: list[dict], prefix: str, candidates: list[str]) -> list[list[float]]:
        """The log-probability of each token of each candidate reply after the prompt (what the
        decoder would think of writing it): the answer's confidence and the candidates' ranking.
        The prompt is read once, from llama.cpp's cache where the last answer left it (the
        same prompt costs only the candidates' tokens); the candidates then go through one
        batched decode each, a few tokens long, and are dropped from the cache after."""
        import numpy as np
        from llama_cpp._internals import LlamaBatch

        prompt = self.tokenize(self.render(messages, prefix), special=True)
        pieces = [self.tokenize(" " + c.strip())[:32] for c in candidates]
        with self.lock:
            m = self.model
            if len(prompt) + max((len(p) for p in pieces), default=0) >= m.n_ctx():
                return [[] for _ in candidates]
            cached = 0
            for a, b in zip(m.input_ids[:m.n_tokens], prompt):
                if a != b:
                    break
                cached += 1
            m.n_tokens = min(cached, len(prompt) - 1)  # the last prompt token is read again: its logits
            m.eval(prompt[m.n_tokens:])
            first = _log_softmax(np.ctypeslib.as_array(m._ctx.get_logits_ith(-1), shape=(m.n_vocab(),)))
            at = len(prompt)
            batch = LlamaBatch(n_tokens=max(1, max((len(p) for p in pieces), default=1)), embd=0, n_seq_max=1,
                               verbose=False)
            scores = []
            try:
                for tokens in pieces:
                    if not tokens:
                        scores.append([])
                        continue
                    out = [float(first[tokens[0]])]
                    if len(tokens) > 1:
                        batch.set_batch(tokens[:-1], n_past=at, logits_all=True)
                        m._ctx.decode(batch)
                        for i, t in enumerate(tokens[1:]):
                            row = np.ctypeslib.as_array(m._ctx.get_logits_ith(i), shape=(m.n_vocab(),))
                            out.append(float(_log_softmax(row)[t]))
                        m._ctx.kv_cache_seq_rm(-1, at, -1)
                    scores.append(out)
            finally:
                batch.close()
                m._ctx.kv_cache_seq_rm(-1, at, -1)
                m.n_tokens = at  # the cache holds exactly the prompt: the next answer reuses it
                m._requires_eval = True  # its logits are a candidate's: the next answer reads a token again
            return scores

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


def _log_softmax(row):
    import numpy as np

    top = float(row.max())
    return row - (top + np.log(np.exp(row - top).sum()))
