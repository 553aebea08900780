"""Who is calling: an API token, a logged-in user, or (when allowed) an anonymous session."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.http import HttpRequest

from chat.services import ChatError, Owner
from chat.tokens import token_verify

ANONYMOUS_KEY = "chat_anonymous_key"
BEARER = "bearer"


async def request_owner(request: HttpRequest) -> Owner:
    """The owner the request acts for. A request that sends `Authorization` is judged by
    its token alone (a bad token is 401, never a fallback to the session, so a script
    never silently writes into someone's browser conversations). Anonymous visitors get a
    random key in their session on first use, so a cookie-keeping script can continue."""
    if "Authorization" in request.headers:
        return Owner(user_id=await _token_user_id(request.headers["Authorization"]))
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


class InvalidToken(ChatError):
    def __init__(self, message: str) -> None:
        super().__init__(
            401, "invalid_token", message, headers={"WWW-Authenticate": 'Bearer realm="chat"'}
        )


async def _token_user_id(header: str) -> int:
    scheme, _, raw = header.strip().partition(" ")
    if scheme.lower() != BEARER or not raw.strip():
        raise InvalidToken("Send 'Authorization: Bearer <token>'.")
    token = await token_verify(raw.strip())
    if token is None:
        raise InvalidToken("The API token is unknown or revoked.")
    return token.user_id
