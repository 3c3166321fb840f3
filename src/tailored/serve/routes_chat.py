"""``POST /v1/chat/completions``: JSON answers and server-sent-event streams.

FastAPI validates the body against :class:`~tailored.serve.protocol.ChatCompletionRequest` (its
errors become OpenAI 400s in ``app.py``); the route renders the request (errors come back before
anything is queued), hands it to the engine, and turns the engine's events -- text deltas per choice, finish reasons, usage -- into
OpenAI's response or chunk objects. A client that disconnects cancels its rows in the running batch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from fastapi.routing import APIRoute

from tailored.errors import TailoredError
from tailored.eval.generate import GenerationSettings
from tailored.serve.app import internal_message
from tailored.serve.protocol import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    ErrorBody,
    ErrorResponse,
    Usage,
    completion_id,
)
from tailored.serve.request import BadRequest, GenerationFailed, label_constraint

log = logging.getLogger("tailored.serve")


class JsonBody(APIRoute):
    """A route whose body is read as JSON whatever its content-type says (``curl -d`` sends form-urlencoded).

    The body is parsed here, once: Starlette keeps the parse on the request and FastAPI's own body reading
    uses it, then validates it against the route's model (errors: ``app.py``'s handler). A body that is
    not JSON is answered here, with the decoder's message.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_json(request: Request) -> Response:
            try:
                await request.json()
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise BadRequest(f"the request body is not valid JSON: {exc}") from None
            headers = [(k, v) for k, v in request.scope["headers"] if k != b"content-type"]
            request.scope["headers"] = [*headers, (b"content-type", b"application/json")]
            return await handle(request)

        return handle_json


router = APIRouter(route_class=JsonBody)


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
    engine, registry = request.app.state.engine, request.app.state.registry
    entry = await asyncio.to_thread(registry.resolve, body.model, request.state.caller.scope)
    try:
        messages = body.chat_messages()
    except ValueError as exc:
        raise BadRequest(str(exc), param="messages") from None
    constraint = body.structure()
    if body.constrain == "labels":
        constraint = await asyncio.to_thread(label_constraint, entry)
    sampling = GenerationSettings(  # OpenAI's names map to ours here, once
        max_new_tokens=body.max_completion_tokens or body.max_tokens,  # type: ignore[arg-type]  # None: engine default
        temperature=1.0 if body.temperature is None else body.temperature,  # OpenAI's default
        top_p=1.0 if body.top_p is None else body.top_p, stop=list(body.stop or []), seed=body.seed,
        ignore_eos=body.ignore_eos, constraint=constraint, logprobs=bool(body.logprobs),
        top_logprobs=body.top_logprobs or 0,
    )
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def on_event(kind: str, payload: Any) -> None:  # called from the scheduler thread
        loop.call_soon_threadsafe(events.put_nowait, (kind, payload))

    n = body.n or 1
    req = await asyncio.to_thread(engine.prepare, entry, messages, sampling, n, on_event)
    req.request_id = request.state.request_id
    engine.submit(req)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(stream(req, events, entry.id, n, include_usage), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache"})
    watcher = asyncio.create_task(_on_disconnect(request, events))
    try:
        texts, reasons = [""] * n, ["stop"] * n
        logprobs: list[list[Any]] = [[] for _ in range(n)]
        while True:
            kind, payload = await events.get()
            if kind == "gone":  # nobody is there to read an answer
                return Response(status_code=499)
            if kind == "delta":
                texts[payload[0]] += payload[1]
                logprobs[payload[0]] += _logprobs_of(payload) or []
            elif kind == "finish":
                reasons[payload[0]] = payload[1]
            elif kind == "error":
                raise client_error(payload, req.request_id)
            else:
                choices = [Choice(index=i, message=AssistantMessage(content=t), finish_reason=r,  # type: ignore[arg-type]
                                  logprobs=ChoiceLogprobs(content=logprobs[i]) if body.logprobs else None)
                           for i, (t, r) in enumerate(zip(texts, reasons))]
                return ChatCompletion(model=entry.id, choices=choices, usage=Usage(**payload)).model_dump(mode="json")
    finally:
        watcher.cancel()
        req.cancel()  # no-op when finished; frees the rows if the client went away


def _logprobs_of(payload: tuple[Any, ...]) -> list[Any] | None:
    """The logprob entries a delta event carries (engines without logprobs send ``(index, text)``)."""
    return payload[2] if len(payload) > 2 else None


async def _on_disconnect(request: Request, events: asyncio.Queue) -> None:
    """Put ``("gone", None)`` on ``events`` when the client hangs up (the body is read: only that can come now)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    events.put_nowait(("gone", None))


def client_error(payload: BaseException, request_id: str) -> TailoredError:
    """What the client is told of a failure: our own errors as they are, anything else as an id to look up.

    The exception itself goes to the server's log under the request id, never to the client.
    """
    if isinstance(payload, TailoredError):
        return payload
    log.error("request %s: generation failed", request_id, exc_info=payload)
    return GenerationFailed(internal_message(request_id))


def _sse(event: ChatCompletionChunk | ErrorResponse) -> str:
    return f"data: {event.model_dump_json()}\n\n"


async def stream(req: Any, events: asyncio.Queue, model: str, n: int, include_usage: bool) -> AsyncIterator[str]:
    """SSE: a role chunk per choice, content deltas, a finish chunk per choice, usage (if asked), ``[DONE]``."""
    cid, created = completion_id(), int(time.time())

    def chunk(*choices: ChunkChoice, usage: Usage | None = None) -> str:
        return _sse(ChatCompletionChunk(id=cid, created=created, model=model, choices=list(choices), usage=usage))

    try:
        for i in range(n):
            yield chunk(ChunkChoice(index=i, delta=Delta(role="assistant", content="")))
        while True:
            kind, payload = await events.get()
            if kind == "delta":
                lps = _logprobs_of(payload)
                yield chunk(ChunkChoice(index=payload[0], delta=Delta(content=payload[1]),
                                        logprobs=ChoiceLogprobs(content=lps) if lps is not None else None))
            elif kind == "finish":
                yield chunk(ChunkChoice(index=payload[0], delta=Delta(), finish_reason=payload[1]))
            elif kind == "error":
                error = client_error(payload, req.request_id)
                message = error.message + (f" (request id {req.request_id})" if getattr(error, "http_status", 500) >= 500
                                           and req.request_id not in error.message else "")
                yield _sse(ErrorResponse(error=ErrorBody(message=message, type=getattr(error, "error_type", "server_error"),
                                                         param=getattr(error, "param", None),
                                                         code=getattr(error, "code", None))))
                return
            else:
                if include_usage:
                    yield chunk(usage=Usage(**payload))
                yield "data: [DONE]\n\n"
                return
    finally:
        req.cancel()
