"""POST /v1/chat/completions: OpenAI's chat, answered from the index named by `model`, with the
answer's sources beside OpenAI's fields. The question waits in the decoder's line
(`gate.Gate`); the answer comes whole or as OpenAI's server-sent events."""

from __future__ import annotations

import logging
import threading
import time
import uuid

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from rag.core.present import is_blank
from rag.core.records import Answer
from rag.core.settings import Settings
from rag.http import gate
from rag.http.access import Access, access
from rag.http.deadline import or_gone
from rag.http.protocol import DONE, ApiError, ChatRequest, chunk, completion, event, extras, internal_error, text, usage

log = logging.getLogger(__name__)
router = APIRouter(tags=["openai"])


@router.post("/v1/chat/completions",
             summary="Answer the last user message from the index named by `model`, with sources")
async def chat(body: ChatRequest, request: Request, who: Access = Depends(access)):
    state = who.state
    rag = who.index(body.model)
    kwargs = chat_args(body, state.settings)
    deadline = request.state.deadline
    ticket = await or_gone(request, state.gate.enter(deadline))
    items, cancel = gate.answer(ticket, state.answer_pool, rag, kwargs, deadline)
    meta = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": body.model}
    if body.stream:
        return StreamingResponse(_sse(items, meta, cancel), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    try:
        answer = await or_gone(request, _last(items))
    finally:
        cancel.set()
    return completion(answer, meta)


def chat_args(body: ChatRequest, s: Settings) -> dict:
    """The question (the last user message) and the conversation before it, within the limits."""
    turns = [m for m in body.messages if m.role in ("user", "assistant")]
    if not turns or turns[-1].role != "user":
        raise ApiError(422, "messages: the last message must be the user's question", "no_question", "messages")
    question = text(turns[-1].content).strip()
    if is_blank(question):  # also only control or zero-width characters: nothing to translate or search
        raise ApiError(422, "messages: the question is empty (no visible characters)", "empty_question", "messages")
    if len(question) > s.serve_max_question_chars:
        raise ApiError(422, f"messages: the question is {len(question)} characters; at most "
                            f"{s.serve_max_question_chars}", "question_too_long", "messages")
    history = [{"role": m.role, "content": text(m.content)} for m in turns[:-1]]
    if len(history) > s.serve_max_history:
        raise ApiError(422, f"messages: at most {s.serve_max_history} earlier messages", "history_too_long",
                       "messages")
    if any(len(h["content"]) > s.serve_max_message_chars for h in history):
        raise ApiError(422, f"messages: an earlier message is over {s.serve_max_message_chars} characters",
                       "message_too_long", "messages")
    if body.k is not None and body.k > s.serve_max_k:
        raise ApiError(422, f"k: at most {s.serve_max_k}", "invalid_value", "k")
    max_tokens = body.max_completion_tokens or body.max_tokens
    if max_tokens is not None:
        max_tokens = min(max_tokens, s.serve_max_tokens)
    return {"question": question, "history": history or None, "k": body.k, "mode": body.mode,
            "max_tokens": max_tokens}


async def _last(items):
    last = None
    async for item in items:
        last = item
    return last


async def _sse(items, meta: dict, cancel: threading.Event):
    """OpenAI's chunks. Drafts (the decoder's raw span, replaced by the composed answer) go only
    in `rag_draft`, never in the content: the content is only ever appended to."""
    try:
        yield chunk(meta, {"role": "assistant", "content": ""})
        async for item in items:
            if isinstance(item, Answer):
                yield chunk(meta, {"content": item.text})
                yield chunk(meta, {}, "stop", **extras(item), usage=usage(item))
            else:
                yield chunk(meta, {}, rag_draft=str(getattr(item, "text", item)))
    except ApiError as e:
        yield event(e.body())
    except Exception as e:  # noqa: BLE001 - the status line is sent: the error goes in the stream
        log.exception("answer failed")
        yield event(internal_error(e))
    finally:
        cancel.set()
    yield DONE
