"""X-Request-ID (chat.ops.request_ids, chat.middleware.RequestIdMiddleware)."""

from __future__ import annotations

import re

import pytest

from chat.ops.request_ids import accepted
from tests.asgi import asgi_request

pytestmark = pytest.mark.django_db(transaction=True)
GENERATED = re.compile(r"^[0-9a-f]{32}$")


@pytest.mark.asyncio
async def test_generated_when_the_request_has_none():
    ids = [(await asgi_request("GET", "/healthz")).headers["x-request-id"] for _ in range(2)]
    assert all(GENERATED.match(i) for i in ids) and ids[0] != ids[1]


@pytest.mark.asyncio
async def test_the_proxys_id_is_kept_and_returned():
    response = await asgi_request("GET", "/healthz", headers={"X-Request-ID": "lb-1/abc:9"})
    assert response.headers["x-request-id"] == "lb-1/abc:9"


@pytest.mark.asyncio
async def test_every_response_has_one_errors_included():
    for method, path in [("GET", "/api/nowhere"), ("DELETE", "/api/chat"), ("GET", "/nowhere")]:
        response = await asgi_request(method, path, headers={"X-Request-ID": "r1"})
        assert response.status >= 400 and response.headers["x-request-id"] == "r1"


@pytest.mark.asyncio
@pytest.mark.parametrize("bad", ["a" * 201, "tab\there", "caf\u00e9", ""])
async def test_an_unusable_id_is_replaced(bad):
    response = await asgi_request("GET", "/healthz", headers={"X-Request-ID": bad})
    assert GENERATED.match(response.headers["x-request-id"])


def test_accepted_allows_printable_ascii_up_to_200_characters():
    assert accepted("a" * 200) == "a" * 200
    assert accepted("with space") == "with space"
    assert accepted("a" * 201) is None and accepted("x\r\nSet-Cookie: y") is None
    assert accepted(None) is None
