"""Every use of a private name of Django or asgiref: what, why, and how an upgrade is
caught.

1. **Django's own middleware, inline on the event loop.** Under ASGI every
   `MiddlewareMixin` middleware runs its `process_request` and `process_response` through
   `sync_to_async` (`MiddlewareMixin.__acall__`, undocumented): two thread hops per
   middleware per request, a large part of what opening a stream costs. Django has no
   public switch for it (Django ticket #37177; its fix, "Reduced per-middleware context
   switching under ASGI", is an open pull request), and writing our own security,
   session, CSRF, messages and clickjacking middleware would copy security code. So the
   classes below subclass Django's and override `__acall__` to call Django's own hooks
   inline (they do no I/O); the session middleware crosses to a thread only to save a
   modified session, CSRF only when its secret lives in the session, messages keep
   Django's hops on pages (storing a message may write the session) and skip them on the
   JSON API. `MIDDLEWARE` keeps Django's names (`check --deploy` and the admin's checks
   look for them there); `asgi_handler()` builds Django's stock `ASGIHandler` with these
   swapped in.

2. **No connection check before each ASGI request.** Django closes stale database
   connections at every request's start and end. Under ASGI the start check is a thread
   hop queued on the chat's database thread (3.); the check at each request's end, on
   the same thread, already covers the next request. Done with Django's public signal
   API (`disconnect`/`connect`), so nothing to fingerprint; WSGI keeps both checks.
   No ticket: Django's checks are right for a thread per request, which chat requests
   do not have (Django ticket #33497 is about persistent connections under ASGI).

3. **One database thread for chat requests** (asgiref's `SyncToAsync.thread_sensitive_context`,
   a private context variable). Django gives every ASGI request a `ThreadSensitiveContext`
   of its own (Django ticket #32889, deliberately), so each request's ORM calls get a
   thread and a connection. `on_chat_thread()` sets one process-wide context first, which
   Django's own then keeps: chat requests share one thread, so an open stream costs a
   coroutine, not a thread. It is never entered, so it never exits: tasks a request
   leaves running (a turn finished after its client left) keep the thread. asgiref's
   public way, `ThreadSensitiveContext(executor=...)`, refuses thread-sensitive calls from
   tasks that outlive its block, which such a turn is. No ticket found asking asgiref
   for a context that outlives its requests.

4. **A streamed body closed all the way down** (`ClosingStreamingResponse` overrides
   `StreamingHttpResponse.__aiter__`). Django's ASGI handler closes what
   `aiter(response)` returns when the client leaves mid-send, but
   `StreamingHttpResponse.streaming_content` wraps the body in a generator of its own
   that never closes the body, which would leave the turn open until garbage
   collection. Django ticket #37066 (its open pull request wraps Django's other bare
   `async for` sites in `aclosing`) is the nearest; no ticket found for this wrapper.

5. **A request leaves no reference cycle behind** (`CycleFreeASGIHandler` overrides
   `ASGIHandler.listen_for_disconnect`). Under uvicorn every request's disconnect
   listener receives `http.disconnect` once the response is sent, and Django's raises
   `RequestAborted`, which `handle()` collects from the task and ignores. The exception's
   traceback holds `handle()`'s frame, whose locals hold the task that holds the
   exception: a cycle per request (about a hundred objects: the request, its body, the
   tasks), freed only by the cyclic garbage collector. Those collections ran on the
   event loop and on page threads alike, and the full ones (every object of the worker)
   paused every stream at once for a long while, the largest part of the chats' time to
   first token tail beside staff reloading reports. Returning instead of raising is the
   same to Django 5.2's `handle()` (it waits for the first task done and ignores the
   listener's outcome either way; `check_upstream()` looks for that); Django's pull
   request #19366 rewrites `handle()` around a TaskGroup, where it would not be, hence
   the fingerprint. Baserow's pull request #5733 made the same change for the same
   cycle.
   Django's authentication middleware makes two more per request: `request.user` is a
   lazy object whose function closes over the request, `request.auser` a partial of it.
   Ours (`AuthenticationMiddleware`, 1.) refer to the request weakly; both are only read
   while their request is served. No ticket found.

6. **One Redis pool per process for Django's cache** (`SharedPoolClient` overrides
   `RedisCacheClient._get_connection_pool`; `chat.ops.cache.ResilientRedisCache` sets
   `RedisCache._class` to it). Django makes a cache object per request context (`caches`
   is context-local) and `RedisCache` a connection pool per cache object, so each request
   opened a Redis connection of its own, closed only when the garbage collector reached
   its pool: a worker under load held a hundred. Django's `OPTIONS` can choose a pool
   class and its cap, but each cache object still makes its own pool. No ticket found.
   `tests/test_redis_pools.py` counts the connections at the server.

7. **A page's template context freed when the page is rendered** (`ReleasingTemplates`,
   a `DjangoTemplates` backend whose templates pop every dictionary off the context they
   rendered; `Context.pop()` and `ContextPopException` are documented, the backend's
   `Template` wrapper and `reraise` are not). Every `RequestContext` refers to itself
   through the `ContextDict`s it pushes (`make_context` pushes the view's context and never
   pops it), so a page's whole context (a changelist's rows, the dashboard's tables) was
   garbage that only the cyclic collector freed, on whichever thread next crossed its
   threshold: the event loop's collections then paused every stream to free a staff
   page. Popped, they go by reference counting when the response is sent. No ticket found.

Static files need no seam: ServeStatic's middleware (the async fork of WhiteNoise) is
async-native, so a static file is served without a thread hop and with an asynchronous
body (WhiteNoise's sync middleware and file iterator needed one here, and Django warned
"StreamingHttpResponse must consume synchronous iterators" on every file).

`check_upstream()` runs at start-up and refuses to start when Django or asgiref no longer
look like what these assume. `tests/test_seams.py` feeds Django's middleware and
ours the same requests and compares status, headers, cookies and session rows, and records
a fingerprint of every piece of upstream code replaced or relied on here
(`replaced_upstream_code()`), so an upgrade that changes one fails loudly.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

from asgiref.sync import SyncToAsync, ThreadSensitiveContext, sync_to_async
from asgiref.typing import ASGI3Application
from django.conf import settings
from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.contrib.sessions import middleware as sessions
from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest, HttpResponseBase, StreamingHttpResponse
from django.middleware import clickjacking, common, csrf, security
from django.template import Context, ContextPopException, TemplateDoesNotExist
from django.template.backends import django as django_backend
from django.template.backends.django import DjangoTemplates
from django.template.context import ContextDict, make_context
from django.utils.deprecation import MiddlewareMixin
from django.utils.functional import SimpleLazyObject

from chat.errors import API_PREFIX

# Requests served on the chat's database thread (`on_chat_thread`, chatsite/asgi.py): the
# JSON API, and the probes and scrapes.
CHAT_PATHS = (API_PREFIX, "/healthz", "/readyz", "/metrics")

# Our classes are built into Django's async chain only: what they call next is awaitable.
AsyncGetResponse = Callable[[HttpRequest], Awaitable[HttpResponseBase]]

# --- 1. Django's own middleware, inline ---------------------------------------------------


class _Inline(MiddlewareMixin):
    """Calls the hooks of the Django class it is mixed into inline (each has its own)."""

    process_request: Any
    process_response: Any
    get_response: AsyncGetResponse

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        early: HttpResponseBase | None = None
        if hasattr(self, "process_request"):
            early = self.process_request(request)
        response = early or await self.get_response(request)
        if hasattr(self, "process_response"):
            response = self.process_response(request, response)
        return response


class CommonMiddleware(_Inline, common.CommonMiddleware):
    pass


class AuthenticationMiddleware(_Inline, auth.AuthenticationMiddleware):
    """Django's, its `request.user` and `request.auser` referring to the request weakly:
    Django's close over the request they are set on, a reference cycle per request (5.)."""

    def process_request(self, request: HttpRequest) -> None:
        if not hasattr(request, "session"):
            super().process_request(request)  # raises Django's error naming what is missing
        held = weakref.ref(request)
        request.user = SimpleLazyObject(lambda: auth.get_user(_alive(held)))  # type: ignore[assignment]
        request.auser = functools.partial(_auser, held)


