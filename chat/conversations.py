"""Conversation-level services and reads: a person's list (paged, searched), a
conversation's JSON, renaming, deleting, purging and exporting. (Adopting an anonymous
visitor's conversations at sign-in is `chat.access.owners.conversations_adopt`.)

Deleting is soft: the conversation is gone for its owner (`Owner.conversations()` leaves
it out), while its turns, usage and cost stay in the admin, in every report and in every
budget. `conversations_purge` removes the text of long-deleted ones for good, and
`history_purge` the text of everything older than the retention period.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.text import slugify

from chat.access.owners import Owner
from chat.errors import ChatError, ErrorDetail, error_detail, not_found
from chat.files.lifecycle import files_purge, files_purge_written_before, files_release
from chat.files.selectors import FileData, afiles_for_messages
from chat.models import Conversation, Message
from chat.search import message_matches, query_words, snippet, title_matches
from chat.streams import UsageData, money_json
from chat.text import one_line
from chat.turns import UNFINISHED, message_usage, shown_parts, stream_url

PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
MAX_TITLE_CHARS = 200


class ConversationSummary(TypedDict):
    id: str
    title: str
    model: str
    created_at: str
    updated_at: str


class SearchedConversation(ConversationSummary):
    snippet: str | None  # where it matched (None: in the title alone)


class ConversationPage(TypedDict):
    conversations: list[ConversationSummary] | list[SearchedConversation]
    next: str | None  # the cursor for `?before=`


class MessageData(TypedDict):
    id: int
    role: str
    content: str
    status: str
    model: str
    finish_reason: str
    usage: UsageData | None
    usage_estimated: bool
    cost: str | None
    ttft_ms: int | None
    duration_ms: int | None
    error: ErrorDetail | None
    created_at: str
    stream_url: str | None
    parts: list[dict[str, Any]]  # reasoning, tool calls and results, text; in order
    rounds: list[dict[str, Any]]  # each model call's usage and cost
    attachments: list[FileData]  # a user message's files


class CurrentMessage(MessageData):
    """A message as its turn shows it now, with the turn's other versions."""

    version: int
    versions: int
    previous_versions: list[MessageData]
    later_versions: list[MessageData]  # when an earlier version was chosen again


class ConversationDetail(ConversationSummary):
    system: str
    messages: list[CurrentMessage]  # current versions only


def conversation_summary(conversation: Conversation) -> ConversationSummary:
    return {
        "id": str(conversation.id),
        "title": conversation.title,
        "model": conversation.model,
        "created_at": conversation.created_at.isoformat(),
        "updated_at": conversation.updated_at.isoformat(),
    }


async def conversation_detail(*, owner: Owner, conversation_id: uuid.UUID) -> ConversationDetail:
    conversation = await owner.conversations().filter(pk=conversation_id).afirst()
    if conversation is None:
        raise not_found("conversation")
    rows = [m async for m in conversation.messages.order_by("pk")]
    files = await afiles_for_messages(m.pk for m in rows if m.role == Message.Role.USER)
    versions: dict[int, list[Message]] = {}
    for m in rows:
        versions.setdefault(m.version_of_id or m.pk, []).append(m)
    messages: list[CurrentMessage] = []
    for m in rows:
        if m.superseded_at is not None:
            continue
        turn_versions = versions[m.version_of_id or m.pk]
        index = turn_versions.index(m)
        messages.append(
            {
                **message_data(m, files),
                "version": index + 1,
                "versions": len(turn_versions),
                "previous_versions": [message_data(v, files) for v in turn_versions[:index]],
                "later_versions": [message_data(v, files) for v in turn_versions[index + 1 :]],
            }
        )
    return {
        **conversation_summary(conversation),
        "system": conversation.system_prompt,
        "messages": messages,
    }


