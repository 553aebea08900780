"""The two OpenAI stream formats, read: SSE lines and their JSON payloads, and one parser
per API turning them into our events (`chat.llm.events`).

Events are decoded with `json.loads` from the raw lines instead of the SDK's typed
objects: building a typed object per token costs more than the rest of the request
path, and only a few fields are read."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

from chat.llm.errors import ProviderError, redact
from chat.llm.events import Finished, ProviderEvent, TextDelta, Usage

_SSE_EOL = re.compile(rb"\r\n|\r|\n")


async def sse_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """Lines as SSE defines them: split on CR, LF or CRLF only. (httpx's `iter_lines`
    also splits on U+2028, U+2029 and U+0085, which JSON leaves unescaped, so model text
    holding one would cut an event in two.) These bytes never occur inside a multi-byte
    UTF-8 sequence, so every line decodes on its own."""
    pending = b""
    async for chunk in chunks:
        data = pending + chunk
        # A CR at the end may be the first half of a CRLF split across chunks: wait.
        held = b"\r" if data.endswith(b"\r") else b""
        *lines, pending = _SSE_EOL.split(data[: len(data) - len(held)])
        pending += held
        for line in lines:
            yield line.decode()
    if pending:
        yield pending.decode()


def _unreadable() -> ProviderError:
    return ProviderError("upstream", "The model sent an unreadable event.")


def _decode(payload: str) -> dict[str, Any]:
    try:
        data = json.loads(payload)
    except ValueError:
        raise _unreadable() from None
    if not isinstance(data, dict):
        raise _unreadable()
    return data


async def sse_data(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    """Decoded `data:` payloads of an SSE stream (one JSON object per event)."""
    buffer: list[str] = []
    async for line in lines:
        if line.startswith("data:"):
            buffer.append(line[6:] if line.startswith("data: ") else line[5:])
        elif not line and buffer:
            payload = "\n".join(buffer)
            buffer.clear()
            if payload == "[DONE]":
                return
            yield _decode(payload)
    if buffer and buffer != ["[DONE]"]:
        yield _decode("\n".join(buffer))


class ResponsesParser:
    """Responses API stream events → our events."""

    def __init__(self) -> None:
        self._finished: Finished | None = None

    def __call__(self, data: dict[str, Any]) -> list[ProviderEvent]:
        kind = data.get("type")
        if kind == "response.output_text.delta":
            return [TextDelta(data.get("delta") or "")]
        if kind in ("response.completed", "response.incomplete"):
            response = data.get("response") or {}
            details = response.get("incomplete_details") or {}
            complete = kind == "response.completed"
            self._finished = Finished(
                status="completed" if complete else "incomplete",
                finish_reason="stop" if complete else (details.get("reason") or "incomplete"),
                usage=_responses_usage(response.get("usage")),
                response_id=response.get("id") or "",
            )
        if kind == "response.failed":
            error = (data.get("response") or {}).get("error") or {}
            raise ProviderError("upstream", redact(error.get("message") or "The model failed."))
        if kind == "error":
            # OpenAI sends the error's fields at the top level; some servers nest them.
            nested = data.get("error")
            error = nested if isinstance(nested, dict) else data
            raise ProviderError("upstream", redact(error.get("message") or "The model failed."))
        return []

    def end(self) -> Finished:
        if self._finished is None:
            raise ProviderError("upstream", "The model's stream ended before it finished.")
        return self._finished


class ChatParser:
    """Chat Completions chunks → our events. Usage may ride on the last content chunk or
    come alone on a final chunk with no choices, so `Finished` waits for the stream's end."""

    def __init__(self) -> None:
        self._finish_reason = ""
        self._usage: Usage | None = None
        self._response_id = ""

    def __call__(self, data: dict[str, Any]) -> list[ProviderEvent]:
        if "error" in data:
            error = data["error"] if isinstance(data["error"], dict) else {"message": data["error"]}
            raise ProviderError("upstream", redact(error.get("message") or "The model failed."))
        self._response_id = self._response_id or data.get("id") or ""
        if data.get("usage"):
            self._usage = _chat_usage(data["usage"])
        events: list[ProviderEvent] = []
        for choice in data.get("choices") or ():
            text = (choice.get("delta") or {}).get("content")
            if text:
                events.append(TextDelta(text))
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        return events

    def end(self) -> Finished:
        if not self._finish_reason and self._usage is None:
            raise ProviderError("upstream", "The model's stream ended before it finished.")
        reason = self._finish_reason or "stop"
        return Finished(
            status="completed" if reason in ("stop", "tool_calls") else "incomplete",
            finish_reason=reason,
            usage=self._usage,
            response_id=self._response_id,
        )


def _responses_usage(raw: dict[str, Any] | None) -> Usage | None:
    if not raw:
        return None
    inp = int(raw.get("input_tokens") or 0)
    out = int(raw.get("output_tokens") or 0)
    return Usage(
        input_tokens=inp,
        output_tokens=out,
        total_tokens=int(raw.get("total_tokens") or inp + out),
        cached_tokens=int((raw.get("input_tokens_details") or {}).get("cached_tokens") or 0),
        reasoning_tokens=int((raw.get("output_tokens_details") or {}).get("reasoning_tokens") or 0),
    )


def _chat_usage(raw: dict[str, Any]) -> Usage:
    inp = int(raw.get("prompt_tokens") or 0)
    out = int(raw.get("completion_tokens") or 0)
    return Usage(
        input_tokens=inp,
        output_tokens=out,
        total_tokens=int(raw.get("total_tokens") or inp + out),
        cached_tokens=int((raw.get("prompt_tokens_details") or {}).get("cached_tokens") or 0),
        reasoning_tokens=int(
            (raw.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
        ),
    )
