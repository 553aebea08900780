"""Who is calling: a logged-in user, or (when allowed) an anonymous session."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.http import HttpRequest

from chat.services import ChatError, Owner

ANONYMOUS_KEY = "chat_anonymous_key"


async def request_owner(request: HttpRequest) -> Owner:
    """The owner the request acts for. Anonymous visitors get a random key in their
    session on first use, so a cookie-keeping script can continue its conversations."""
    user = await request.auser()
    if user.is_authenticated:
        return Owner(user_id=user.pk)
    if not settings.CHAT_ALLOW_ANONYMOUS:
        raise ChatError(401, "authentication_required", "Log in to use the chat API.")
    key = await request.session.aget(ANONYMOUS_KEY)
    if not key:
        key = secrets.token_urlsafe(24)
        await request.session.aset(ANONYMOUS_KEY, key)
    return Owner(anonymous_key=key)