def message_data(m: Message, files: dict[int, list[FileData]] | None = None) -> MessageData:
    return {
        "id": m.pk,
        "role": m.role,
        "content": m.content,
        "status": m.status,
        "model": m.model,
        "finish_reason": m.finish_reason,
        "usage": message_usage(m),
        "usage_estimated": m.usage_estimated,
        "cost": money_json(m.cost),
        "ttft_ms": m.ttft_ms,
        "duration_ms": m.duration_ms,
        "error": error_detail(m.error_type, m.error_message) if m.error_type else None,
        "created_at": m.created_at.isoformat(),
        "stream_url": stream_url(m.pk) if m.status in UNFINISHED else None,
        "parts": shown_parts(m.parts),
        "rounds": m.rounds or [],
        "attachments": (files or {}).get(m.pk, []),
    }


# --- The list: newest first, in pages, optionally searched -----------------------------


def _cursor(conversation: Conversation) -> str:
    raw = f"{conversation.updated_at.isoformat()}|{conversation.pk}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _after_cursor(cursor: str) -> Q:
    """Conversations listed after the one `cursor` names (older, or as old with a smaller id)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, _, pk = raw.partition("|")
        updated_at, conversation_id = datetime.fromisoformat(when), uuid.UUID(pk)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ChatError("invalid_cursor", "`before` is not a cursor this API gave.") from None
    return Q(updated_at__lt=updated_at) | Q(updated_at=updated_at, pk__lt=conversation_id)


def page_size(value: str | None) -> int:
    if value is None or value == "":
        return PAGE_SIZE
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE_SIZE:
        raise ChatError("invalid_limit", f"`limit` is a number from 1 to {MAX_PAGE_SIZE}.")
    return int(value)


async def conversation_page(
    *, owner: Owner, q: str = "", before: str | None = None, limit: int = PAGE_SIZE
) -> ConversationPage:
    """A page of the owner's conversations, newest first: all, or those whose title or
    messages contain every word of `q` (each with a snippet of where it matched). `next`
    is the cursor for the following page (`?before=`), or None at the end."""
    conversations: QuerySet[Conversation] = owner.conversations()
    words = query_words(q)
    if q.strip() and not words:
        return {"conversations": [], "next": None}
    if words:
        # Matched through the text index alone; the owner is the outer query's filter (a
        # join here would make the planner walk the owner's messages one by one).
        matching = Message.objects.filter(message_matches(words))
        conversations = conversations.filter(
            title_matches(words) | Q(pk__in=matching.values("conversation_id"))
        )
    if before:
        conversations = conversations.filter(_after_cursor(before))
    rows = [c async for c in conversations.order_by("-updated_at", "-pk")[: limit + 1]]
    shown = rows[:limit]
    after = _cursor(shown[-1]) if len(rows) > limit else None
    if not (words and shown):
        return {"conversations": [conversation_summary(c) for c in shown], "next": after}
    texts = await _snippets([c.pk for c in shown], words)
    found: list[SearchedConversation] = []
    for conversation in shown:
        text = texts.get(conversation.pk)
        found.append(
            {
                **conversation_summary(conversation),
                "snippet": snippet(text, words) if text else None,
            }
        )
    return {"conversations": found, "next": after}


async def _snippets(ids: list[uuid.UUID], words: list[str]) -> dict[uuid.UUID, str]:
    """The newest matching message's text for each conversation: one query."""
    found: dict[uuid.UUID, str] = {}
    rows = (
        Message.objects.filter(conversation_id__in=ids)
        .filter(message_matches(words))
        .order_by("-pk")
        .values_list("conversation_id", "content")
    )
    async for conversation_id, content in rows:
        found.setdefault(conversation_id, content)
    return found


# --- Changes ---------------------------------------------------------------------------


async def conversation_rename(
    *, owner: Owner, conversation_id: uuid.UUID, title: str
) -> ConversationSummary:
    title = one_line(title)
    if not 1 <= len(title) <= MAX_TITLE_CHARS:
        raise ChatError("invalid_title", f"A title has 1 to {MAX_TITLE_CHARS} characters.")
    # An update, not save(): renaming is not activity, so the list order stays.
    mine = owner.conversations().filter(pk=conversation_id)
    if not await mine.aupdate(title=title):
        raise not_found("conversation")
    return conversation_summary(await mine.aget())


