"""The offline demo model: an httpx2 transport that answers like OpenAI, on this machine.

It is handed to the real `AsyncOpenAI` client when no key is configured, so the whole real
path (SDK, SSE parsing, usage, storage) runs on a fresh machine. It speaks both wire
formats, streamed and not: `POST /responses`, `POST /chat/completions`, `GET /models`.
Replies are labelled as the demo, span several lines with markdown and non-ASCII text,
echo the prompt, stream a token at a time and report usage.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx2

DEMO_MODEL = "offline-demo"
_TOKEN = re.compile(r"\S+\s*|\s+")


def demo_reply(prompt: str) -> str:
    """The reply the demo gives to `prompt` (the last user message)."""
    excerpt = prompt.strip()
    if len(excerpt) > 300:
        excerpt = excerpt[:300] + "…"
    return (
        "**Offline demo model** — no API key is configured, so this reply is canned "
        "and nothing left this machine.\n\n"
        f"You said:\n\n> {excerpt.replace(chr(10), chr(10) + '> ')}\n\n"
        "What just happened, for real:\n"
        "1. Your message and an empty reply row were stored.\n"
        "2. The OpenAI SDK streamed this text, token by token.\n"
        "3. Usage and cost are recorded when the stream ends.\n\n"
        '```python\nprint("Grüße, 世界 👋")\n```\n\n'
        "Unicode survives the trip: naïve café, 日本語, emoji 🚀✨.\n"
        "Set `OPENAI_API_KEY` (or `OPENAI_BASE_URL` for Ollama, vLLM, llama.cpp) "
        "to talk to a real model."
    )


def tokenize(text: str) -> list[str]:
    """Word-sized pieces that join back to exactly `text`."""
    return _TOKEN.findall(text)


def count_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


class DemoTransport(httpx2.AsyncBaseTransport):
    """Answers OpenAI API requests locally; `delay` seconds between streamed tokens."""

    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path.rstrip("/")
        if request.method == "GET" and path.endswith("/models"):
            return httpx2.Response(
                200,
                json={
                    "object": "list",
                    "data": [{"id": DEMO_MODEL, "object": "model", "owned_by": "demo"}],
                },
            )
        if request.method != "POST" or not path.endswith(("/responses", "/chat/completions")):
            return _error(404, f"The offline demo model has no endpoint {request.method} {path}.")
        await request.aread()
        try:
            body = json.loads(request.content)
        except ValueError:
            return _error(400, "Request body is not JSON.")
        chat = path.endswith("/chat/completions")
        messages = body.get("messages") if chat else body.get("input")
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        if not isinstance(messages, list) or not messages:
            return _error(400, "No messages were sent.")
        prompt_text = "\n".join(_text_of(m) for m in messages) + str(body.get("instructions", ""))
        last_user = next((_text_of(m) for m in reversed(messages) if m.get("role") == "user"), "")
        reply = demo_reply(last_user)
        answer = _ChatAnswer if chat else _ResponsesAnswer
        turn = answer(body.get("model") or DEMO_MODEL, reply, count_tokens(prompt_text))
        if body.get("stream"):
            return httpx2.Response(
                200,
                headers={"content-type": "text/event-stream", "x-request-id": turn.request_id},
                content=self._sse(turn),
            )
        return httpx2.Response(200, headers={"x-request-id": turn.request_id}, json=turn.whole())

    async def _sse(self, turn: _Answer) -> AsyncIterator[bytes]:
        for payload in turn.events(tokenize(turn.reply), self.delay):
            if isinstance(payload, bytes):
                yield payload
            elif payload:
                await asyncio.sleep(payload)


def _text_of(message: Any) -> str:
    if not isinstance(message, dict):
        return ""
    content = message.get("content", "")
    if isinstance(content, list):  # content parts: [{"type": "input_text", "text": ...}]
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return str(content)


def _error(status: int, message: str) -> httpx2.Response:
    return httpx2.Response(
        status, json={"error": {"message": message, "type": "invalid_request_error"}}
    )


def _sse_frame(data: Any) -> bytes:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


class _Answer:
    def __init__(self, model: str, reply: str, input_tokens: int) -> None:
        self.model = model
        self.reply = reply
        self.input_tokens = input_tokens
        self.output_tokens = len(tokenize(reply))
        self.created = int(time.time())
        self.request_id = f"req_demo_{uuid.uuid4().hex[:16]}"

    def whole(self) -> dict[str, Any]:
        raise NotImplementedError

    def events(self, tokens: list[str], delay: float) -> list[bytes | float]:
        raise NotImplementedError


class _ResponsesAnswer(_Answer):
    def _response(self, status: str, output_text: str) -> dict[str, Any]:
        return {
            "id": f"resp_demo_{self.request_id[9:]}",
            "object": "response",
            "created_at": self.created,
            "model": self.model,
            "status": status,
            "output": [
                {
                    "id": "msg_demo",
                    "type": "message",
                    "role": "assistant",
                    "status": status,
                    "content": [{"type": "output_text", "text": output_text, "annotations": []}],
                }
            ]
            if output_text
            else [],
            "usage": {
                "input_tokens": self.input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": self.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.input_tokens + self.output_tokens,
            }
            if status == "completed"
            else None,
        }

    def whole(self) -> dict[str, Any]:
        return self._response("completed", self.reply)

    def events(self, tokens: list[str], delay: float) -> list[bytes | float]:
        frames: list[bytes | float] = [
            _sse_frame({"type": "response.created", "response": self._response("in_progress", "")})
        ]
        for n, token in enumerate(tokens):
            frames.append(delay)
            frames.append(
                _sse_frame(
                    {
                        "type": "response.output_text.delta",
                        "item_id": "msg_demo",
                        "output_index": 0,
                        "content_index": 0,
                        "delta": token,
                        "sequence_number": n + 1,
                    }
                )
            )
        frames.append(_sse_frame({"type": "response.completed", "response": self.whole()}))
        return frames


class _ChatAnswer(_Answer):
    def _chunk(self, delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-demo-{self.request_id[9:]}",
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }

    def _usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }

    def whole(self) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-demo-{self.request_id[9:]}",
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.reply},
                    "finish_reason": "stop",
                }
            ],
            "usage": self._usage(),
        }

    def events(self, tokens: list[str], delay: float) -> list[bytes | float]:
        frames: list[bytes | float] = [_sse_frame(self._chunk({"role": "assistant"}, None))]
        for token in tokens:
            frames.append(delay)
            frames.append(_sse_frame(self._chunk({"content": token}, None)))
        frames.append(_sse_frame(self._chunk({}, "stop")))
        # As OpenAI does with stream_options.include_usage: a last chunk with no choices.
        frames.append(_sse_frame({**self._chunk({}, None), "choices": [], "usage": self._usage()}))
        frames.append(b"data: [DONE]\n\n")
        return frames