def _alive(held: weakref.ref[HttpRequest]) -> HttpRequest:
    request = held()
    if request is None:
        raise RuntimeError("request.user read after its request was freed")
    return request


async def _auser(held: weakref.ref[HttpRequest]) -> Any:
    return await auth.auser(_alive(held))


class SecurityMiddleware(_Inline, security.SecurityMiddleware):
    pass


class XFrameOptionsMiddleware(_Inline, clickjacking.XFrameOptionsMiddleware):
    pass


class CsrfViewMiddleware(_Inline, csrf.CsrfViewMiddleware):
    """Inline while the CSRF secret is a cookie; kept in a thread when it lives in the
    session (`CSRF_USE_SESSIONS`), since reading the session may query the database."""

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        if settings.CSRF_USE_SESSIONS:
            return await super(_Inline, self).__acall__(request)
        return await _Inline.__acall__(self, request)

    # A coroutine where Django's is a plain method, which is what mypy refuses: Django's
    # async chain adapts each process_view to its mode (`adapt_method_mode`) and awaits it.
    async def process_view(  # type: ignore[override]
        self, request: HttpRequest, callback: Any, callback_args: Any, callback_kwargs: Any
    ) -> HttpResponseBase | None:
        check = super().process_view
        if settings.CSRF_USE_SESSIONS:
            return await sync_to_async(check)(request, callback, callback_args, callback_kwargs)
        return check(request, callback, callback_args, callback_kwargs)


