"""When attachments' bytes go: with their conversation (deleted by its owner, after the
page's Undo window, since the page sends the DELETE only then), with retention
(`chat_purge`), and uploads never sent, a day on. The row stays, marked `removed_at`,
so the admin still lists what a message had; the bytes are gone from storage.

A file is removed only when no conversation still shown to its owner uses it: one person's
identical uploads are one file, which two conversations can share."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from asgiref.sync import sync_to_async
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from chat.files.storage import stored_delete
from chat.models import Attachment, Conversation, MessageAttachment

logger = logging.getLogger("chat")


def _still_shown() -> Exists:
    return Exists(
        MessageAttachment.objects.filter(
            attachment_id=OuterRef("pk"), message__conversation__deleted_at__isnull=True
        )
    )


async def files_release(*, conversation_id: uuid.UUID) -> int:
    """Remove the files of a conversation its owner deleted that no conversation of theirs
    still shows. Returns how many were removed. The storage calls (disk, or HTTP to S3)
    run on the thread pool, the queries where the request's others do."""
    used = Attachment.objects.filter(
        uses__message__conversation_id=conversation_id, removed_at__isnull=True
    )
    gone = [a async for a in used.exclude(_still_shown()).distinct().only("pk", "storage_key")]
    delete = sync_to_async(stored_delete, thread_sensitive=False)
    removed = 0
    for attachment in gone:
        try:
            await delete(attachment.storage_key)
        except OSError:
            logger.exception("could not remove attachment %s from storage", attachment.pk)
            continue
        removed += await Attachment.objects.filter(pk=attachment.pk).aupdate(
            removed_at=timezone.now()
        )
    return removed


def files_purge(*, deleted_before: datetime) -> int:
    """Retention: files of conversations deleted before the cutoff (`chat_purge`)."""
    deleted = Conversation.objects.filter(deleted_at__lt=deleted_before)
    used = Attachment.objects.filter(
        uses__message__conversation__in=deleted, removed_at__isnull=True
    )
    return _remove(used.exclude(_still_shown()).distinct())


def files_purge_written_before(*, before: datetime) -> int:
    """Retention: files sent only with messages written before the cutoff."""
    newer = MessageAttachment.objects.filter(
        attachment_id=OuterRef("pk"), message__created_at__gte=before
    )
    old = Attachment.objects.filter(uses__isnull=False, removed_at__isnull=True).exclude(
        Exists(newer)
    )
    return _remove(old.distinct())


def files_purge_unsent(*, uploaded_before: datetime) -> int:
    """Uploads never sent with a message, older than the cutoff (`chat_purge`)."""
    unsent = Attachment.objects.filter(
        created_at__lt=uploaded_before, removed_at__isnull=True
    ).exclude(Exists(MessageAttachment.objects.filter(attachment_id=OuterRef("pk"))))
    return _remove(unsent)


def _remove(attachments: QuerySet[Attachment]) -> int:
    removed = 0
    for attachment in attachments.only("pk", "storage_key"):
        try:
            stored_delete(attachment.storage_key)
        except OSError:
            # Left marked as stored: the next purge tries again.
            logger.exception("could not remove attachment %s from storage", attachment.pk)
            continue
        removed += Attachment.objects.filter(pk=attachment.pk).update(removed_at=timezone.now())
    return removed
