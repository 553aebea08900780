"""The one module that overrides Django internals: what, why, and how an upgrade is caught.

1. **Django's own middleware, inline on the event loop.** Under ASGI every
   `MiddlewareMixin` middleware runs its `process_request` and `process_response` through
   `sync_to_async` (`MiddlewareMixin.__acall__`, undocumented): two thread hops per
   middleware per request, a large part of what opening a stream costs. Django has no
   public switch for it, and writing our own security, session, CSRF, messages and
   clickjacking middleware would copy security code. So the classes below subclass
   Django's and override `__acall__` to call Django's own hooks inline (they do no I/O);
   the session middleware crosses to a thread only to save a modified session, CSRF only
   when its secret lives in the session, messages keep Django's hops on pages (storing a
   message may write the session) and skip them on the JSON API. `MIDDLEWARE` keeps
   Django's names (`check --deploy` and the admin's checks look for them there);
   `asgi_handler()` builds Django's stock `ASGIHandler` with these swapped in.

2. **No connection check before each ASGI request.** Django closes stale database
   connections at every request's start and end. Under ASGI the start check is a thread
   hop queued on the chat's database thread (`chatsite.asgi`); the check at each
   request's end, on the same thread, already covers the next request. Done with
   Django's public signal API (`disconnect`/`connect`); WSGI keeps both checks.

`check_django()` runs at start-up and refuses to start when Django no longer looks like
what these replace. `tests/test_django_overrides.py` feeds Django's classes and these the
same requests and compares status, headers, cookies and session rows, and records a
fingerprint of the Django code replaced here, so an upgrade that changes it fails loudly.
"""

from __future__ import annotations

import inspect
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.contrib.sessions import middleware as sessions
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest, HttpResponse
from django.middleware import clickjacking, common, csrf, security
from django.utils.deprecation import MiddlewareMixin


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
    saving does (and reading the expiry for the cookie, which loads the session), both
    only when the session is modified or saved on every request."""

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        self.process_request(request)
        response = await self.get_response(request)
        if _session_may_save(request):
            return await sync_to_async(self.process_response)(request, response)
        return self.process_response(request, response)


def _session_may_save(request: HttpRequest) -> bool:
    # Django saves when `(modified or SESSION_SAVE_EVERY_REQUEST) and not empty`; the
    # emptiness check and the cookie deletion are in memory, so this is enough.
    session = getattr(request, "session", None)
    return session is not None and (session.modified or settings.SESSION_SAVE_EVERY_REQUEST)


class MessageMiddleware(messages.MessageMiddleware):
    """The JSON API never shows flash messages: it skips the two hops; pages (the admin)
    keep them, since storing messages may write the session."""

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info.startswith("/api/"):
            return await self.get_response(request)
        return await super().__acall__(request)


INLINE = {
    "django.middleware.security.SecurityMiddleware": SecurityMiddleware,
    "django.contrib.sessions.middleware.SessionMiddleware": SessionMiddleware,
    "django.middleware.common.CommonMiddleware": CommonMiddleware,
    "django.middleware.csrf.CsrfViewMiddleware": CsrfViewMiddleware,
    "django.contrib.auth.middleware.AuthenticationMiddleware": AuthenticationMiddleware,
    "django.contrib.messages.middleware.MessageMiddleware": MessageMiddleware,
    "django.middleware.clickjacking.XFrameOptionsMiddleware": XFrameOptionsMiddleware,
}


def replaced_django_code() -> dict[str, str]:
    """The Django source the classes above stand in for, by name (fingerprinted by the
    test): `MiddlewareMixin`'s dispatch and the hooks called inline."""
    code = {
        "MiddlewareMixin.__call__": inspect.getsource(MiddlewareMixin.__call__),
        "MiddlewareMixin.__acall__": inspect.getsource(MiddlewareMixin.__acall__),
    }
    for ours in INLINE.values():
        django_class = ours.__mro__[ours.__mro__.index(MiddlewareMixin) - 1]
        for hook in ("process_request", "process_view", "process_response"):
            if hook in vars(django_class):
                name = f"{django_class.__name__}.{hook}"
                code[name] = inspect.getsource(getattr(django_class, hook))
    return code


def check_django() -> None:
    """Refuse to start when Django's middleware no longer works the way this module
    assumes: async dispatch through `MiddlewareMixin.__acall__`, and none of the classes
    replaced here with an async path of its own."""
    dispatch = inspect.getsource(MiddlewareMixin.__call__)
    problems = []
    if "self.__acall__(request)" not in dispatch:
        problems.append("MiddlewareMixin.__call__ no longer dispatches to __acall__")
    for name, ours in INLINE.items():
        django_class = ours.__mro__[ours.__mro__.index(MiddlewareMixin) - 1]
        if f"{django_class.__module__}.{django_class.__name__}" != name:
            problems.append(f"{ours.__name__} does not stand in for {name}")
        if any(n in vars(django_class) for n in ("__call__", "__acall__")):
            problems.append(f"{name} now has its own async path")
        if not hasattr(django_class, "process_request") and not hasattr(
            django_class, "process_response"
        ):
            problems.append(f"{name} has no process_request/process_response")
    if problems:
        raise ImproperlyConfigured(
            "chatsite.seams no longer matches this Django: "
            + "; ".join(problems)
            + ". Re-check it against Django's middleware (tests/test_django_overrides.py)."
        )


def asgi_handler() -> ASGIHandler:
    """Django's stock ASGI handler, its middleware chain built with `INLINE` swapped in."""
    check_django()
    listed = settings.MIDDLEWARE
    # Once, at start-up, before any request: nothing else reads the setting yet.
    settings.MIDDLEWARE = [_path(INLINE[name]) if name in INLINE else name for name in listed]
    try:
        return ASGIHandler()
    finally:
        settings.MIDDLEWARE = listed


def _path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def check_connections_at_request_end_only() -> None:
    """Under ASGI, drop Django's connection check at request start (see the module
    docstring); WSGI keeps both. Idempotent."""
    from django.core.handlers.wsgi import WSGIHandler
    from django.core.signals import request_started
    from django.db import close_old_connections, reset_queries

    for receiver in (close_old_connections, reset_queries):
        request_started.disconnect(receiver)
        request_started.connect(receiver, sender=WSGIHandler)