class SessionMiddleware(sessions.SessionMiddleware):
    """Creating the lazy session store and deciding on the cookie need no I/O; only
    saving does (and reading the expiry for the cookie, which loads the session), both
    only when the session is modified or saved on every request."""

    get_response: AsyncGetResponse

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        self.process_request(request)
        response = await self.get_response(request)
        # django-stubs types `process_response` for HttpResponse; Django's takes any response.
        if _session_may_save(request):
            return await sync_to_async(self.process_response)(request, response)  # type: ignore[arg-type]
        return self.process_response(request, response)  # type: ignore[arg-type]


def _session_may_save(request: HttpRequest) -> bool:
    # Django saves when `(modified or SESSION_SAVE_EVERY_REQUEST) and not empty`; the
    # emptiness check and the cookie deletion are in memory, so this is enough.
    session = getattr(request, "session", None)
    return session is not None and (session.modified or settings.SESSION_SAVE_EVERY_REQUEST)


class MessageMiddleware(messages.MessageMiddleware):
    """The JSON API, the probes and the metrics scrape never show flash messages: they
    skip the two hops; pages (the admin) keep them, since storing messages may write the
    session."""

    get_response: AsyncGetResponse

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        if request.path_info.startswith(CHAT_PATHS):
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


def _django_class(ours: type) -> type:
    """The Django middleware class one of ours stands in for."""
    return ours.__mro__[ours.__mro__.index(MiddlewareMixin) - 1]


def asgi_handler() -> ASGI3Application:
    """Django's ASGI handler (5.), its middleware chain built with `INLINE` swapped in."""
    check_upstream()
    listed = settings.MIDDLEWARE
    # Once, at start-up, before any request: nothing else reads the setting yet.
    settings.MIDDLEWARE = [_path(INLINE[name]) if name in INLINE else name for name in listed]
    try:
        # django-stubs types ASGI messages as plain mappings; they are the same dicts.
        return cast(ASGI3Application, CycleFreeASGIHandler())
    finally:
        settings.MIDDLEWARE = listed


def _path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# --- 2. No connection check before each ASGI request --------------------------------------


def check_connections_at_request_end_only() -> None:
    """Under ASGI, drop Django's connection check at request start (see the module
    docstring); WSGI keeps both. Idempotent."""
    from django.core.handlers.wsgi import WSGIHandler
    from django.core.signals import request_started
    from django.db import close_old_connections, reset_queries

    for receiver in (close_old_connections, reset_queries):
        request_started.disconnect(receiver)
        request_started.connect(receiver, sender=WSGIHandler)


# --- 3. One database thread for chat requests ---------------------------------------------

# One `ThreadSensitiveContext` for all chat requests of this process: their ORM calls
# share its one thread (and, on SQLite, its one kept connection). Turn starts and
# finishes are written by `chat.turns.batching` on asgiref's process-wide thread.
CHAT_THREAD = ThreadSensitiveContext()


@contextmanager
def on_chat_thread() -> Iterator[None]:
    """Within this block Django's own per-request `ThreadSensitiveContext` finds one set
    already and keeps it: the block's thread-sensitive calls run on `CHAT_THREAD`."""
    token = SyncToAsync.thread_sensitive_context.set(CHAT_THREAD)
    try:
        yield
    finally:
        SyncToAsync.thread_sensitive_context.reset(token)


