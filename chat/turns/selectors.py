"""Reads of a turn: where it streams, its stored events, and its `end` event rebuilt
from the row."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.urls import reverse

from chat.errors import ErrorDetail, error_detail
from chat.models import Message
from chat.streams import EndData, EventType, StreamEvent, UsageData, money_json, start_event

Status = Message.Status
# A reply still to come or coming: its stream can be (re)opened.
UNFINISHED = Message.UNFINISHED_STATUSES


def stream_url(message_id: int) -> str:
    """Where a deferred turn is streamed (`EventSource`)."""
    return reverse("chat:message-stream", args=[message_id])


def end_event_data(
    *,
    status: str,
    finish_reason: str,
    usage: UsageData | None,
    usage_estimated: bool,
    cost: Decimal | None,
    ttft_ms: int | None,
    duration_ms: int | None,
    error: ErrorDetail | None = None,
    retry_after: str | None = None,
) -> EndData:
    data: EndData = {
        "status": str(status),
        "finish_reason": finish_reason,
        "usage": usage,
        "usage_estimated": usage_estimated,
        "cost": money_json(cost),
        "ttft_ms": ttft_ms,
        "duration_ms": duration_ms,
    }
    if error:
        data["error"] = error
        if retry_after:
            data["retry_after"] = retry_after
    return data


def message_usage(message: Message) -> UsageData | None:
    if message.input_tokens is None:
        return None
    return {
        "input_tokens": message.input_tokens,
        "output_tokens": message.output_tokens or 0,
        "total_tokens": message.total_tokens or 0,
        "cached_tokens": message.cached_tokens or 0,
        "reasoning_tokens": message.reasoning_tokens or 0,
    }


def turn_replay(message: Message) -> list[StreamEvent]:
    """The events of a finished turn, rebuilt from its stored row (no model call)."""
    events = [
        start_event(
            {
                "conversation": str(message.conversation_id),
                "message": message.pk,
                "model": message.model,
            }
        )
    ]
    if message.parts:
        events += part_events(message.parts)
    elif message.content:
        events.append(StreamEvent("delta", {"text": message.content}))
    kind: EventType = "error" if ends_in_error(message) else "end"
    events.append(StreamEvent(kind, stored_end_data(message)))
    return events


def shown_parts(parts: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """A reply's parts as the API shows and exports them: without the provider's opaque
    reasoning item, which only the model reads; none for a reply that is text only."""
    return [{k: v for k, v in part.items() if k != "item"} for part in parts or ()]


def part_events(parts: list[dict[str, Any]]) -> list[StreamEvent]:
    """A stored reply's parts as the events that streamed them (a reasoning part also
    says how long the thinking took; its opaque item stays on the server)."""
    events: list[StreamEvent] = []
    for part in parts:
        kind = part.get("type")
        if kind == "text" and part.get("text"):
            events.append(StreamEvent("delta", {"text": part["text"]}))
        elif kind == "reasoning" and part.get("text"):
            data = {"text": part["text"]}
            if part.get("duration_ms") is not None:
                data["duration_ms"] = part["duration_ms"]
            events.append(StreamEvent("reasoning", data))
        elif kind == "tool_call":
            call = ("id", "name", "arguments", "runner")
            events.append(StreamEvent("tool_call", {f: part.get(f) for f in call}))
        elif kind == "tool_result":
            result = ("id", "name", "output", "error", "duration_ms")
            events.append(StreamEvent("tool_result", {f: part.get(f) for f in result}))
        elif kind == "web_search":
            search = ("id", "status", "query")
            events.append(StreamEvent("web_search", {f: part.get(f) for f in search}))
        elif kind == "citation":
            cited = ("url", "title", "start_index", "end_index")
            events.append(StreamEvent("citation", {f: part.get(f) for f in cited}))
    return events


def stored_end_data(message: Message) -> EndData:
    """The `end` (or, for a failed turn, `error`) event's data, read back from the row."""
    return end_event_data(
        status=message.status,
        finish_reason=message.finish_reason,
        usage=message_usage(message),
        usage_estimated=message.usage_estimated,
        cost=message.cost,
        ttft_ms=message.ttft_ms,
        duration_ms=message.duration_ms,
        error=error_detail(message.error_type, message.error_message)
        if ends_in_error(message)
        else None,
    )


def ends_in_error(message: Message) -> bool:
    """Whether a finished turn's last event is an `error`: it failed, or its producer
    stopped before it was done (`interrupted`, though `incomplete` with its text)."""
    return message.status == Status.FAILED or (
        message.status == Status.INCOMPLETE and message.error_type == "interrupted"
    )
