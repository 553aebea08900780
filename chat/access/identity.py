"""Who is calling: an API token, a logged-in user, or (when allowed) an anonymous visitor.

An anonymous visitor's conversations belong to a random key kept in a signed cookie of
our own (`chat_anonymous`), not in a session: a session costs a database write for every
new visitor and a read on every later request, which under a burst of new visitors was
most of the cost of opening a stream. The cookie carries no secret but the key itself,
is signed with SECRET_KEY (a forged or edited one is ignored), expires like a session
(SESSION_COOKIE_AGE after it was last renewed) and is dropped at logout, as a session is.
"""

from __future__ import annotations

import secrets
from typing import Literal, cast

from django.conf import settings
from django.contrib.auth.signals import user_logged_out
from django.contrib.sessions.backends.base import SessionBase
from django.core import signing
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponseBase

from chat.access.owners import Owner
from chat.access.tokens import token_verify
from chat.errors import ChatError

ANONYMOUS_COOKIE = "chat_anonymous"
# Where anonymous keys lived before the cookie: adopted once from an existing session.
SESSION_ANONYMOUS_KEY = "chat_anonymous_key"
# A value on the wire (it signs every visitor's cookie), not a module path: kept as first
# issued, or every anonymous visitor would lose their conversations.
_SALT = "chat.identity.anonymous"
# A cookie older than this is re-sent with a fresh date, so an active visitor keeps it.
RENEW_AFTER_SECONDS = 24 * 3600
BEARER = "bearer"
_ISSUE = "_chat_anonymous_issue"
_FORGET = "_chat_anonymous_forget"
SameSite = Literal["Lax", "Strict", "None", False]


async def request_owner(request: HttpRequest) -> Owner:
    """The owner the request acts for. A request that sends `Authorization` is judged by
    its token alone (a bad token is 401, never a fallback to the session, so a script
    never silently writes into someone's browser conversations). An anonymous visitor
    gets a random key on first use, so a cookie-keeping script can continue."""
    if "Authorization" in request.headers:
        return Owner(user_id=await _token_user_id(request.headers["Authorization"]))
    user = await request.auser()
    if user.is_authenticated:
        return Owner(user_id=user.pk)
    if not settings.CHAT_ALLOW_ANONYMOUS:
        raise ChatError("authentication_required", "Log in to use the chat API.")
    return Owner(anonymous_key=await _anonymous_key(request))


async def _anonymous_key(request: HttpRequest) -> str:
    signer = _signer()
    age = settings.SESSION_COOKIE_AGE
    raw = request.COOKIES.get(ANONYMOUS_COOKIE)
    if raw:
        try:
            key = signer.unsign(raw, max_age=age)
        except signing.BadSignature:  # forged, edited, signed with an old SECRET_KEY, expired
            pass
        else:
            try:
                signer.unsign(raw, max_age=min(RENEW_AFTER_SECONDS, age // 2))
            except signing.SignatureExpired:
                setattr(request, _ISSUE, key)
            return key
    key = await _session_key(request) or secrets.token_urlsafe(24)
    setattr(request, _ISSUE, key)
    return key


async def _session_key(request: HttpRequest) -> str | None:
    """The key an anonymous visitor was given in their session before the cookie."""
    if settings.SESSION_COOKIE_NAME not in request.COOKIES:
        return None  # no session to read: no database query
    session: SessionBase | None = getattr(request, "session", None)
    return await session.aget(SESSION_ANONYMOUS_KEY) if session is not None else None


def anonymous_key_from_cookie(request: HttpRequest) -> str | None:
    """The anonymous key this browser's valid cookie carries, if any (no database)."""
    raw = request.COOKIES.get(ANONYMOUS_COOKIE)
    if not raw:
        return None
    try:
        return _signer().unsign(raw, max_age=settings.SESSION_COOKIE_AGE)
    except signing.BadSignature:
        return None


def forget_anonymous(request: HttpRequest) -> None:
    """Delete the anonymous cookie on this request's response (`settle_cookie`)."""
    setattr(request, _FORGET, True)


def _signer() -> signing.TimestampSigner:
    # Always timestamped (a custom SIGNING_BACKEND need not be): expiry is read from it.
    return signing.TimestampSigner(salt=ANONYMOUS_COOKIE + _SALT)


def anonymous_cookie(key: str) -> str:
    """The signed cookie value that makes a client the anonymous owner `key`."""
    return _signer().sign(key)


def settle_cookie(request: HttpRequest, response: HttpResponseBase) -> None:
    """Send the anonymous cookie the request was given, or delete it after a logout."""
    # One of the values Django allows for it; chatsite/settings.py assigns it unannotated,
    # so mypy reads a plain str there.
    samesite = cast("SameSite | None", settings.SESSION_COOKIE_SAMESITE)
    if getattr(request, _FORGET, False):
        response.delete_cookie(
            ANONYMOUS_COOKIE,
            path=settings.SESSION_COOKIE_PATH,
            domain=settings.SESSION_COOKIE_DOMAIN,
            samesite=samesite,
        )
        return
    key: str | None = getattr(request, _ISSUE, None)
    if key is None:
        return
    response.set_cookie(
        ANONYMOUS_COOKIE,
        anonymous_cookie(key),
        # As Django's session cookie: gone with the browser when asked to be.
        max_age=None if settings.SESSION_EXPIRE_AT_BROWSER_CLOSE else settings.SESSION_COOKIE_AGE,
        path=settings.SESSION_COOKIE_PATH,
        domain=settings.SESSION_COOKIE_DOMAIN,
        secure=settings.SESSION_COOKIE_SECURE,
        httponly=True,
        samesite=samesite,
    )


@receiver(user_logged_out, dispatch_uid="chat.access.identity.forget_anonymous")
def _forget_anonymous(*, request: HttpRequest | None = None, **kwargs: object) -> None:
    # A logout ends the browser's identity, anonymous one included, as it ends the session.
    if request is not None:
        forget_anonymous(request)


class InvalidToken(ChatError):
    def __init__(self, message: str) -> None:
        super().__init__(
            "invalid_token", message, headers={"WWW-Authenticate": 'Bearer realm="chat"'}
        )


async def _token_user_id(header: str) -> int:
    scheme, _, raw = header.strip().partition(" ")
    if scheme.lower() != BEARER or not raw.strip():
        raise InvalidToken("Send 'Authorization: Bearer <token>'.")
    token = await token_verify(raw.strip())
    if token is None:
        raise InvalidToken("The API token is unknown or revoked.")
    return token.user_id
