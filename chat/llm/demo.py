"""The offline demo model: an httpx2 transport that answers like OpenAI, on this machine.

It is handed to the real `AsyncOpenAI` client when no key is configured, so the whole real
path (SDK, SSE parsing, usage, storage) runs on a fresh machine. It speaks both wire
formats, streamed and not: `POST /responses`, `POST /chat/completions`, `GET /models`.
Replies are labelled as the demo, span several lines with markdown and non-ASCII text,
echo the prompt, stream a token at a time and report usage; `chat.llm.wire` writes them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, TypedDict

import httpx2

from chat.llm import wire
from chat.llm.events import FILE_TOKENS_ESTIMATE, estimate_tokens

DEMO_MODEL = "offline-demo"
_TOKEN = re.compile(r"\S+\s*|\s+")


def demo_reply(prompt: str, received: list[str] | None = None) -> str:
    """The reply the demo gives to `prompt` (the last user message), saying what it
    received with it (`received`: one line per image or PDF, from `files_received`)."""
    excerpt = prompt.strip()
    if len(excerpt) > 300:
        excerpt = excerpt[:300] + "…"
    files = "".join(f"- {line}\n" for line in received or [])
    return (
        "**Offline demo model** — no API key is configured, so this reply is canned "
        "and nothing left this machine.\n\n"
        f"You said:\n\n> {excerpt.replace(chr(10), chr(10) + '> ')}\n\n"
        + (f"You attached:\n{files}\n" if files else "")
        + "What just happened, for real:\n"
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
        last: Any = next((m for m in reversed(messages) if m.get("role") == "user"), {})
        received = files_received(last)
        answer = _Answer(
            model=body.get("model") or DEMO_MODEL,
            reply=demo_reply(_text_of(last), received),
            # Images and PDFs cost input tokens upstream too: a flat share each.
            input_tokens=estimate_tokens(prompt_text) + FILE_TOKENS_ESTIMATE * len(received),
        )
        headers = {"x-request-id": f"req_demo_{answer.key}"}
        written = answer.chat(body) if chat else answer.responses(body)
        if isinstance(written, dict):
            return httpx2.Response(200, headers=headers, json=written)
        return httpx2.Response(
            200,
            headers={**headers, "content-type": "text/event-stream"},
            content=self._paced(written),
        )

    async def _paced(self, stream: wire.Stream) -> AsyncIterator[bytes]:
        for payload in stream.head:
            yield wire.sse_frame(payload)
        for payload in stream.deltas:
            await asyncio.sleep(self.delay)
            yield wire.sse_frame(payload)
        for payload in stream.tail:
            yield wire.sse_frame(payload)


def _text_of(message: Any) -> str:
    if not isinstance(message, dict):
        return ""
    content = message.get("content", "")
    if isinstance(content, list):  # content parts: [{"type": "input_text", "text": ...}]
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return str(content)


_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")


def files_received(message: Any) -> list[str]:
    """What the images and PDFs in `message`'s content parts are, in either API's shape:
    an image's format and size, a PDF's name and page count (its `/Type /Page` objects,
    a count that is right for ordinary PDFs without parsing them)."""
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        return []
    lines = []
    for part in content:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in ("input_image", "image_url"):
            url = part["image_url"] if kind == "input_image" else part["image_url"]["url"]
            lines.append(_describe_image(_data_of(url)))
        elif kind in ("input_file", "file"):
            file = part if kind == "input_file" else part["file"]
            pages = len(_PDF_PAGE.findall(_data_of(file.get("file_data", ""))))
            lines.append(f"a PDF, {file.get('filename', 'unnamed')}, of {pages} page(s)")
    return lines


def _data_of(url: str) -> bytes:
    _, _, encoded = url.partition(";base64,")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return b""


def _describe_image(data: bytes) -> str:
    # Imported here: `chat.llm` loads without Pillow for commands that never see an image.
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return f"a {image.format} image of {image.width}×{image.height} pixels"
    except (UnidentifiedImageError, OSError):
        return "an image I could not read"


def _error(status: int, message: str) -> httpx2.Response:
    return httpx2.Response(status, json=wire.api_error(message, error_type="invalid_request_error"))


class _ResponsesFields(TypedDict):
    response_id: str
    model: str
    created_at: int
    usage: wire.JsonObject


class _ChatFields(TypedDict):
    completion_id: str
    model: str
    created: int
    usage: wire.JsonObject | None


class _Answer:
    """The demo's reply to one request, written as the request's API and `stream` ask."""

    def __init__(self, *, model: str, reply: str, input_tokens: int) -> None:
        self.model = model
        self.reply = reply
        self.parts = tokenize(reply)
        self.input_tokens = input_tokens
        self.created = int(time.time())
        self.key = uuid.uuid4().hex[:16]

    def responses(self, body: dict[str, Any]) -> wire.Stream | wire.JsonObject:
        fields: _ResponsesFields = {
            "response_id": f"resp_demo_{self.key}",
            "model": self.model,
            "created_at": self.created,
            "usage": wire.responses_usage(
                input_tokens=self.input_tokens, output_tokens=len(self.parts)
            ),
        }
        if body.get("stream"):
            return wire.responses_stream(self.parts, **fields)
        return wire.responses_body(self.reply, **fields)

    def chat(self, body: dict[str, Any]) -> wire.Stream | wire.JsonObject:
        fields: _ChatFields = {
            "completion_id": f"chatcmpl-demo-{self.key}",
            "model": self.model,
            "created": self.created,
            "usage": wire.chat_usage(
                prompt_tokens=self.input_tokens, completion_tokens=len(self.parts)
            ),
        }
        if not body.get("stream"):
            return wire.chat_body(self.reply, **fields)
        # Streamed, OpenAI sends usage only when the request asks for it.
        if not (body.get("stream_options") or {}).get("include_usage"):
            fields["usage"] = None
        return wire.chat_stream(self.parts, **fields)
