"""Starting turns: the rows exist before any upstream call (`turn_start`), and a deferred
turn is claimed exactly once (`turn_claim`), so only one caller ever reaches the model."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from chat import llm
from chat.access.owners import Owner
from chat.errors import ChatError, not_found
from chat.files.context import files_check_model
from chat.files.selectors import files_of_starts, files_pick
from chat.models import Attachment, Conversation, Message, MessageAttachment
from chat.runtime import committed
from chat.spend.ledger import message_finalize
from chat.text import title_from
from chat.turns.batching import Batcher
from chat.turns.workers import lease_until, worker_id

Status = Message.Status


@dataclass(slots=True)
class Turn:
    """One assistant reply being produced, and everything needed to produce it."""

    conversation_id: uuid.UUID
    message_id: int
    model: str
    api: llm.Api
    provider: str
    system: str
    # Input items in the api's shape: messages, and earlier replies' tool calls and results.
    context: list[dict[str, Any]] = field(default_factory=list)
    user_message_id: int | None = None  # the prompt's row, when this turn stored it
    owner: Owner | None = None  # who asks: handed to the tools that want to know
    # The files of the context's messages: a message's index in `context` → its
    # attachments, in order; their bytes are read when the model is called
    # (`chat.files.context`).
    attached: dict[int, list[Attachment]] = field(default_factory=dict)


def choose_model(requested: str | None, conversation_model: str = "") -> str:
    allowed = llm.backend().models
    model = requested or conversation_model or llm.backend().default_model
    if model not in allowed:
        if requested:
            raise ChatError(
                "invalid_model",
                f"Model {requested!r} is not allowed here; choose one of {', '.join(allowed)}.",
            )
        model = llm.backend().default_model  # the allow-list changed since
    return model


def choose_api(requested: str | None) -> llm.Api:
    return as_api(requested or llm.backend().api)


def as_api(value: str) -> llm.Api:
    """`value` as one of the model APIs (`llm.APIS`), typed as one."""
    api = llm.api_named(value)
    if api is None:
        raise ChatError("invalid_api", "api must be 'responses' or 'chat'.")
    return api


async def turn_start(
    *,
    owner: Owner,
    message: str,
    conversation_id: uuid.UUID | None = None,
    model: str | None = None,
    system: str | None = None,
    api: str | None = None,
    attachments: Sequence[uuid.UUID] = (),
    defer: bool = False,
) -> Turn:
    """Store the user's message and the assistant row (`pending` when deferred, else
    already claimed as `streaming`) before any upstream call. Turns started at the same
    moment are written together, in one transaction (`chat.turns.batching`), their files
    looked up in it, in one query: a foreign or unknown file refuses its turn (404)."""
    start = _Start(
        owner=owner,
        message=message,
        conversation_id=conversation_id,
        model=model,
        system=system,
        api=choose_api(api),
        defer=defer,
        file_ids=tuple(attachments),
    )
    return await committed(start_writes.submit(start), undo=lambda turn: _abandon(turn.message_id))


async def _abandon(message_id: int) -> None:
    """A turn whose client left before it started: cancelled, never sent to the model."""
    await sync_to_async(message_finalize)(
        message_id, status=Status.CANCELLED, finished_at=timezone.now()
    )


@dataclass(frozen=True, slots=True)
class _Start:
    owner: Owner
    message: str
    conversation_id: uuid.UUID | None
    model: str | None
    system: str | None
    api: llm.Api
    defer: bool
    file_ids: tuple[uuid.UUID, ...] = ()


def _turns_start(starts: list[_Start]) -> list[Turn | Exception]:
    """One transaction for a batch of turn starts: new conversations and all messages in
    bulk INSERTs (as many rows per statement as the database takes). A start that is
    refused (unknown conversation, model not allowed) gets its `ChatError` and writes
    nothing; the others go on."""
    backend = llm.backend()
    with transaction.atomic():
        locked = _lock_conversations(starts)
        files = files_of_starts(pk for start in starts for pk in start.file_ids)
        plans = [_plan(start, locked, files) for start in starts]
        Conversation.objects.bulk_create(
            plan.conversation for plan in plans if isinstance(plan, _Plan) and plan.is_new
        )
        rows: list[Message] = []
        for plan in plans:
            if isinstance(plan, _Plan):
                rows += _messages(plan, backend.name)
        # Their ids come back from the INSERT (RETURNING), in order.
        Message.objects.bulk_create(rows)
        written = list(zip(rows[0::2], rows[1::2], strict=True))
        _attach([plan for plan in plans if isinstance(plan, _Plan)], written)
        pairs = iter(written)
        return [
            _turn(plan, *next(pairs), backend.name) if isinstance(plan, _Plan) else plan
            for plan in plans
        ]


@dataclass(slots=True)
class _Plan:
    start: _Start
    conversation: Conversation
    model: str
    is_new: bool
    files: list[Attachment] = field(default_factory=list)


def _attach(plans: list[_Plan], pairs: list[tuple[Message, Message]]) -> None:
    """The user messages' files, in one INSERT for the batch."""
    MessageAttachment.objects.bulk_create(
        MessageAttachment(message=user, attachment=attachment, position=position)
        for plan, (user, _) in zip(plans, pairs, strict=True)
        for position, attachment in enumerate(plan.files)
    )


