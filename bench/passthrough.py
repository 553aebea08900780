"""The floor: a minimal ASGI app that streams the upstream with the same SDK, stores nothing.

    OPENAI_BASE_URL=http://127.0.0.1:8911/v1 uvicorn bench.passthrough:app

It does what the FastAPI chat samples this project grew from do, without a framework:
`async for chunk in await client.chat.completions.create(stream=True)` (typed SDK objects
per event), each delta sent as an SSE frame; `Accept: application/json` folds the reply.
Every figure of `make bench` is compared with this app in the same run. It uses the same
HTTP client under the SDK as ours (`CHAT_HTTP_CLIENT`, aiohttp by default).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2
import openai

# An ASGI event, and the server's callables that receive and send them.
Event = dict[str, Any]
Receive = Callable[[], Awaitable[Event]]
Send = Callable[[Event], Awaitable[None]]

# One client per event loop, written out here rather than through `chat.runtime`: the floor
# imports nothing of ours, so no change to the app can move the figures it is compared with.
_clients: dict[asyncio.AbstractEventLoop, openai.AsyncOpenAI] = {}


def _client() -> openai.AsyncOpenAI:
    loop = asyncio.get_running_loop()
    if loop not in _clients:
        _clients[loop] = openai.AsyncOpenAI(
            base_url=os.environ["OPENAI_BASE_URL"],
            api_key=os.environ.get("OPENAI_API_KEY") or "x",
            max_retries=int(os.environ.get("CHAT_MAX_RETRIES", "2")),
            http_client=_http_client(),
        )
    return _clients[loop]


def _http_client() -> httpx2.AsyncClient | None:
    # The same HTTP client as ours (CHAT_HTTP_CLIENT), so the floor differs only in
    # what the app does, not in how it talks to the upstream.
    if os.environ.get("CHAT_HTTP_CLIENT", "aiohttp") != "aiohttp":
        return None
    limits = httpx2.Limits(max_connections=10_000, keepalive_expiry=4.0)
    return openai.DefaultAioHttpClient(limits=limits)


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    prompt = json.loads(body or b"{}").get("message", "")
    accept = dict(scope["headers"]).get(b"accept", b"")
    stream = await _client().chat.completions.create(
        model=os.environ.get("CHAT_MODEL", "fake-model"),
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        stream_options={"include_usage": True},
    )
    if b"text/event-stream" not in accept:
        parts = [
            chunk.choices[0].delta.content or ""
            async for chunk in stream
            if chunk.choices and chunk.choices[0].delta
        ]
        reply = json.dumps({"reply": "".join(parts)}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": reply})
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
        }
    )
    usage: dict[str, Any] | None = None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage.model_dump()
        if chunk.choices and chunk.choices[0].delta.content:
            frame = _sse("delta", {"text": chunk.choices[0].delta.content})
            await send({"type": "http.response.body", "body": frame, "more_body": True})
    await send({"type": "http.response.body", "body": _sse("end", {"usage": usage})})
