"""The tests' scripted OpenAI upstream, mounted at the SDK's HTTP boundary.

`ScriptedUpstream` is an `httpx2.MockTransport` handler: the real `AsyncOpenAI` client
sends real requests to it and parses what it answers. A script is a list of frames: wire
payloads (written by `chat.llm.wire`; a string goes out as it is), pauses (seconds) and
exceptions (raised mid-body, as a broken connection would be).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx2

from chat.llm import wire

RESPONSE_ID = "resp_1"
COMPLETION_ID = "chatcmpl-1"
MODEL = "gpt-4.1-mini"

Frame = wire.Payload | float | Exception


def responses_script(
    text_parts: list[str],
    *,
    usage: wire.JsonObject | None = None,
    status: Literal["completed", "incomplete"] = "completed",
    incomplete_reason: str | None = None,
) -> list[Frame]:
    stream = wire.responses_stream(
        text_parts,
        response_id=RESPONSE_ID,
        model=MODEL,
        usage=usage,
        status=status,
        incomplete_reason=incomplete_reason,
    )
    return list(stream)


def responses_broken_script(
    text_parts: list[str], *, then: Literal["error", "response.failed"] | None, message: str = ""
) -> list[Frame]:
    """The text, then instead of the rest an `error` or `response.failed` event, or
    nothing (the stream just stops)."""
    stream = wire.responses_stream(text_parts, response_id=RESPONSE_ID, model=MODEL)
    sent: list[Frame] = [*stream.head, *stream.deltas]
    if then == "error":
        sent.append(wire.responses_error(message, sequence_number=len(sent)))
    elif then == "response.failed":
        failed = wire.responses_failed(
            message, sequence_number=len(sent), response_id=RESPONSE_ID, model=MODEL
        )
        sent.append(failed)
    return sent


def chat_script(
    text_parts: list[str],
    *,
    usage: wire.JsonObject | None = None,
    usage_on_finish_chunk: bool = False,
    finish_reason: str = "stop",
) -> list[Frame]:
    """Chunks indexed as OpenAI sends them: [0] the role, [1:n+1] the text parts, then the
    finish reason, the usage-only chunk (with `usage`) and `[DONE]`."""
    stream = wire.chat_stream(
        text_parts,
        completion_id=COMPLETION_ID,
        model=MODEL,
        usage=usage or None,
        usage_on_finish_chunk=usage_on_finish_chunk,
        finish_reason=finish_reason,
    )
    return list(stream)


class TrackedStream(httpx2.AsyncByteStream):
    """A response body that records whether the SDK closed it."""

    def __init__(self, frames: list[Frame]) -> None:
        self.frames = frames
        self.closed = False
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for frame in self.frames:
            if isinstance(frame, int | float):
                await asyncio.sleep(frame)
                continue
            if isinstance(frame, Exception):
                raise frame
            self.sent += 1
            yield wire.sse_frame(frame)

    async def aclose(self) -> None:
        self.closed = True


@dataclass
class Reply:
    status: int = 200
    script: list[Frame] = field(default_factory=list)
    json_body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    raise_exc: Exception | None = None


class ScriptedUpstream:
    """Answers each request with the next queued `Reply` (or `default`), and keeps the
    requests, their JSON bodies and the bodies it streamed for the test to inspect."""

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
