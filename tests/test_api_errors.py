"""Every /api/ error is JSON: paths no URL pattern matches (control characters, invalid
UTF-8), wrong methods, and 500s raised outside our views, in DEBUG and in production."""

from __future__ import annotations

from urllib.parse import unquote

import pytest
from django.urls import URLResolver, get_resolver

from chat import middleware
from tests.asgi import asgi_request

# (path on the wire, as percent-encoded bytes): what uvicorn decodes them to.
ODD_PATHS = [
    b"/api/messages/a%0Ab/stream",  # a newline: `<path:…>` does not match it
    b"/api/messages/%0D%0A/cancel",
    b"/api/%00",
    b"/api/conversations/%7F",
    b"/api/%FF%FE",  # not UTF-8
    b"/api/messages/%C3%28/stream",  # a broken two-byte sequence
    b"/api/%E2%80%AE",  # right-to-left override
    b"/api/chat%0A",
]


def decoded(raw: bytes) -> str:
    # uvicorn's own decoding: percent-escapes as UTF-8, invalid bytes replaced.
    return unquote(raw.decode("ascii"))


def assert_json_error(result, status: int, type: str) -> None:
    assert result.status == status, result.body[:200]
    assert result.headers["content-type"] == "application/json"
    assert result.json()["error"]["type"] == type
    assert "x-request-id" in result.headers
    assert b"<html" not in result.body.lower()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("debug", [True, False], ids=["debug", "production"])
@pytest.mark.parametrize("raw", ODD_PATHS, ids=[p.decode() for p in ODD_PATHS])
async def test_paths_with_control_characters_or_invalid_utf8_get_a_json_404(settings, debug, raw):
    settings.DEBUG = debug
    result = await asgi_request("GET", decoded(raw), raw_path=raw)
    assert_json_error(result, 404, "not_found")


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("debug", [True, False], ids=["debug", "production"])
async def test_a_wrong_method_on_every_endpoint_is_a_json_405(settings, debug):
    settings.DEBUG = debug
    for method, path in [
        ("DELETE", "/api/chat"),
        ("PUT", "/api/conversations"),
        ("POST", "/api/account"),
        ("PUT", "/api/messages/1/stream"),
    ]:
        result = await asgi_request(method, path, body={})
        assert_json_error(result, 405, "method_not_allowed")
        assert result.headers["allow"]


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("debug", [True, False], ids=["debug", "production"])
async def test_a_500_raised_in_a_middleware_is_json_without_a_traceback(
    settings, monkeypatch, debug
):
    settings.DEBUG = debug

    def broken(self, request):
        raise RuntimeError("secret detail sk-live-abc")

    monkeypatch.setattr(middleware.CrossOriginProtectionMiddleware, "refusal", broken)
    result = await asgi_request("GET", "/api/conversations")
    assert_json_error(result, 500, "server_error")
    assert b"secret detail" not in result.body
    assert b"Traceback" not in result.body


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_disallowed_host_under_the_api_is_a_json_400(settings):
    result = await asgi_request("GET", "/api/conversations", headers={"host": "evil.example"})
    # Our helper adds its own Host after ours; Django reads the first.
    assert_json_error(result, 400, "bad_request")


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_pages_outside_the_api_keep_django_errors(settings):
    settings.DEBUG = False
    result = await asgi_request("GET", "/no/such/page%0A", raw_path=b"/no/such/page%0A")
    assert result.status == 404
    assert not result.headers["content-type"].startswith("application/json")


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_errors_django_answers_before_any_middleware_are_json_too():
    """A query string that is not UTF-8 fails while Django builds the request, before any
    middleware: its HTML 400 becomes the API's JSON error (`chat.errors.json_errors`)."""
    result = await asgi_request("GET", "/api/conversations", raw_query=b"q=\xff\xfe")
    assert result.status == 400
    assert result.headers["content-type"] == "application/json"
    assert int(result.headers["content-length"]) == len(result.body)
    assert result.json()["error"]["type"] == "bad_request"

    # The same request outside /api/ keeps Django's own answer.
    page = await asgi_request("GET", "/accounts/login/", raw_query=b"q=\xff\xfe")
    assert page.status == 400
    assert not page.headers.get("content-type", "").startswith("application/json")


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
async def test_an_unknown_api_path_is_a_json_404_whatever_the_method(method):
    """Not a CSRF refusal either: the API has no tokens (see the next test)."""
    result = await asgi_request(method, "/api/no/such/endpoint", body={})
    assert_json_error(result, 404, "not_found")


def test_every_api_view_is_exempt_from_djangos_token_csrf():
    """The API refuses cross-site requests by Origin/Sec-Fetch-Site and content type
    (`CrossOriginProtectionMiddleware`, tests/test_security.py), so a script or the page
    needs no CSRF token; the admin and HTML forms keep Django's."""
    api_views = dict(api_routes(get_resolver()))
    assert len(api_views) >= 10
    assert [
        route for route, view in api_views.items() if not getattr(view, "csrf_exempt", False)
    ] == []


def api_routes(resolver, prefix: str = ""):
    for pattern in resolver.url_patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from api_routes(pattern, route)
        elif route.startswith("api"):
            yield route, pattern.callback
