"""Reads: a turn's stored events, a person's conversations and their messages."""

from __future__ import annotations

import uuid
from typing import Any

from django.urls import reverse

from chat.errors import not_found
from chat.models import Message
from chat.owners import Owner
from chat.streams import StreamEvent

Status = Message.Status
# A reply still to come or coming: its stream can be (re)opened.
UNFINISHED = (Status.PENDING, Status.STREAMING)


def stream_url(message_id: int) -> str:
    """Where a deferred turn is streamed (`EventSource`)."""
    return reverse("chat:message-stream", args=[message_id])


def end_event_data(
    *,
    status: str,
    finish_reason: str,
    usage: dict[str, int] | None,
    usage_estimated: bool,
    cost: Any,
    ttft_ms: int | None,
    duration_ms: int | None,
    error: dict[str, str] | None = None,
    retry_after: str | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "status": str(status),
        "finish_reason": finish_reason,
        "usage": usage,
        "usage_estimated": usage_estimated,
        "cost": None if cost is None else f"{cost:f}",
        "ttft_ms": ttft_ms,
        "duration_ms": duration_ms,
    }
    if error:
        data["error"] = error
        if retry_after:
            data["retry_after"] = retry_after
    return data


def message_usage(message: Message) -> dict[str, int] | None:
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
        StreamEvent(
            "start",
            {
                "conversation": str(message.conversation_id),
                "message": message.pk,
                "model": message.model,
            },
        )
    ]
    if message.content:
        events.append(StreamEvent("delta", {"text": message.content}))
    kind = "error" if message.status == Status.FAILED else "end"
    events.append(StreamEvent(kind, stored_end_data(message)))
    return events


def stored_end_data(message: Message) -> dict[str, Any]:
    """The `end` (or, for a failed turn, `error`) event's data, read back from the row."""
    return end_event_data(
        status=message.status,
        finish_reason=message.finish_reason,
        usage=message_usage(message),
        usage_estimated=message.usage_estimated,
        cost=message.cost,
        ttft_ms=message.ttft_ms,
        duration_ms=message.duration_ms,
        error={"type": message.error_type, "message": message.error_message}
        if message.status == Status.FAILED
        else None,
    )


async def conversation_detail(*, owner: Owner, conversation_id: uuid.UUID) -> dict[str, Any]:
    conversation = await owner.conversations().filter(pk=conversation_id).afirst()
    if conversation is None:
        raise not_found("conversation")
    rows = [m async for m in conversation.messages.order_by("pk")]
    versions: dict[int, list[Message]] = {}
    for m in rows:
        versions.setdefault(m.version_of_id or m.pk, []).append(m)
    messages = []
    for m in rows:
        if m.superseded_at is not None:
            continue
        turn_versions = versions[m.version_of_id or m.pk]
        index = turn_versions.index(m)
        item = message_data(m)
        item["version"] = index + 1
        item["versions"] = len(turn_versions)
        item["previous_versions"] = [message_data(v) for v in turn_versions[:index]]
        # Newer ones, when an earlier version was chosen again (`turn_select`).
        item["later_versions"] = [message_data(v) for v in turn_versions[index + 1 :]]
        messages.append(item)
    return {
        "id": str(conversation.id),
        "title": conversation.title,
        "model": conversation.model,
        "system": conversation.system_prompt,
        "created_at": conversation.created_at.isoformat(),
        "updated_at": conversation.updated_at.isoformat(),
        "messages": messages,
    }


def message_data(m: Message) -> dict[str, Any]:
    return {
        "id": m.pk,
        "role": m.role,
        "content": m.content,
        "status": m.status,
        "model": m.model,
        "finish_reason": m.finish_reason,
        "usage": message_usage(m),
        "usage_estimated": m.usage_estimated,
        "cost": None if m.cost is None else f"{m.cost:f}",
        "ttft_ms": m.ttft_ms,
        "duration_ms": m.duration_ms,
        "error": {"type": m.error_type, "message": m.error_message} if m.error_type else None,
        "created_at": m.created_at.isoformat(),
        "stream_url": stream_url(m.pk) if m.status in UNFINISHED else None,
    }
