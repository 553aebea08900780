"""Personal API tokens (`Authorization: Bearer …`): created, verified, revoked.

Only a SHA-256 hash is stored; the raw token exists once, in the return value of
`token_create`, for the admin to show. A fast hash is right here (unlike passwords): the
token is 256 random bits, so there is nothing to brute-force, and verifying is one indexed
lookup.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import TYPE_CHECKING

from django.utils import timezone

from chat.models import ApiToken

if TYPE_CHECKING:
    from django.contrib.auth.models import User

TOKEN_PREFIX = "chat_"
PREFIX_CHARS = 10
# `last_used_at` is for people ("is this token still used?"), not an audit log: writing
# it at most once a minute keeps a busy script from costing a write per request.
TOUCH_EVERY = timedelta(minutes=1)


def token_generate() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_fill(token: ApiToken) -> str:
    """Give an unsaved `token` a fresh secret; returns the raw token (shown once)."""
    raw = token_generate()
    token.prefix = raw[:PREFIX_CHARS]
    token.token_hash = ApiToken.hash(raw)
    return raw


def token_create(*, user: User, name: str) -> tuple[ApiToken, str]:
    """A new token for `user`; the raw value is returned here and never again."""
    token = ApiToken(user=user, name=name)
    raw = token_fill(token)
    token.save()
    return token, raw


async def token_verify(raw: str) -> ApiToken | None:
    """The active token (with its active user) for `raw`, or None."""
    if not raw:
        return None
    token = (
        await ApiToken.objects.select_related("user")
        .filter(token_hash=ApiToken.hash(raw), revoked_at__isnull=True, user__is_active=True)
        .afirst()
    )
    if token is not None:
        await token_touch(token)
    return token


async def token_touch(token: ApiToken) -> None:
    now = timezone.now()
    if token.last_used_at is not None and now - token.last_used_at < TOUCH_EVERY:
        return
    token.last_used_at = now
    await ApiToken.objects.filter(pk=token.pk).aupdate(last_used_at=now)


def token_revoke(token: ApiToken) -> None:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
            revoked_at=token.revoked_at
        )
