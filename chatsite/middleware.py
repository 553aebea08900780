"""Django's own middleware, run on the event loop instead of in a thread under ASGI.

Under ASGI, every `MiddlewareMixin` middleware calls its `process_request` and
`process_response` (and `process_view`) through `sync_to_async`: a thread hop each, per
request, a large part of the cost of opening a stream. These do no I/O in those methods,
so they run inline; the session middleware crosses to a thread only to save a modified
session. Under WSGI nothing changes.

The security, CSRF, clickjacking, session and messages middleware stay listed under
their own names in `MIDDLEWARE` (`check --deploy` and the admin look for them there);
`ASGI_INLINE` is how `chatsite.asgi` swaps in these versions when it builds its handler.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.contrib.sessions import middleware as sessions
from django.http import HttpRequest, HttpResponse
from django.middleware import clickjacking, common, csrf, security


class _Inline:
    process_request: Any
    process_response: Any
    get_response: Any

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        response = None
        if hasattr(self, "process_request"):
            response = self.process_request(request)
        response = response or await self.get_response(request)
        if hasattr(self, "process_response"):
            response = self.process_response(request, response)
        return response


class CommonMiddleware(_Inline, common.CommonMiddleware):
    pass


class AuthenticationMiddleware(_Inline, auth.AuthenticationMiddleware):
    pass


class SecurityMiddleware(_Inline, security.SecurityMiddleware):
    pass


class XFrameOptionsMiddleware(_Inline, clickjacking.XFrameOptionsMiddleware):
    pass


class CsrfViewMiddleware(_Inline, csrf.CsrfViewMiddleware):
    """Inline while the CSRF secret is a cookie; kept in a thread when it lives in the
    session (`CSRF_USE_SESSIONS`), since reading the session may query the database."""

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        if settings.CSRF_USE_SESSIONS:
            return await super(_Inline, self).__acall__(request)  # type: ignore[misc]
        return await _Inline.__acall__(self, request)

    async def process_view(  # type: ignore[override]
        self, request: HttpRequest, callback: Any, callback_args: Any, callback_kwargs: Any
    ) -> HttpResponse | None:
        check = super().process_view
        if settings.CSRF_USE_SESSIONS:
            return await sync_to_async(check)(request, callback, callback_args, callback_kwargs)
        return check(request, callback, callback_args, callback_kwargs)


class SessionMiddleware(sessions.SessionMiddleware):
    """Creating the lazy session store and deciding on the cookie need no I/O; only
    saving a modified session does, so only that crosses to a thread."""

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        self.process_request(request)
        response = await self.get_response(request)
        if _session_needs_save(request):
            return await sync_to_async(self.process_response)(request, response)
        return self.process_response(request, response)


def _session_needs_save(request: HttpRequest) -> bool:
    session = getattr(request, "session", None)
    return session is not None and (session.modified or settings.SESSION_SAVE_EVERY_REQUEST)


class MessageMiddleware(messages.MessageMiddleware):
    """The JSON API never shows flash messages: it skips the two hops; pages (the admin)
    keep them, since storing messages may write the session."""

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info.startswith("/api/"):
            return await self.get_response(request)
        return await super().__acall__(request)


ASGI_INLINE = {
    "django.middleware.security.SecurityMiddleware": f"{__name__}.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware": f"{__name__}.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware": f"{__name__}.CsrfViewMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware": f"{__name__}.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware": (
        f"{__name__}.XFrameOptionsMiddleware"
    ),
}