def _lock_conversations(starts: list[_Start]) -> dict[uuid.UUID, Conversation]:
    """The batch's existing conversations, row-locked (PostgreSQL) in one query: the lock
    serialises turns of one conversation across workers, and taking all of a batch's
    locks in primary-key order means two workers' batches never wait on each other in a
    cycle."""
    ids = {start.conversation_id for start in starts if start.conversation_id is not None}
    if not ids:
        return {}
    rows = Conversation.objects.select_for_update().filter(pk__in=ids).order_by("pk")
    return {conversation.pk: conversation for conversation in rows}


def _plan(
    start: _Start, locked: dict[uuid.UUID, Conversation], stored: dict[uuid.UUID, Attachment]
) -> _Plan | ChatError:
    try:
        files = files_pick(stored, owner=start.owner, ids=start.file_ids)
        if start.conversation_id is None:
            chosen = choose_model(start.model)
            files_check_model(files, model=chosen)
            conversation = Conversation(
                owner_id=start.owner.user_id,
                anonymous_key=start.owner.anonymous_key,
                title=title_from(start.message),
                model=chosen,
                system_prompt=start.system or "",
            )
            return _Plan(start, conversation, chosen, is_new=True, files=files)
        found = locked.get(start.conversation_id)
        if found is None or not start.owner.owns(found):
            raise not_found("conversation")
        chosen = choose_model(start.model, found.model)
        files_check_model(files, model=chosen)
    except ChatError as exc:
        return exc
    changes: dict[str, Any] = {"updated_at": timezone.now(), "model": chosen}
    if start.system is not None:
        changes["system_prompt"] = start.system
    Conversation.objects.filter(pk=found.pk).update(**changes)
    found.system_prompt = changes.get("system_prompt", found.system_prompt)
    return _Plan(start, found, chosen, is_new=False, files=files)


def _messages(plan: _Plan, provider_name: str) -> list[Message]:
    start = plan.start
    now = timezone.now()
    return [
        Message(
            conversation=plan.conversation,
            role=Message.Role.USER,
            content=start.message,
            model=plan.model,
        ),
        Message(
            conversation=plan.conversation,
            role=Message.Role.ASSISTANT,
            status=Status.PENDING if start.defer else Status.STREAMING,
            claimed_at=None if start.defer else now,
            # Deferred: who took it, until a claim names its producer (an unopened turn
            # of a process that died is finished by `chat.turns.recover`).
            worker=worker_id(),
            lease_until=None if start.defer else lease_until(now),
            provider=provider_name,
            api=start.api,
            model=plan.model,
        ),
    ]


def _turn(plan: _Plan, user: Message, assistant: Message, provider_name: str) -> Turn:
    start = plan.start
    turn = Turn(
        conversation_id=plan.conversation.pk,
        message_id=assistant.pk,
        user_message_id=user.pk,
        model=plan.model,
        api=start.api,
        provider=provider_name,
        system=plan.conversation.system_prompt,
        owner=start.owner,
    )
    if not start.defer:  # a deferred turn's context is read when it is claimed
        if plan.is_new:
            # A new conversation's context is the message just stored: no query.
            turn.context = [{"role": "user", "content": start.message}]
            turn.context = turn.context[: settings.CHAT_MAX_CONTEXT_MESSAGES]
            if plan.files and turn.context:
                turn.attached = {0: plan.files}
        else:
            turn.context, turn.attached = _context(
                plan.conversation.pk, before=assistant.pk, api=start.api
            )
    return turn


