"""A lower bound: only the wire work a turn of ours does, with no framework and nothing
stored, so `make bench` can say how much of our CPU any app built this way must spend.

    OPENAI_BASE_URL=http://127.0.0.1:8911/v1 uvicorn bench.wire_floor:app

A bare ASGI app under the same uvicorn: it reads the request's JSON, calls the model
through the SDK the way `chat.llm.client` does (`with_streaming_response`, the messages
in `extra_body`, the same HTTP client as the seed's app), decodes each SSE event with
`json.loads`, and sends the text in frames at most one per `CHAT_STREAM_FRAME_MS`, as
SSE `start`, `delta` and `end` events (events split on a blank line, as the fake
upstream sends them). It is cheaper than any real app: no routing, middleware, identity,
limits, storage, stop requests or idle checks, and a frame's text waits for the next
chunk after its interval rather than for a timer. It imports nothing of ours but the
seed app's HTTP client.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

import openai

from bench.fastapi_seed import http_client

FRAME_SECONDS = float(os.environ.get("CHAT_STREAM_FRAME_MS", "40")) / 1000


@functools.cache
def _client() -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=os.environ["OPENAI_BASE_URL"],
        api_key=os.environ.get("OPENAI_API_KEY") or "x",
        http_client=http_client(),
    )


def _frame(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def _body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += bytes(message.get("body", b""))
        if not message.get("more_body"):
            return body


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    message = json.loads(await _body(receive))["message"]
    request = _client().chat.completions.with_streaming_response.create(
        model=os.environ.get("CHAT_MODEL", "fake-model"),
        messages=[],
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"messages": [{"role": "user", "content": message}]},
    )
    headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})

    async def body(data: bytes, more: bool = True) -> None:
        await send({"type": "http.response.body", "body": data, "more_body": more})

    await body(_frame("start", {}))
    text: list[str] = []
    usage = None
    due = 0.0
    async with request as response:
        pending = b""
        async for chunk in response.iter_bytes():
            *events, pending = (pending + chunk).split(b"\n\n")
            for event in events:
                if not event.startswith(b"data: ") or event == b"data: [DONE]":
                    continue
                data = json.loads(event[6:])
                usage = data.get("usage") or usage
                for choice in data.get("choices") or ():
                    if piece := (choice.get("delta") or {}).get("content"):
                        text.append(piece)
            if text and (now := time.monotonic()) >= due:
                await body(_frame("delta", {"text": "".join(text)}))
                text.clear()
                due = now + FRAME_SECONDS
    if text:
        await body(_frame("delta", {"text": "".join(text)}))
    await body(_frame("end", {"usage": usage}), more=False)
