"""Conversation-level services: what happens to a person's conversations as a whole."""

from __future__ import annotations

from django.utils import timezone

from chat.models import Conversation


def conversations_adopt(*, anonymous_key: str, user_id: int) -> int:
    """Give the conversations an anonymous visitor started to the account they signed in
    to, so work begun before signing in is not lost. Returns how many moved."""
    if not anonymous_key:
        return 0
    return Conversation.objects.filter(owner__isnull=True, anonymous_key=anonymous_key).update(
        owner_id=user_id, anonymous_key="", updated_at=timezone.now()
    )