# --- 4. A streamed body closed all the way down -------------------------------------------


class ClosingStreamingResponse(StreamingHttpResponse):
    """Closes its body generator when Django stops iterating it, so that a turn whose
    client left is finished now rather than at garbage collection."""

    def __init__(self, body: AsyncIterator[bytes], **kwargs: Any) -> None:
        super().__init__(body, **kwargs)
        # Every body given here is an async generator, though typed as its iterator.
        self.body_iterator = cast(AsyncGenerator[bytes, None], body)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in cast(AsyncIterator[bytes], self.streaming_content):
                yield part
        finally:
            await self.body_iterator.aclose()


# --- 5. A request leaves no reference cycle behind ----------------------------------------


class CycleFreeASGIHandler(ASGIHandler):
    """Django's handler whose disconnect listener returns on `http.disconnect` instead of
    raising `RequestAborted` (see the module docstring)."""

    async def listen_for_disconnect(self, receive: Callable[[], Awaitable[dict[str, Any]]]) -> None:  # type: ignore[override]
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        # As Django's: this should never happen.
        raise AssertionError(f"Invalid ASGI message after request body: {message['type']}")


# --- 6. One Redis pool per process for Django's cache ------------------------------------


@functools.cache
def _shared_pool(pool_class: Any, server: str, options: tuple[tuple[str, Any], ...]) -> Any:
    # Two threads asking at once may each make one, and one is then dropped: only while
    # the process starts, and its connections close with it.
    return pool_class.from_url(server, **dict(options))


class SharedPoolClient(RedisCacheClient):
    """Django's Redis client, its connection pools shared by every cache object of the
    process that has the same server and options (see the module docstring)."""

    # Set by Django's `RedisCacheClient.__init__` (its stubs leave them out).
    _servers: list[str]
    _pool_class: Any
    _pool_options: dict[str, Any]
    _get_connection_pool_index: Callable[[bool], int]

    def _get_connection_pool(self, write: bool) -> Any:
        server = self._servers[self._get_connection_pool_index(write)]
        return _shared_pool(self._pool_class, server, tuple(sorted(self._pool_options.items())))


# --- 7. A page's template context freed when the page is rendered ----------------------


def release_context(context: Context) -> None:
    """Pop every dictionary pushed onto `context`, each of which refers back to it."""
    try:
        while True:
            context.pop()
    except ContextPopException:
        pass


class ReleasingTemplate(django_backend.Template):
    """Django's template wrapper, releasing the context it made once it has rendered."""

    def render(
        self, context: dict[str, Any] | None = None, request: HttpRequest | None = None
    ) -> str:
        made = make_context(context, request, autoescape=self.backend.engine.autoescape)
        try:
            return cast(str, self.template.render(made))
        except TemplateDoesNotExist as exc:
            django_backend.reraise(exc, self.backend)
        finally:
            release_context(made)


class ReleasingTemplates(DjangoTemplates):
    """Django's template backend, its templates `ReleasingTemplate`s (see the module
    docstring); `TEMPLATES` names it in Django's place."""

    def from_string(self, template_code: str) -> ReleasingTemplate:
        return ReleasingTemplate(self.engine.from_string(template_code), self)

    def get_template(self, template_name: str) -> ReleasingTemplate:
        try:
            return ReleasingTemplate(self.engine.get_template(template_name), self)
        except TemplateDoesNotExist as exc:
            django_backend.reraise(exc, self)


# --- How an upgrade is caught -------------------------------------------------------------


