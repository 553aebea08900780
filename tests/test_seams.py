"""chat/seams.py: Django's middleware run inline must behave exactly like
Django's own. The same requests go through Django's stock handler and through ours; status,
headers, cookies and session rows must match. The fingerprint test fails on any Django or
asgiref upgrade that changes the code a seam replaces or relies on: re-check
that seam (its test here or in tests/test_asgi.py), then record the new fingerprint."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import re

import pytest
from asgiref.sync import SyncToAsync
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.core.exceptions import ImproperlyConfigured, RequestAborted
from django.core.handlers.asgi import ASGIHandler

from chat import seams
from chatsite.asgi import django_application
from tests.asgi import asgi_request

# The code chat.seams replaces or relies on: Django 5.2, asgiref 3.13.
FINGERPRINTS = {
    # 1. Django's middleware, inline.
    "AuthenticationMiddleware.process_request": "6dd39b90ad6373e2",
    "CommonMiddleware.process_request": "993f4d1f2084e01e",
    "CommonMiddleware.process_response": "eb5ad294e9fbda9b",
    "CsrfViewMiddleware.process_request": "9aec8dfd81c88a56",
    "CsrfViewMiddleware.process_response": "9fe1054c0f64b37f",
    "CsrfViewMiddleware.process_view": "cdbdabe04318fc2f",
    "MessageMiddleware.process_request": "7f4834ba26ee0583",
    "MessageMiddleware.process_response": "04469c9493c90e26",
    "MiddlewareMixin.__acall__": "adf8cbcaf9f11e45",
    "MiddlewareMixin.__call__": "337be048dd62e014",
    "SecurityMiddleware.process_request": "3373d262748cbe3e",
    "SecurityMiddleware.process_response": "3822bd0d5f79f4a3",
    "SessionMiddleware.process_request": "6782d24847e4a926",
    "SessionMiddleware.process_response": "fbaf5503c20d7dd0",
    "XFrameOptionsMiddleware.process_response": "045e5788270860c6",
    # 3. One database thread for chat requests.
    "ASGIHandler.__call__": "f756809e9c9308dc",
    "SyncToAsync.__call__": "6376e33c6d3d94c5",
    "ThreadSensitiveContext.__aenter__": "b0355bf6b275a7c2",
    "ThreadSensitiveContext.__aexit__": "5571fec562fa6e84",
    # 4. A streamed body closed all the way down.
    "ASGIHandler.send_response": "77eda2b08689b44e",
    "StreamingHttpResponse.__aiter__": "7b36f5b3e5de1837",
    "StreamingHttpResponse.streaming_content": "cdb912493f797f72",
    # 5. A request leaves no reference cycle behind.
    "ASGIHandler.handle": "98faeb5bef800331",
    "ASGIHandler.listen_for_disconnect": "c729aa315c734f98",
    # 5. (and 1.) What the weak request.user and request.auser call.
    "auth.get_user": "f663ed77b28cc515",
    "auth.auser": "0c7597c36c9f1003",
    # 6. One Redis pool per process for Django's cache.
    "RedisCache._cache": "9ff16af6c04a2401",
    "RedisCacheClient._get_connection_pool": "025850f6ffcb98ed",
    # 7. A page's template context freed when the page is rendered.
    "django_backend.Template.render": "4a1ec275ca1ac350",
    "DjangoTemplates.from_string": "29dbf317d48ac80b",
    "DjangoTemplates.get_template": "01480fb11fa0c984",
    "make_context": "a3d2a4696151e6f7",
    "ContextDict.__init__": "f885feb24882a57f",
}
VARYING_HEADERS = {"x-request-id", "content-length", "date", "expires"}


def test_the_replaced_upstream_code_is_the_code_these_seams_were_checked_against():
    found = {
        name: hashlib.sha256(source.encode()).hexdigest()[:16]
        for name, source in seams.replaced_upstream_code().items()
    }
    assert found == FINGERPRINTS, "an upgrade changed code chat/seams.py replaces"


def test_start_up_check_passes_and_ours_are_in_the_built_chain():
    seams.check_upstream()
    built = {type(m) for m in _chain(django_application)}
    assert set(seams.INLINE.values()) <= built
    django_names = {
        f"{cls.__module__}.{cls.__qualname__}" for cls in built if cls.__module__[:7] == "django."
    }
    assert not django_names & set(seams.INLINE)


def test_start_up_check_refuses_a_django_with_its_own_async_path(monkeypatch):
    from django.middleware import security

    async def acall(self, request):  # as if Django had made it async itself
        return await self.get_response(request)

    monkeypatch.setattr(security.SecurityMiddleware, "__acall__", acall, raising=False)
    with pytest.raises(Exception, match="SecurityMiddleware now has its own async path"):
        seams.check_upstream()


def cookie_shape(header: str) -> tuple[str, ...]:
    """A Set-Cookie header without its value and dates: name and attributes."""
    name, _, rest = header.partition("=")
    attributes = [part.strip().split("=")[0].lower() for part in rest.split(";")[1:]]
    deleted = rest.startswith('""') or rest.startswith(";")
    return (name, "deleted" if deleted else "set", *sorted(attributes))


def shape(result) -> dict:
    headers = {k: v for k, v in result.headers.items() if k not in VARYING_HEADERS}
    headers.pop("set-cookie", None)
    return {
        "status": result.status,
        "headers": headers,
        "cookies": sorted(cookie_shape(h) for h in result.set_cookies.values()),
    }


def csrf_token(body: bytes) -> str:
    match = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', body)
    assert match
    return match.group(1).decode()


async def conversation(app) -> list[dict]:
    """A visit to the admin through `app`: the login page, a refused and an accepted sign-in,
    a page, an API call and a sign-out. Returns each step's shape and session-row count."""
    steps = []
    cookies: dict[str, str] = {}

    async def step(method, path, **kwargs):
        result = await asgi_request(method, path, cookies=dict(cookies), app=app, **kwargs)
        for name, value in result.cookies.items():
            if value in ("", '""'):
                cookies.pop(name, None)
            else:
                cookies[name] = value
        steps.append({**shape(result), "sessions": await Session.objects.acount()})
        return result

    login = await step("GET", "/admin/login/")
    form = {"content-type": "application/x-www-form-urlencoded"}
    await step("POST", "/admin/login/", body=b"username=boss&password=pw", headers=form)
    token = csrf_token(login.body)
    await step(
        "POST",
        "/admin/login/?next=/admin/",
        body=f"csrfmiddlewaretoken={token}&username=boss&password=right-horse".encode(),
        headers=form,
    )
    await step("GET", "/admin")  # CommonMiddleware's slash redirect
    await step("GET", "/admin/")
    await step("GET", "/api/conversations")
    await step("GET", "/api/account")
    logout = await step("GET", "/admin/")
    await step(
        "POST",
        "/admin/logout/",
        body=f"csrfmiddlewaretoken={csrf_token(logout.body)}".encode(),
        headers=form,
    )
    await step("GET", "/admin/")
    return steps


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_ours_answer_like_djangos_own_middleware():
    await get_user_model().objects.acreate_superuser("boss", password="right-horse")
    stock = ASGIHandler()  # settings.MIDDLEWARE: Django's own classes, with their hops
    assert not any(
        isinstance(m, tuple(seams.INLINE.values()))
        for m in _chain(stock)  # really Django's own
    )
    theirs = await conversation(stock)
    await Session.objects.all().adelete()
    ours = await conversation(django_application)
    assert [s["status"] for s in ours] == [200, 403, 302, 301, 200, 200, 200, 200, 200, 302]
    assert ours == theirs


