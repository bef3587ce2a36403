"""Any Hugging Face causal LM directory (or a GGUF file through transformers' `gguf_file=`)."""

from __future__ import annotations

import threading
from pathlib import Path

from rag.models.decoders.base import LocalModel
from rag.models.decoders.llama import SAMPLING_TOP_K
from rag.models.device import pick_device


class Transformers(LocalModel):
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
        from transformers import (
            LogitsProcessor,
            LogitsProcessorList,
            StoppingCriteria,
            StoppingCriteriaList,
            TextIteratorStreamer,
        )

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