# Every turn's start, group-committed; `chat.turns.finish`'s batches let these go first.
start_writes: Batcher[_Start, Turn] = Batcher(_turns_start)


def _context(
    conversation_id: uuid.UUID, *, before: int, api: llm.Api
) -> tuple[list[dict[str, Any]], dict[int, list[Attachment]]]:
    """Earlier messages sent to the model, oldest first, capped to the newest N; of a
    regenerated or edited turn only its current version. A reply that called tools goes
    as its calls and their results too, in the api's shape, so the model still knows
    what it found out. With them, the files attached to them (by index in the context):
    read only when a message has any, which the messages' own query says."""
    rows = (
        Message.objects.filter(
            conversation_id=conversation_id, pk__lt=before, superseded_at__isnull=True
        )
        .exclude(role=Message.Role.ASSISTANT, content="")
        .exclude(status__in=[Status.PENDING, Status.STREAMING])
        .annotate(has_files=Exists(MessageAttachment.objects.filter(message_id=OuterRef("pk"))))
        .order_by("-pk")
        .values_list("pk", "role", "content", "parts", "has_files")[
            : settings.CHAT_MAX_CONTEXT_MESSAGES
        ]
    )
    context: list[dict[str, Any]] = []
    index: dict[int, int] = {}  # a user message's id with files → its place in `context`
    for pk, role, content, parts, has_files in reversed(rows):
        if role == Message.Role.ASSISTANT and parts and llm.has_tool_parts(parts):
            context += llm.input_items(api, parts)
            continue
        if has_files:
            index[pk] = len(context)
        context.append({"role": role, "content": content})
    attached: dict[int, list[Attachment]] = {}
    if index:
        files = (
            MessageAttachment.objects.filter(message_id__in=list(index))
            .select_related("attachment")
            .order_by("message_id", "position")
        )
        for row in files:
            attached.setdefault(index[row.message_id], []).append(row.attachment)
    return context, attached


async def turn_claim(*, owner: Owner, message_id: int) -> Turn | Message:
    """Claim a deferred turn (`pending → streaming`) atomically.

    Returns the `Turn` to stream when this caller won the claim; otherwise the stored
    `Message` (finished, or streaming for someone else). Only a won claim ever reaches
    the model, so a reconnecting browser can never cause a second call or bill.
    """
    message: Message | None = (
        await owner.messages()
        .select_related("conversation")
        .filter(pk=message_id, role=Message.Role.ASSISTANT)
        .afirst()
    )
    if message is None:
        raise not_found("message")
    if message.status == Status.PENDING:
        turn = await committed(_claim(message), undo=_abandon_claim)
        if turn is not None:
            return turn
        await message.arefresh_from_db()
    return message


async def _claim(message: Message) -> Turn | None:
    # One hop for the conditional UPDATE and the context read after it, not one each.
    return await sync_to_async(_claim_and_read)(message)


def _claim_and_read(message: Message) -> Turn | None:
    now = timezone.now()
    won = Message.objects.filter(pk=message.pk, status=Status.PENDING).update(
        status=Status.STREAMING, claimed_at=now, worker=worker_id(), lease_until=lease_until(now)
    )
    if not won:
        return None
    return turn_of(message)


def turn_of(message: Message) -> Turn:
    """The `Turn` of a claimed assistant row (its conversation selected with it), with its
    context read back: to produce it, or to estimate what a lost producer was billed."""
    api = as_api(message.api)  # stored from `choose_api`, so always one of them
    context, attached = _context(message.conversation_id, before=message.pk, api=api)
    conversation = message.conversation
    return Turn(
        conversation_id=message.conversation_id,
        message_id=message.pk,
        model=message.model,
        api=api,
        provider=message.provider,
        system=conversation.system_prompt,
        context=context,
        owner=Owner(user_id=conversation.owner_id)
        if conversation.owner_id is not None
        else Owner(anonymous_key=conversation.anonymous_key),
        attached=attached,
    )


async def _abandon_claim(turn: Turn | None) -> None:
    if turn is not None:
        await _abandon(turn.message_id)
