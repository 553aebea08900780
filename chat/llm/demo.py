"""The offline demo model: an httpx2 transport that answers like OpenAI, on this machine.

It is handed to the real `AsyncOpenAI` client when no key is configured, so the whole real
path (SDK, SSE parsing, usage, storage) runs on a fresh machine. It speaks both wire
formats, streamed and not: `POST /responses`, `POST /chat/completions`, `GET /models`.
Replies are labelled as the demo, span several lines with markdown and non-ASCII text,
echo the prompt, stream a token at a time and report usage; `chat.llm.wire` writes them.

Offered the example tools, it uses them as a real model would: asked the time somewhere
("what time is it in Tokyo?") or to search past conversations ("search my conversations
for invoices"), it thinks briefly and calls the tool, then answers from its result.
Offered the hosted web search (Responses API), "search the web for …" shows a search
and a cited source, and says plainly that no search was run.
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
_TIME_IN = re.compile(r"\btime\b.*?\bin\s+([\w /_+-]+?)\s*[?.!]*$", re.IGNORECASE)
_WEB_SEARCH = re.compile(r"\bsearch the web for\s+(.+?)\s*[?.!]*$", re.IGNORECASE)
_EXAMPLE_SOURCE = (
    "Django's documentation",
    "https://docs.djangoproject.com/",
    "Django documentation",
)
_SEARCH_FOR = re.compile(r"\bsearch\b.*?\bconversations?\b.*?\bfor\s+(.+?)\s*[?.!]*$", re.I)


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
        last_user = _text_of(last)
        received = files_received(last)
        answer = _Answer(
            model=body.get("model") or DEMO_MODEL,
            reply=demo_reply(last_user, received),
            # Images and PDFs cost input tokens upstream too: a flat share each.
            input_tokens=estimate_tokens(prompt_text) + FILE_TOKENS_ESTIMATE * len(received),
        )
        answer.use_tools(messages, last_user, offered=_tool_names(body.get("tools")))
        if not chat and _offers_web_search(body.get("tools")):
            answer.search_web(last_user)
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


def _tool_names(tools: Any) -> set[str]:
    names: set[str] = set()
    for tool in tools if isinstance(tools, list) else ():
        if isinstance(tool, dict):
            names.add(str(tool.get("name") or (tool.get("function") or {}).get("name") or ""))
    return names


def _offers_web_search(tools: Any) -> bool:
    return isinstance(tools, list) and any(
        isinstance(tool, dict) and tool.get("type") == "web_search" for tool in tools
    )


def _tool_output(message: Any) -> tuple[str, str] | None:
    """The call id and output when `message` is a tool's result (either API's shape)."""
    if not isinstance(message, dict):
        return None
    if message.get("type") == "function_call_output":
        return str(message.get("call_id")), str(message.get("output"))
    if message.get("role") == "tool":
        return str(message.get("tool_call_id")), str(message.get("content"))
    return None


def _answer_from_tool(output: str) -> str:
    try:
        found = json.loads(output)
    except ValueError:
        return f"The tool answered: {output}"
    if isinstance(found, dict) and "time" in found and "timezone" in found:
        return (
            f"It is **{found['time']}** in {found['timezone']} ({found.get('date', '')}), "
            "according to the `current_time` tool. *(Offline demo model.)*"
        )
    if isinstance(found, list):
        if not found:
            return "I found nothing about that in your conversations. *(Offline demo model.)*"
        lines = [f"- **{hit.get('title') or 'Untitled'}**: {hit.get('text', '')}" for hit in found]
        return "From your conversations:\n\n" + "\n".join(lines)
    return f"The tool answered: `{output}`"


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
        self.reasoning: list[str] = []
        self.tool_calls: list[wire.WireToolCall] = []
        self.web_searches: list[str] = []
        self.citations: list[wire.JsonObject] = []

    def search_web(self, last_user: str) -> None:
        """Show what a hosted web search looks like: the search, an answer citing a source
        (an example, and said to be one: the demo searches nothing)."""
        asked = _WEB_SEARCH.search(last_user.strip())
        if not asked:
            return
        query = asked.group(1).strip()
        cited, url, title = _EXAMPLE_SOURCE
        reply = (
            f"The offline demo model cannot search the web, so nothing was looked up for "
            f"“{query}”. A real model cites what it found, like this: {cited}."
        )
        start = reply.index(cited)
        self._say(f"I would search the web for {query}.", reply)
        self.web_searches = [query]
        self.citations = [
            {"url": url, "title": title, "start_index": start, "end_index": start + len(cited)}
        ]

    def use_tools(self, messages: list[Any], last_user: str, *, offered: set[str]) -> None:
        """Think briefly and call a tool the question needs, or answer from its result."""
        result = _tool_output(messages[-1])
        if result is not None:
            self._say(
                "I have the tool's answer; now I put it in a sentence.",
                _answer_from_tool(result[1]),
            )
            return
        asked_time = _TIME_IN.search(last_user.strip())
        asked_search = _SEARCH_FOR.search(last_user.strip())
        if asked_time and "current_time" in offered:
            place = asked_time.group(1).strip()
            self._call(
                f"The person wants the time in {place}. I cannot know the time myself, "
                "so I ask the current_time tool.",
                "current_time",
                {"timezone": place},
            )
        elif asked_search and "search_conversations" in offered:
            words = asked_search.group(1).strip()
            self._call(
                f"They ask about their earlier conversations; I search them for {words!r}.",
                "search_conversations",
                {"query": words},
            )

    def _say(self, thought: str, reply: str) -> None:
        self.reasoning = tokenize(thought)
        self.reply = reply
        self.parts = tokenize(reply)

    def _call(self, thought: str, name: str, arguments: dict[str, Any]) -> None:
        self._say(thought, "")
        text = json.dumps(arguments, ensure_ascii=False)
        # Arguments in fragments, as models stream them.
        pieces = [text[i : i + 8] for i in range(0, len(text), 8)]
        self.tool_calls = [wire.WireToolCall(f"call_demo_{self.key}", name, pieces)]

    def responses(self, body: dict[str, Any]) -> wire.Stream | wire.JsonObject:
        fields: _ResponsesFields = {
            "response_id": f"resp_demo_{self.key}",
            "model": self.model,
            "created_at": self.created,
            "usage": wire.responses_usage(
                input_tokens=self.input_tokens,
                output_tokens=len(self.parts) + len(self.reasoning),
                reasoning_tokens=len(self.reasoning),
            ),
        }
        if body.get("stream"):
            return wire.responses_stream(
                self.parts,
                reasoning=self.reasoning,
                tool_calls=self.tool_calls,
                web_searches=self.web_searches,
                citations=self.citations,
                **fields,
            )
        return wire.responses_body(self.reply, **fields)

    def chat(self, body: dict[str, Any]) -> wire.Stream | wire.JsonObject:
        fields: _ChatFields = {
            "completion_id": f"chatcmpl-demo-{self.key}",
            "model": self.model,
            "created": self.created,
            "usage": wire.chat_usage(
                prompt_tokens=self.input_tokens,
                completion_tokens=len(self.parts) + len(self.reasoning),
                reasoning_tokens=len(self.reasoning),
            ),
        }
        if not body.get("stream"):
            return wire.chat_body(self.reply, **fields)
        # Streamed, OpenAI sends usage only when the request asks for it.
        if not (body.get("stream_options") or {}).get("include_usage"):
            fields["usage"] = None
        return wire.chat_stream(
            self.parts, reasoning=self.reasoning, tool_calls=self.tool_calls, **fields
        )