def _chain(handler):
    """The middleware instances of a handler, outermost first."""
    middleware = handler._middleware_chain
    while middleware is not None:
        # Each is wrapped by Django's exception-to-response converter (functools.wraps).
        middleware = getattr(middleware, "__wrapped__", middleware)
        yield middleware
        middleware = getattr(middleware, "get_response", None) or _closed_over(middleware)


def _closed_over(function):
    """A function-style middleware's (allauth's) `get_response`, from its closure."""
    code = getattr(function, "__code__", None)
    if code is None or "get_response" not in code.co_freevars:
        return None
    return function.__closure__[code.co_freevars.index("get_response")].cell_contents


async def _no_context(self, scope, receive, send):  # as if Django dropped its per-request one
    await self.handle(scope, receive, send)


async def _unclosed(self, response, send):  # as if Django stopped closing the body
    async for part in aiter(response):
        await send(part)


async def _cares_how_the_listener_ends(self, scope, receive, send):
    # As Django's pull request #19366 would: only a raising listener cancels the request.
    async with asyncio.TaskGroup() as group:
        group.create_task(self.listen_for_disconnect(receive))


@pytest.mark.parametrize(
    "owner, name, value, problem",
    [
        (SyncToAsync, "thread_sensitive_context", None, "thread_sensitive_context is gone"),
        (ASGIHandler, "__call__", _no_context, "ThreadSensitiveContext"),
        (ASGIHandler, "send_response", _unclosed, "no longer closes aiter(response)"),
        (ASGIHandler, "handle", _cares_how_the_listener_ends, "disconnect listener ends"),
    ],
    ids=["asgiref-context", "django-context", "django-closing", "django-listener"],
)
def test_start_up_check_refuses_an_upstream_that_moved_under_a_seam(
    monkeypatch, owner, name, value, problem
):
    monkeypatch.setattr(owner, name, value)
    with pytest.raises(ImproperlyConfigured, match=re.escape(problem)):
        seams.check_upstream()


async def _garbage_after_chat_turns(turns: int) -> list[object]:
    """What only the cyclic garbage collector would free after `turns` chat turns."""
    await asgi_request("POST", "/api/chat", body={"message": "warm up"})
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(turns):
            reply = await asgi_request("POST", "/api/chat", body={"message": "hi"})
            assert reply.status == 200
        gc.collect()
        return list(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_request_leaves_no_disconnect_cycle_for_the_garbage_collector(monkeypatch):
    """Seam 5: Django's listener leaves a `RequestAborted` in a reference cycle per request
    (its traceback holds the frame that holds the task that holds it); ours returns."""
    ours = await _garbage_after_chat_turns(5)
    assert not [o for o in ours if isinstance(o, RequestAborted)]
    monkeypatch.setattr(
        seams.CycleFreeASGIHandler, "listen_for_disconnect", ASGIHandler.listen_for_disconnect
    )
    djangos = await _garbage_after_chat_turns(5)
    assert len([o for o in djangos if isinstance(o, RequestAborted)]) == 5
    assert len(djangos) > len(ours)
