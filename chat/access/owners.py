"""Who a conversation belongs to, and the rows that selects."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from chat.models import Attachment, Conversation, Message, MessageAttachment
from chat.spend.ledger import ledger_adopt


@dataclass(frozen=True, slots=True)
class Owner:
    """Who a conversation belongs to: a user, or an anonymous visitor's random key."""

    user_id: int | None = None
    anonymous_key: str = ""

    def __post_init__(self) -> None:
        if (self.user_id is None) == (not self.anonymous_key):
            raise ValueError("An owner is either a user or an anonymous key, never both.")

    def conversations(self) -> QuerySet[Conversation]:
        """The owner's conversations; one they deleted is gone for them (not for reports)."""
        if self.user_id is not None:
            mine = Conversation.objects.filter(owner_id=self.user_id)
        else:
            mine = Conversation.objects.filter(owner__isnull=True, anonymous_key=self.anonymous_key)
        return mine.filter(deleted_at__isnull=True)

    def owns(self, conversation: Conversation) -> bool:
        """What `conversations()` selects, for one row already loaded."""
        if conversation.deleted_at is not None:
            return False
        if self.user_id is not None:
            return conversation.owner_id == self.user_id
        return conversation.owner_id is None and conversation.anonymous_key == self.anonymous_key

    def owns_file(self, attachment: Attachment) -> bool:
        """Whether the attachment is this owner's, as `chat.files.selectors.owned` selects
        them (its bytes still stored is checked there)."""
        if self.user_id is not None:
            return attachment.owner_id == self.user_id
        return attachment.owner_id is None and attachment.anonymous_key == self.anonymous_key

    def messages(self) -> QuerySet[Message]:
        if self.user_id is not None:
            mine = Message.objects.filter(conversation__owner_id=self.user_id)
        else:
            mine = Message.objects.filter(
                conversation__owner__isnull=True, conversation__anonymous_key=self.anonymous_key
            )
        return mine.filter(conversation__deleted_at__isnull=True)


def conversations_adopt(*, anonymous_key: str, user_id: int) -> int:
    """Give the conversations an anonymous visitor started to the account they signed in
    to, so work begun before signing in is not lost, and their usage with them (the
    ledger moves in the same transaction). Returns how many moved."""
    if not anonymous_key:
        return 0
    with transaction.atomic():
        ids = list(
            Conversation.objects.filter(owner__isnull=True, anonymous_key=anonymous_key)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        if not ids:
            return 0
        # A turn of theirs still running finishes after this commits (its row is locked
        # here), and is then counted under the account; one finished before is moved.
        list(
            Message.objects.select_for_update(of=("self",))
            .filter(conversation_id__in=ids, status__in=Message.UNFINISHED_STATUSES)
            .values_list("pk", flat=True)
        )
        moved = Conversation.objects.filter(pk__in=ids).update(
            owner_id=user_id, anonymous_key="", updated_at=timezone.now()
        )
        ledger_adopt(anonymous_key=anonymous_key, user_id=user_id, conversation_ids=ids)
        attachments_adopt(anonymous_key=anonymous_key, user_id=user_id)
    return moved


def attachments_adopt(*, anonymous_key: str, user_id: int) -> None:
    """The visitor's uploads become the account's, so the files of adopted conversations
    still open for their owner. A file the account already has (the same bytes) is not
    moved: the messages use the account's copy instead, and the visitor's, used by
    nothing now, goes with the uploads never sent (`chat_purge`)."""
    visitor = Attachment.objects.filter(owner__isnull=True, anonymous_key=anonymous_key)
    live = visitor.filter(removed_at__isnull=True)
    kept = dict(
        Attachment.objects.filter(
            owner_id=user_id, removed_at__isnull=True, sha256__in=live.values("sha256")
        ).values_list("sha256", "pk")
    )
    for duplicate in live.filter(sha256__in=list(kept)).only("pk", "sha256"):
        MessageAttachment.objects.filter(attachment_id=duplicate.pk).update(
            attachment_id=kept[duplicate.sha256]
        )
    visitor.exclude(removed_at__isnull=True, sha256__in=list(kept)).update(
        owner_id=user_id, anonymous_key=""
    )
