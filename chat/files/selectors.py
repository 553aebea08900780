"""Reads: a person's attachments, a message's, and the JSON the API gives for one."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import TypedDict

from django.db.models import QuerySet
from django.urls import reverse

from chat.access.owners import Owner
from chat.errors import not_found
from chat.models import Attachment, MessageAttachment


class FileData(TypedDict):
    """An attachment as the API and the page see it."""

    id: str
    name: str
    type: str  # its content type
    kind: str  # image, pdf or text
    size: int
    width: int | None
    height: int | None
    url: str


def owned(owner: Owner) -> QuerySet[Attachment]:
    """The owner's attachments whose bytes are still stored."""
    if owner.user_id is not None:
        mine = Attachment.objects.filter(owner_id=owner.user_id)
    else:
        mine = Attachment.objects.filter(owner__isnull=True, anonymous_key=owner.anonymous_key)
    return mine.filter(removed_at__isnull=True)


def file_url(attachment_id: uuid.UUID | str) -> str:
    return reverse("chat:file-detail", args=[attachment_id])


def file_data(attachment: Attachment) -> FileData:
    return {
        "id": str(attachment.pk),
        "name": attachment.name,
        "type": attachment.content_type,
        "kind": attachment.kind,
        "size": attachment.size,
        "width": attachment.width,
        "height": attachment.height,
        "url": file_url(attachment.pk),
    }


async def file_find(*, owner: Owner, file_id: uuid.UUID) -> Attachment:
    """The owner's attachment, or 404: someone else's is exactly like one that never was."""
    found = await owned(owner).filter(pk=file_id).afirst()
    if found is None:
        raise not_found("file")
    return found


def files_owned(*, owner: Owner, ids: Iterable[uuid.UUID]) -> list[Attachment]:
    """The owner's attachments `ids`, in that order; 404 if any is not theirs (or gone)."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return []
    found = {a.pk: a for a in owned(owner).filter(pk__in=wanted)}
    if len(found) != len(wanted):
        raise not_found("file")
    return [found[pk] for pk in wanted]


def files_of_starts(ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Attachment]:
    """The attachments `ids` whose bytes are still stored, by id: one query for a batch
    of turn starts, each then taking its own with `files_pick`."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return {}
    found = Attachment.objects.filter(pk__in=wanted, removed_at__isnull=True).order_by()
    return {attachment.pk: attachment for attachment in found}


def files_pick(
    found: Mapping[uuid.UUID, Attachment], *, owner: Owner, ids: Iterable[uuid.UUID]
) -> list[Attachment]:
    """The owner's attachments `ids` among `found` (`files_of_starts`), in that order; 404
    if any is not theirs or gone, as `files_owned` would."""
    picked = []
    for pk in dict.fromkeys(ids):
        attachment = found.get(pk)
        if attachment is None or not owner.owns_file(attachment):
            raise not_found("file")
        picked.append(attachment)
    return picked


def files_for_messages(message_ids: Iterable[int]) -> dict[int, list[Attachment]]:
    """Each message's attachments in the order attached, in one query."""
    rows = (
        MessageAttachment.objects.filter(message_id__in=list(message_ids))
        .select_related("attachment")
        .order_by("message_id", "position")
    )
    attached: dict[int, list[Attachment]] = {}
    for row in rows:
        attached.setdefault(row.message_id, []).append(row.attachment)
    return attached


async def afiles_for_messages(message_ids: Iterable[int]) -> dict[int, list[FileData]]:
    """`files_for_messages` as API data, for the conversation detail."""
    rows = (
        MessageAttachment.objects.filter(message_id__in=list(message_ids))
        .select_related("attachment")
        .order_by("message_id", "position")
    )
    attached: dict[int, list[FileData]] = {}
    async for row in rows:
        attached.setdefault(row.message_id, []).append(file_data(row.attachment))
    return attached
