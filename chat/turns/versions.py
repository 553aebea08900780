"""New versions of the last turn: regenerate its reply, or edit its user message.

A version is a pair of rows, the user message and its reply. Regenerating copies the user
message into the new pair, so every version of a turn is a whole pair and version k of the
message goes with version k of the reply. The earlier pair is marked superseded: it stays
(billed, counted in every report, shown in the admin) but is never sent as context again.
The new reply is deferred (`pending`): it reaches the model when its stream is opened, like
any deferred turn, through `turn_claim`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from chat import llm
from chat.access.owners import Owner
from chat.errors import ChatError, not_found
from chat.files.context import files_check_model
from chat.files.selectors import files_for_messages, files_owned
from chat.models import Conversation, Message, MessageAttachment
from chat.runtime import committed
from chat.spend.ledger import message_finalize
from chat.turns.selectors import UNFINISHED
from chat.turns.start import choose_api, choose_model
from chat.turns.workers import worker_id

Role = Message.Role


@dataclass(frozen=True, slots=True)
class NewVersion:
    """A version of the last turn: its user message and its reply (pending when new)."""

    conversation_id: uuid.UUID
    user_message_id: int
    message_id: int


async def turn_regenerate(*, owner: Owner, message_id: int, model: str | None = None) -> NewVersion:
    """A new reply to the same context as the last reply `message_id`."""
    return await _new_version(owner=owner, message_id=message_id, role=Role.ASSISTANT, model=model)


async def turn_edit(
    *,
    owner: Owner,
    message_id: int,
    message: str,
    attachments: Sequence[uuid.UUID] | None = None,
) -> NewVersion:
    """The last user message `message_id` with new text, and a new reply to it; with
    `attachments`, other files (else the ones it had)."""
    return await _new_version(
        owner=owner, message_id=message_id, role=Role.USER, text=message, files=attachments
    )


async def _new_version(
    *,
    owner: Owner,
    message_id: int,
    role: str,
    text: str | None = None,
    model: str | None = None,
    files: Sequence[uuid.UUID] | None = None,
) -> NewVersion:
    work = sync_to_async(_version_write)(
        owner=owner, message_id=message_id, role=role, text=text, model=model, files=files
    )
    return await committed(work, undo=_abandon)


async def _abandon(version: NewVersion) -> None:
    """The client left while the version was written: its reply will never be opened."""
    await sync_to_async(message_finalize)(
        version.message_id,
        unfinished=[Message.Status.PENDING],
        status=Message.Status.CANCELLED,
        finished_at=timezone.now(),
    )


def _version_write(
    *,
    owner: Owner,
    message_id: int,
    role: str,
    text: str | None,
    model: str | None,
    files: Sequence[uuid.UUID] | None,
) -> NewVersion:
    with transaction.atomic():
        conversation = _locked(owner=owner, message_id=message_id, role=role)
        user, reply = _last_turn(conversation)
        if message_id not in (user.pk, reply.pk):
            what = "reply can be regenerated" if role == Role.ASSISTANT else "message can be edited"
            raise ChatError("not_last_turn", f"Only the conversation's last {what}.")
        _check_finished(reply)
        chosen = choose_model(model, conversation.model)
        attachments = (
            files_for_messages([user.pk]).get(user.pk, [])
            if files is None
            else files_owned(owner=owner, ids=files)
        )
        files_check_model(attachments, model=chosen)
        now = timezone.now()
        Message.objects.filter(pk__in=[user.pk, reply.pk]).update(superseded_at=now)
        new_user, new_reply = Message.objects.bulk_create(
            [
                Message(
                    conversation=conversation,
                    role=Role.USER,
                    content=user.content if text is None else text,
                    model=chosen,
                    version_of_id=user.version_of_id or user.pk,
                ),
                Message(
                    conversation=conversation,
                    role=Role.ASSISTANT,
                    status=Message.Status.PENDING,
                    worker=worker_id(),  # who took it (see `chat.turns.recover`)
                    provider=llm.backend().name,
                    api=choose_api(None),
                    model=chosen,
                    version_of_id=reply.version_of_id or reply.pk,
                ),
            ]
        )
        MessageAttachment.objects.bulk_create(
            MessageAttachment(message=new_user, attachment=attachment, position=position)
            for position, attachment in enumerate(attachments)
        )
        Conversation.objects.filter(pk=conversation.pk).update(updated_at=now, model=chosen)
    return NewVersion(conversation.pk, new_user.pk, new_reply.pk)


async def turn_select(*, owner: Owner, message_id: int) -> NewVersion:
    """Make the version of the last turn that `message_id` (its user message or its reply)
    belongs to the current one: what later turns are sent as context. Earlier turns'
    versions can be looked at but not chosen, since later turns were answered from the
    version that was current then."""
    return await sync_to_async(_select_write)(owner=owner, message_id=message_id)


def _select_write(*, owner: Owner, message_id: int) -> NewVersion:
    with transaction.atomic():
        conversation = _locked(owner=owner, message_id=message_id)
        user, reply = _last_turn(conversation)
        pairs = zip(_versions(user), _versions(reply), strict=False)
        chosen = next((pair for pair in pairs if message_id in (pair[0].pk, pair[1].pk)), None)
        if chosen is None:
            raise ChatError("not_last_turn", "Only a version of the last turn can be chosen.")
        _check_finished(reply)
        if chosen != (user, reply):
            Message.objects.filter(pk__in=[user.pk, reply.pk]).update(superseded_at=timezone.now())
            Message.objects.filter(pk__in=[m.pk for m in chosen]).update(superseded_at=None)
    return NewVersion(conversation.pk, chosen[0].pk, chosen[1].pk)


def _versions(message: Message) -> list[Message]:
    """Every version of `message`'s place in the turn, oldest first."""
    root = message.version_of_id or message.pk
    return list(Message.objects.filter(Q(pk=root) | Q(version_of_id=root)).order_by("pk"))


def _locked(*, owner: Owner, message_id: int, role: str | None = None) -> Conversation:
    """The conversation of the owner's message `message_id` (of `role`, or user or reply),
    row-locked like a new turn's (PostgreSQL; SQLite's IMMEDIATE transaction already
    serialises writers): a turn started meanwhile, or a second regenerate of the same
    reply, waits here and then sees this one's rows."""
    mine = owner.messages().filter(pk=message_id)
    mine = mine.filter(role=role) if role else mine.exclude(role=Role.SYSTEM)
    conversation = (
        Conversation.objects.select_for_update()
        .filter(pk__in=mine.values("conversation_id"), deleted_at__isnull=True)
        .first()
    )
    if conversation is None:
        raise not_found("message")
    return conversation


def _check_finished(reply: Message) -> None:
    if reply.status in UNFINISHED:
        raise ChatError("turn_in_progress", "The reply is still being written; stop it first.")


def _last_turn(conversation: Conversation) -> tuple[Message, Message]:
    """The current user message and reply that end the conversation."""
    rows = list(
        conversation.messages.filter(superseded_at__isnull=True)
        .exclude(role=Role.SYSTEM)
        .order_by("-pk")[:2]
    )
    if len(rows) < 2 or (rows[1].role, rows[0].role) != (Role.USER, Role.ASSISTANT):
        raise ChatError("not_last_turn", "This conversation has no complete last turn.")
    return rows[1], rows[0]