async def conversation_delete(*, owner: Owner, conversation_id: uuid.UUID) -> None:
    """Hide the conversation from its owner; its usage and cost stay in every report."""
    deleted = (
        await owner.conversations().filter(pk=conversation_id).aupdate(deleted_at=timezone.now())
    )
    if not deleted:
        raise not_found("conversation")
    # The page sends the DELETE once its Undo window has passed: the files can go now.
    await files_release(conversation_id=conversation_id)


def conversations_purge(*, deleted_before: datetime) -> int:
    """Remove for good the text of conversations deleted before `deleted_before`: titles,
    system prompts, messages and error messages, and their files' bytes. Their usage
    numbers stay. Returns how many conversations were purged (again purging one changes
    nothing)."""
    files_purge(deleted_before=deleted_before)
    now = timezone.now()
    conversations = Conversation.objects.filter(deleted_at__lt=deleted_before)
    Message.objects.filter(conversation__in=conversations, purged_at__isnull=True).exclude(
        status__in=UNFINISHED
    ).update(content="", error_message="", parts=None, purged_at=now)
    return conversations.filter(purged_at__isnull=True).update(
        title="", system_prompt="", purged_at=now
    )


@dataclass(frozen=True, slots=True)
class Retention:
    messages: int
    conversations: int
    files: int = 0


def history_purge(
    *, before: datetime, batch: int = 500, progress: Callable[[int, int], None] | None = None
) -> Retention:
    """Remove the text of every message written before `before` and the title and system
    prompt of every conversation last used before it (retention, CHAT_RETENTION_DAYS), a
    small batch per transaction so no lock lasts, oldest first; their usage and cost stay
    in every row and in the ledger; then the files only such messages had.
    `progress(messages, conversations)` after each batch."""
    old_messages = Message.objects.filter(purged_at__isnull=True, created_at__lt=before).exclude(
        status__in=UNFINISHED
    )
    old_conversations = Conversation.objects.filter(purged_at__isnull=True, updated_at__lt=before)
    messages = conversations = 0
    for done in _purge_in_batches(
        old_messages,
        ("purged_at", "created_at"),
        {"content": "", "error_message": "", "parts": None},
        batch,
    ):
        messages += done
        if progress is not None:
            progress(messages, conversations)
    for done in _purge_in_batches(
        old_conversations, ("purged_at", "updated_at"), {"title": "", "system_prompt": ""}, batch
    ):
        conversations += done
        if progress is not None:
            progress(messages, conversations)
    files = files_purge_written_before(before=before)
    return Retention(messages=messages, conversations=conversations, files=files)


def _purge_in_batches(
    rows: QuerySet[Any], order: tuple[str, ...], cleared: dict[str, Any], batch: int
) -> Iterator[int]:
    """Clear `cleared` and set `purged_at` on `rows`, `batch` at a time in `order` (its
    index's), each batch its own transaction; yields how many each batch purged."""
    while True:
        with transaction.atomic():
            ids = list(rows.order_by(*order).values_list("pk", flat=True)[:batch])
            if ids:
                done = rows.model.objects.filter(pk__in=ids).update(
                    **cleared, purged_at=timezone.now()
                )
        if not ids:
            return
        yield done


# --- Export ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Export:
    filename: str
    content_type: str
    body: str


EXPORT_FORMATS = ("md", "json")


async def conversation_export(*, owner: Owner, conversation_id: uuid.UUID, format: str) -> Export:
    """The conversation to download: Markdown for people, JSON (every message with its
    model, status, usage and cost) for programs."""
    if format not in EXPORT_FORMATS:
        raise ChatError("invalid_format", "`format` is md or json.")
    detail = await conversation_detail(owner=owner, conversation_id=conversation_id)
    stem = slugify(detail["title"])[:60] or "conversation"
    name = f"{stem}-{detail['id'][:8]}"
    if format == "json":
        return Export(f"{name}.json", "application/json", json.dumps(detail, indent=2) + "\n")
    return Export(f"{name}.md", "text/markdown; charset=utf-8", conversation_markdown(detail))