def replaced_upstream_code() -> dict[str, str]:
    """The upstream source the seams above replace or rely on, by name (fingerprinted by
    tests/test_seams.py)."""
    code = {
        # 1. The dispatch replaced, and the hooks called inline.
        "MiddlewareMixin.__call__": inspect.getsource(MiddlewareMixin.__call__),
        "MiddlewareMixin.__acall__": inspect.getsource(MiddlewareMixin.__acall__),
        # 3. Django's per-request context, and how asgiref picks a context's thread.
        "ASGIHandler.__call__": inspect.getsource(ASGIHandler.__call__),
        "ThreadSensitiveContext.__aenter__": inspect.getsource(ThreadSensitiveContext.__aenter__),
        "ThreadSensitiveContext.__aexit__": inspect.getsource(ThreadSensitiveContext.__aexit__),
        "SyncToAsync.__call__": inspect.getsource(SyncToAsync.__call__),
        # 4. The iteration replaced, the wrapper it goes around, and who closes it.
        "StreamingHttpResponse.__aiter__": inspect.getsource(StreamingHttpResponse.__aiter__),
        "StreamingHttpResponse.streaming_content": inspect.getsource(
            vars(StreamingHttpResponse)["streaming_content"].fget
        ),
        "ASGIHandler.send_response": inspect.getsource(ASGIHandler.send_response),
        # 5. The listener replaced, and the one caller whose indifference it relies on.
        "ASGIHandler.listen_for_disconnect": inspect.getsource(ASGIHandler.listen_for_disconnect),
        "ASGIHandler.handle": inspect.getsource(ASGIHandler.handle),
        # 6. The pool lookup replaced, and where the cache makes its client.
        "RedisCacheClient._get_connection_pool": inspect.getsource(
            vars(RedisCacheClient)["_get_connection_pool"]
        ),
        "RedisCache._cache": inspect.getsource(vars(RedisCache)["_cache"].func),
        # 5. What the weak request.user and request.auser call.
        "auth.get_user": inspect.getsource(auth.get_user),
        "auth.auser": inspect.getsource(auth.auser),
        # 7. The wrapper's render and the backend's constructors replaced, and the cycle.
        "django_backend.Template.render": inspect.getsource(django_backend.Template.render),
        "DjangoTemplates.from_string": inspect.getsource(DjangoTemplates.from_string),
        "DjangoTemplates.get_template": inspect.getsource(DjangoTemplates.get_template),
        "make_context": inspect.getsource(make_context),
        "ContextDict.__init__": inspect.getsource(ContextDict.__init__),
    }
    for ours in INLINE.values():
        django_class = _django_class(ours)
        for hook in ("process_request", "process_view", "process_response"):
            if hook in vars(django_class):
                name = f"{django_class.__name__}.{hook}"
                code[name] = inspect.getsource(getattr(django_class, hook))
    return code


def check_upstream() -> None:
    """Refuse to start when Django or asgiref no longer work the way the
    seams above assume."""
    problems = []
    # 1.
    if "self.__acall__(request)" not in inspect.getsource(MiddlewareMixin.__call__):
        problems.append("MiddlewareMixin.__call__ no longer dispatches to __acall__")
    for name, ours in INLINE.items():
        django_class = _django_class(ours)
        if f"{django_class.__module__}.{django_class.__name__}" != name:
            problems.append(f"{ours.__name__} does not stand in for {name}")
        if any(n in vars(django_class) for n in ("__call__", "__acall__")):
            problems.append(f"{name} now has its own async path")
        if not hasattr(django_class, "process_request") and not hasattr(
            django_class, "process_response"
        ):
            problems.append(f"{name} has no process_request/process_response")
    # 3.
    context = getattr(SyncToAsync, "thread_sensitive_context", None)
    if not isinstance(context, contextvars.ContextVar):
        problems.append("asgiref's SyncToAsync.thread_sensitive_context is gone")
    if "ThreadSensitiveContext()" not in inspect.getsource(ASGIHandler.__call__):
        problems.append("ASGIHandler no longer gives each request a ThreadSensitiveContext")
    # 4.
    if "aclosing(aiter(response))" not in inspect.getsource(ASGIHandler.send_response):
        problems.append("ASGIHandler no longer closes aiter(response)")
    # 5.
    handle = inspect.getsource(ASGIHandler.handle)
    if "listen_for_disconnect(receive)" not in handle or (
        "return_when=asyncio.FIRST_COMPLETED" not in handle
        or "except RequestAborted:" not in handle
    ):
        problems.append("ASGIHandler.handle no longer ignores how its disconnect listener ends")
    # 6.
    if "self._class(" not in inspect.getsource(vars(RedisCache)["_cache"].func):
        problems.append("RedisCache no longer makes its client from self._class")
    # 7.
    render = inspect.getsource(django_backend.Template.render)
    if "make_context(" not in render or "self.template.render(context)" not in render:
        problems.append("Django's template wrapper no longer renders a context it makes")
    if problems:
        raise ImproperlyConfigured(
            "chat.seams no longer matches the installed Django or asgiref: "
            + "; ".join(problems)
            + ". Re-check each seam against them (tests/test_seams.py)."
        )
