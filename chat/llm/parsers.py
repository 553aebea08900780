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
from chat.llm.events import (
    Citation,
    Finished,
    ProviderEvent,
    ReasoningDelta,
    ReasoningItem,
    TextDelta,
    ToolCall,
    Usage,
    WebSearch,
)
from chat.llm.wire import DONE

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
            if payload == DONE:
                return
            yield _decode(payload)
    if buffer and buffer != [DONE]:
        yield _decode("\n".join(buffer))


class ResponsesParser:
    """Responses API stream events → our events."""

    def __init__(self) -> None:
        self._finished: Finished | None = None
        self._searches = 0

    def __call__(self, data: dict[str, Any]) -> list[ProviderEvent]:
        kind = data.get("type")
        if kind == "response.output_text.delta":
            return [TextDelta(data.get("delta") or "")]
        if kind == "response.reasoning_summary_text.delta":
            return [ReasoningDelta(data.get("delta") or "")]
        if kind == "response.reasoning_summary_part.added" and data.get("summary_index"):
            return [ReasoningDelta("\n\n")]  # the summary's next paragraph
        if kind == "response.output_item.done":
            item = data.get("item") or {}
            if item.get("type") == "web_search_call":
                self._searches += 1
            return _output_item(item)
        if kind == "response.output_item.added":
            item = data.get("item") or {}
            if item.get("type") == "web_search_call":
                return [WebSearch(str(item.get("id") or ""), "searching")]
            return []
        if kind == "response.output_text.annotation.added":
            note = data.get("annotation") or {}
            if note.get("type") != "url_citation":
                return []
            return [
                Citation(
                    url=str(note.get("url") or ""),
                    title=str(note.get("title") or ""),
                    start_index=int(note.get("start_index") or 0),
                    end_index=int(note.get("end_index") or 0),
                )
            ]
        if kind in ("response.completed", "response.incomplete"):
            response = data.get("response") or {}
            details = response.get("incomplete_details") or {}
            complete = kind == "response.completed"
            self._finished = Finished(
                status="completed" if complete else "incomplete",
                finish_reason="stop" if complete else (details.get("reason") or "incomplete"),
                usage=_usage(
                    response.get("usage"), input_key="input_tokens", output_key="output_tokens"
                ),
                response_id=response.get("id") or "",
                web_searches=self._searches,
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

    def flush(self) -> list[ProviderEvent]:
        return []

    def end(self) -> Finished:
        if self._finished is None:
            raise ProviderError("upstream", "The model's stream ended before it finished.")
        return self._finished


def _output_item(item: dict[str, Any]) -> list[ProviderEvent]:
    """A finished output item: a function call complete with its arguments (read here
    rather than from the argument deltas), or the opaque reasoning item to send back."""
    kind = item.get("type")
    if kind == "function_call":
        return [
            ToolCall(
                call_id=str(item.get("call_id") or item.get("id") or ""),
                name=str(item.get("name") or ""),
                arguments=str(item.get("arguments") or ""),
            )
        ]
    if kind == "reasoning":
        return [ReasoningItem(item)]
    if kind == "web_search_call":
        query = (item.get("action") or {}).get("query") or ""
        return [WebSearch(str(item.get("id") or ""), "completed", str(query))]
    return []


class ChatParser:
    """Chat Completions chunks → our events. Usage may ride on the last content chunk or
    come alone on a final chunk with no choices, so `Finished` waits for the stream's end.
    A tool call arrives in fragments keyed by `index` (the id and name first, then pieces
    of the arguments): it is one `ToolCall` once the choice has finished."""

    def __init__(self) -> None:
        self._finish_reason = ""
        self._usage: Usage | None = None
        self._response_id = ""
        self._calls: dict[int, dict[str, str]] = {}

    def __call__(self, data: dict[str, Any]) -> list[ProviderEvent]:
        if "error" in data:
            error = data["error"] if isinstance(data["error"], dict) else {"message": data["error"]}
            raise ProviderError("upstream", redact(error.get("message") or "The model failed."))
        self._response_id = self._response_id or data.get("id") or ""
        if data.get("usage"):
            self._usage = _usage(
                data["usage"], input_key="prompt_tokens", output_key="completion_tokens"
            )
        events: list[ProviderEvent] = []
        for choice in data.get("choices") or ():
            delta = choice.get("delta") or {}
            # vLLM, DeepSeek and llama.cpp name it `reasoning_content`; Ollama and
            # OpenRouter `reasoning`.
            thought = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(thought, str) and thought:
                events.append(ReasoningDelta(thought))
            text = delta.get("content")
            if text:
                events.append(TextDelta(text))
            for fragment in delta.get("tool_calls") or ():
                self._add_call_fragment(fragment)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
                events += self.flush()
        return events

    def _add_call_fragment(self, fragment: dict[str, Any]) -> None:
        call = self._calls.setdefault(
            int(fragment.get("index") or 0), {"id": "", "name": "", "arguments": ""}
        )
        function = fragment.get("function") or {}
        call["id"] = call["id"] or str(fragment.get("id") or "")
        call["name"] = call["name"] or str(function.get("name") or "")
        call["arguments"] += str(function.get("arguments") or "")

    def flush(self) -> list[ProviderEvent]:
        """The tool calls gathered so far, complete (once)."""
        calls = [self._calls[index] for index in sorted(self._calls)]
        self._calls.clear()
        return [ToolCall(c["id"], c["name"], c["arguments"]) for c in calls]

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


def _usage(raw: dict[str, Any] | None, *, input_key: str, output_key: str) -> Usage | None:
    """Either API's usage object, or None when it sent none. Both have the same fields
    under other names (Responses: `input_tokens`, `output_tokens`; Chat Completions:
    `prompt_tokens`, `completion_tokens`), each with its details under `<name>_details`."""
    if not raw:
        return None
    inp = int(raw.get(input_key) or 0)
    out = int(raw.get(output_key) or 0)
    return Usage(
        input_tokens=inp,
        output_tokens=out,
        total_tokens=int(raw.get("total_tokens") or inp + out),
        cached_tokens=int((raw.get(f"{input_key}_details") or {}).get("cached_tokens") or 0),
        reasoning_tokens=int((raw.get(f"{output_key}_details") or {}).get("reasoning_tokens") or 0),
    )
