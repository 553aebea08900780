"""The fixed point: the seeds' pattern, a minimal FastAPI + `AsyncOpenAI` streaming app that
stores nothing.

    OPENAI_BASE_URL=http://127.0.0.1:8911/v1 uvicorn bench.fastapi_seed:app

Written the way the FastAPI chat samples this project grew from are (Pamela Fox's
openai-chat-backend-fastapi): a pydantic request model, one `AsyncOpenAI` client made in
the app's lifespan, `async for event in await client.chat.completions.create(stream=True)`
with each typed event `model_dump()`ed, and a `StreamingResponse`. Each delta goes out
as an SSE `delta` frame (what the benchmark's client times), the usage as a last `end`
frame; `Accept: application/json` folds the reply. `make bench` compares every figure
with this app in the same run. It imports nothing of ours, so no change to the app can
move what it is compared with; its HTTP client under the SDK is ours
(`CHAT_HTTP_CLIENT`, aiohttp by default), so the two differ only in what the app does.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import openai
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel


class ChatRequest(BaseModel):
    message: str


def http_client() -> httpx2.AsyncClient | None:
    """Ours' HTTP client under the SDK (`CHAT_HTTP_CLIENT`), sized as ours is."""
    if os.environ.get("CHAT_HTTP_CLIENT", "aiohttp") != "aiohttp":
        return None
    limits = httpx2.Limits(max_connections=10_000, keepalive_expiry=4.0)
    return openai.DefaultAioHttpClient(limits=limits)


clients: dict[str, openai.AsyncOpenAI] = {}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    clients["openai"] = openai.AsyncOpenAI(
        base_url=os.environ["OPENAI_BASE_URL"],
        api_key=os.environ.get("OPENAI_API_KEY") or "x",
        max_retries=int(os.environ.get("CHAT_MAX_RETRIES", "2")),
        http_client=http_client(),
    )
    yield
    await clients.pop("openai").close()


app = FastAPI(lifespan=lifespan)


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


@app.post("/chat")
async def chat(chat_request: ChatRequest, request: Request) -> Response:
    stream = await clients["openai"].chat.completions.create(
        model=os.environ.get("CHAT_MODEL", "fake-model"),
        messages=[{"role": "user", "content": chat_request.message}],
        stream=True,
        stream_options={"include_usage": True},
    )
    if "text/event-stream" not in request.headers.get("accept", ""):
        parts = []
        async for event in stream:
            event_dict = event.model_dump()
            if event_dict["choices"]:
                parts.append(event_dict["choices"][0]["delta"]["content"] or "")
        return JSONResponse({"reply": "".join(parts)})

    async def response_stream() -> AsyncIterator[str]:
        usage = None
        async for event in stream:
            event_dict = event.model_dump()
            if event_dict["usage"] is not None:
                usage = event_dict["usage"]
            if event_dict["choices"] and event_dict["choices"][0]["delta"]["content"]:
                yield _sse("delta", {"text": event_dict["choices"][0]["delta"]["content"]})
        yield _sse("end", {"usage": usage})

    return StreamingResponse(response_stream(), media_type="text/event-stream")