def conversation_markdown(detail: ConversationDetail) -> str:
    lines = [f"# {detail['title'] or 'Conversation'}", ""]
    lines += [f"*{detail['created_at'][:10]} · {detail['model']}*", ""]
    if detail["system"]:
        lines += ["**System**", "", detail["system"], ""]
    for message in detail["messages"]:
        if message["role"] == "user":
            lines += ["## You", ""]
        else:
            lines += [f"## Assistant ({message['model']}, {message['status']})", ""]
        if any(part["type"] != "text" for part in message["parts"]):
            lines += _parts_markdown(message["parts"])
        else:
            lines += [message["content"] or "*(no text)*", ""]
        if message["attachments"]:
            names = ", ".join(file["name"] for file in message["attachments"])
            lines += [f"*Attached: {names}*", ""]
    return "\n".join(lines)


def _parts_markdown(parts: list[dict[str, Any]]) -> list[str]:
    """Reasoning as a quote, each tool call and its result as a line and a code block."""
    lines: list[str] = []
    for part in parts:
        kind = part["type"]
        if kind == "text":
            lines += [part["text"], ""]
        elif kind == "reasoning" and part.get("text"):
            took = part.get("duration_ms")
            head = "> **Thinking**" + (f" ({took / 1000:.1f} s)" if took is not None else "")
            lines += [head, ">", *(f"> {line}" for line in part["text"].splitlines()), ""]
        elif kind == "tool_call":
            lines += [f"**Tool call** `{part['name']}` `{part['arguments']}`", ""]
        elif kind == "tool_result":
            label = "Tool error" if part.get("error") else "Tool result"
            fence = "````" if "```" in part["output"] else "```"
            lines += [f"**{label}** `{part['name']}`", "", fence, part["output"], fence, ""]
    return lines


class ExportedMessage(TypedDict):
    id: int
    role: str
    content: str
    current: bool
    version_of: int | None
    status: str
    model: str
    usage: UsageData | None
    cost: str | None
    created_at: str
    parts: list[dict[str, Any]]
    rounds: list[dict[str, Any]]


class ExportRecord(TypedDict):
    """A line of `manage.py chat_export`."""

    id: str
    title: str
    model: str
    system: str
    owner: str | None
    created_at: str
    deleted: bool
    messages: list[ExportedMessage]


def export_record(conversation: Conversation, messages: list[Message]) -> ExportRecord:
    """One conversation as a JSON Lines record for `manage.py chat_export`."""
    return {
        "id": str(conversation.id),
        "title": conversation.title,
        "model": conversation.model,
        "system": conversation.system_prompt,
        "owner": conversation.owner.get_username() if conversation.owner else None,
        "created_at": conversation.created_at.isoformat(),
        "deleted": conversation.deleted_at is not None,
        "messages": [
            {
                "id": m.pk,
                "role": m.role,
                "content": m.content,
                # Regenerated or edited turns keep their earlier versions, not current.
                "current": m.superseded_at is None,
                "version_of": m.version_of_id,
                "status": m.status,
                "model": m.model,
                "usage": message_usage(m),
                "cost": money_json(m.cost),
                "created_at": m.created_at.isoformat(),
                "parts": shown_parts(m.parts),
                "rounds": m.rounds or [],
            }
            for m in messages
        ],
    }


def conversations_export(
    *, since: datetime, until: datetime, include_deleted: bool = False
) -> Iterator[str]:
    """Conversations created in [since, until) as JSON Lines, oldest first, read in chunks
    so a large export never holds everything in memory."""
    conversations = Conversation.objects.filter(
        created_at__gte=since, created_at__lt=until
    ).select_related("owner")
    if not include_deleted:
        conversations = conversations.filter(deleted_at__isnull=True)
    for conversation in conversations.order_by("created_at", "pk").iterator(chunk_size=200):
        messages = list(conversation.messages.order_by("pk"))
        yield json.dumps(export_record(conversation, messages), ensure_ascii=False)
