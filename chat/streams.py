"""Pure encoders: one stream event model, three encodings (SSE, NDJSON, folded JSON), and
the way back from a stored SSE frame.

No I/O here. Event data is always JSON-encoded, so newlines, CR, quotes and any unicode
in model text survive every encoding unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, NotRequired, TypedDict, cast

from chat.errors import ErrorDetail, error_detail

EventType = Literal[
    "start",
    "delta",
    "reasoning",
    "tool_call",
    "tool_result",
    "web_search",
    "citation",
    "end",
    "error",
    "idle",
]
# The events that make up a reply's parts (`fold` gathers them in order).
PART_EVENTS = {
    "delta": "text",
    "reasoning": "reasoning",
    "tool_call": "tool_call",
    "tool_result": "tool_result",
    "web_search": "web_search",
    "citation": "citation",
}

SSE_PING = b": ping\n\n"
_LINE_BREAKS_JSON_KEEPS = ("\x85", "\u2028", "\u2029")


@dataclass(frozen=True, slots=True)
class StreamEvent:
    type: EventType
    data: Mapping[str, Any] = field(default_factory=dict)


class StartData(TypedDict):
    """A `start` event's data."""

    conversation: str
    message: int
    model: str
    stream_url: NotRequired[str]  # a direct stream that asked to be resumable


class ErrorData(TypedDict):
    """An `error` event's data, at the least (a recorded turn's has its `end` fields too)."""

    status: str
    error: ErrorDetail


class UsageData(TypedDict):
    """The tokens a turn used, as its `end` event, the JSON reply and its message show them."""

    input_tokens: int
    output_tokens: int
    total_tokens: int
    cached_tokens: int
    reasoning_tokens: int


class EndData(TypedDict):
    """An `end` event's data: the turn as recorded. A failed turn's `error` event is the
    same with its `error`, and a provider's rate limit's `retry_after`."""

    status: str
    finish_reason: str
    usage: UsageData | None
    usage_estimated: bool
    cost: str | None  # `money_json`
    ttft_ms: int | None
    duration_ms: int | None
    error: NotRequired[ErrorDetail]
    retry_after: NotRequired[str]


class ChatReply(TypedDict):
    """The JSON reply: a turn's `start`, `delta`s and `end` or `error` folded into one
    object (the fields a turn's events did not give stay None)."""

    conversation: str | None
    message: int | None
    model: str | None
    reply: str
    status: str | None
    finish_reason: str | None
    usage: UsageData | None
    cost: str | None
    ttft_ms: int | None
    duration_ms: int | None
    stream_url: NotRequired[str]
    parts: NotRequired[list[dict[str, Any]]]
    usage_estimated: NotRequired[bool]
    error: NotRequired[ErrorDetail]
    retry_after: NotRequired[str]  # sent as the Retry-After header, not in the body


def money_json(amount: Decimal | None) -> str | None:
    """An amount of money as the API writes it: a decimal string with every stored digit,
    never a float; None when it is unknown (no price)."""
    return None if amount is None else f"{amount:f}"


def start_event(data: StartData) -> StreamEvent:
    return StreamEvent("start", data)


def error_event(*, status: str, error_type: str, message: str) -> StreamEvent:
    return StreamEvent("error", ErrorData(status=status, error=error_detail(error_type, message)))


# Not an event of the turn: its source has had nothing to send for a while. Only the SSE
# encoder writes anything for it, a `: ping` comment, so that proxies and browsers keep a
# quiet connection open; NDJSON and the folded JSON leave it out.
IDLE = StreamEvent("idle")


# ensure_ascii=False: UTF-8 is smaller on the wire than \uXXXX escapes for non-Latin text.
# One encoder for every frame: `json.dumps` with options builds a new one per call.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _json(data: Any) -> str:
    text = _encode(data)
    # U+0085, U+2028 and U+2029 are line breaks to some splitters (Python's splitlines,
    # old JS); escaped, every encoded event is one line for every reader. (json.dumps
    # already escapes the C0 controls.)
    if "\x85" in text or "\u2028" in text or "\u2029" in text:
        for c in _LINE_BREAKS_JSON_KEEPS:
            text = text.replace(c, f"\\u{ord(c):04x}")
    return text


def sse_event(event: str, data: Mapping[str, Any], *, id: int | None = None) -> bytes:
    """One SSE frame. JSON never contains a raw newline, so one `data:` line is enough."""
    head = f"id: {id}\nevent: {event}\n" if id is not None else f"event: {event}\n"
    return f"{head}data: {_json(data)}\n\n".encode()


def sse_retry(milliseconds: int) -> bytes:
    return f"retry: {milliseconds}\n\n".encode()


def ndjson_line(event: str, data: Mapping[str, Any]) -> bytes:
    return (_json({"type": event, **data}) + "\n").encode()


def encode_sse(event: StreamEvent, *, id: int | None = None) -> bytes:
    if event.type == "idle":
        return SSE_PING
    return sse_event(event.type, event.data, id=id)


def decode_sse(frame: bytes) -> StreamEvent:
    """The event a frame of `encode_sse` with an id holds (a turn log's frame, stored as
    `id: n\\nevent: x\\ndata: {...}\\n\\n`); its type is one of ours, written by us."""
    _, event_line, data_line, *_ = frame.decode().split("\n")
    event_type = cast(EventType, event_line.removeprefix("event: "))
    return StreamEvent(event_type, json.loads(data_line.removeprefix("data: ")))


def encode_ndjson(event: StreamEvent) -> bytes:
    return b"" if event.type == "idle" else ndjson_line(event.type, event.data)


def fold(events: Iterable[StreamEvent]) -> ChatReply:
    """The JSON reply: the same events folded into one object."""
    reply: dict[str, Any] = {
        "conversation": None,
        "message": None,
        "model": None,
        "reply": "",
        "status": None,
        "finish_reason": None,
        "usage": None,
        "cost": None,
        "ttft_ms": None,
        "duration_ms": None,
    }
    texts: list[str] = []
    parts: list[dict[str, Any]] = []
    for event in events:
        if event.type == "start":
            reply.update(event.data)
        elif event.type in PART_EVENTS:
            kind = PART_EVENTS[event.type]
            if event.type == "delta":
                texts.append(event.data["text"])
            same = [p for p in parts if kind == "web_search" and p.get("id") == event.data["id"]]
            if kind in ("text", "reasoning") and parts and parts[-1]["type"] == kind:
                parts[-1]["text"] += event.data["text"]
            elif same:  # a search under way, then done
                same[0].update(event.data)
            else:
                parts.append({"type": kind, **event.data})
        elif event.type in ("end", "error"):
            reply.update(event.data)
    reply["reply"] = "".join(texts)
    if any(part["type"] != "text" for part in parts):
        reply["parts"] = parts  # only when the reply is more than its text
    # Its keys are those above and the `start` (`StartData`) and `end` or `error` events'
    # (`EndData`, `ErrorData`): a `ChatReply`.
    return cast(ChatReply, reply)
