"""A scriptable fake OpenAI upstream, mounted at the SDK's HTTP boundary.

`FakeUpstream` is an `httpx2.MockTransport` handler: the real `AsyncOpenAI` client sends
real requests to it and parses what it answers. Scripts are lists of SSE payloads
(dicts, or raw strings such as "[DONE]"), optionally with pauses (floats, seconds).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx2


def responses_script(
    text_parts: list[str],
    *,
    usage: dict[str, Any] | None = None,
    final: str = "response.completed",
    incomplete_reason: str | None = None,
) -> list[Any]:
    events: list[Any] = [{"type": "response.created", "response": {"id": "resp_1"}}]
    events += [{"type": "response.output_text.delta", "delta": part} for part in text_parts]
    response: dict[str, Any] = {"id": "resp_1", "usage": usage}
    if incomplete_reason:
        response["incomplete_details"] = {"reason": incomplete_reason}
    events.append({"type": final, "response": response})
    return events


def chat_script(
    text_parts: list[str],
    *,
    usage: dict[str, Any] | None = None,
    usage_on_last_content_chunk: bool = False,
    finish_reason: str = "stop",
) -> list[Any]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    events: list[Any] = [chunk({"role": "assistant"})]
    events += [chunk({"content": part}) for part in text_parts]
    last = chunk({}, finish_reason)
    if usage and usage_on_last_content_chunk:
        last["usage"] = usage
    events.append(last)
    if usage and not usage_on_last_content_chunk:
        events.append({"id": "chatcmpl-1", "choices": [], "usage": usage})
    events.append("[DONE]")
    return events


class TrackedStream(httpx2.AsyncByteStream):
    """A response body that records whether the SDK closed it."""

    def __init__(self, frames: list[Any]) -> None:
        self.frames = frames
        self.closed = False
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for frame in self.frames:
            if isinstance(frame, int | float) and not isinstance(frame, bool):
                await asyncio.sleep(frame)
                continue
            if isinstance(frame, Exception):
                raise frame
            self.sent += 1
            payload = frame if isinstance(frame, str) else json.dumps(frame)
            yield f"data: {payload}\n\n".encode()

    async def aclose(self) -> None:
        self.closed = True


@dataclass
class Reply:
    status: int = 200
    script: list[Any] = field(default_factory=list)
    json_body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    raise_exc: Exception | None = None


class FakeUpstream:
    def __init__(self) -> None:
        self.requests: list[httpx2.Request] = []
        self.bodies: list[dict[str, Any]] = []
        self.replies: list[Reply] = []
        self.default = Reply(script=chat_script(["Hello", " world"]))
        self.streams: list[TrackedStream] = []

    def queue(self, reply: Reply) -> None:
        self.replies.append(reply)

    @property
    def calls(self) -> int:
        return len(self.requests)

    async def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        self.bodies.append(json.loads(request.content) if request.content else {})
        reply = self.replies.pop(0) if self.replies else self.default
        if reply.raise_exc is not None:
            raise reply.raise_exc
        if reply.json_body is not None or reply.status != 200:
            return httpx2.Response(reply.status, json=reply.json_body or {}, headers=reply.headers)
        stream = TrackedStream(reply.script)
        self.streams.append(stream)
        return httpx2.Response(
            200,
            headers={
                "content-type": "text/event-stream",
                "x-request-id": "req_test",
                **reply.headers,
            },
            stream=stream,
        )
