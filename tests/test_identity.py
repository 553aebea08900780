"""Who a request acts for: the anonymous visitor's signed cookie (no session row), its
renewal and expiry, forged cookies, logout, and keys adopted from older sessions."""

from __future__ import annotations

import time

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.core import signing
from django.test import Client

from chat.access.identity import (
    ANONYMOUS_COOKIE,
    RENEW_AFTER_SECONDS,
    SESSION_ANONYMOUS_KEY,
    anonymous_cookie,
)
from chat.models import Conversation
from tests.asgi import AsgiClient, asgi_request

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


async def listed(client: AsgiClient) -> set[str]:
    response = await client.get("/api/conversations")
    assert response.status == 200, response.body
    return {c["id"] for c in response.json()["conversations"]}


async def test_new_visitor_gets_a_signed_cookie_and_no_session_row(settings):
    visitor = AsgiClient()
    first = await visitor.post("/api/chat", {"message": "hi"})
    assert first.status == 200
    header = first.set_cookies[ANONYMOUS_COOKIE]
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Path=/" in header
    assert f"Max-Age={settings.SESSION_COOKIE_AGE}" in header
    assert "sessionid" not in first.cookies
    assert await Session.objects.acount() == 0

    # The same cookie is the same owner: the conversation is listed and can be continued;
    # a fresh cookie was not needed, so none is sent.
    conversation = first.json()["conversation"]
    assert await listed(visitor) == {conversation}
    again = await visitor.post("/api/chat", {"message": "more", "conversation": conversation})
    assert again.status == 200 and ANONYMOUS_COOKIE not in again.set_cookies
    stored = await Conversation.objects.aget(pk=conversation)
    signer = signing.TimestampSigner(salt=ANONYMOUS_COOKIE + "chat.identity.anonymous")
    assert signer.unsign(visitor.cookies[ANONYMOUS_COOKIE]) == stored.anonymous_key
    assert await Session.objects.acount() == 0


@pytest.mark.parametrize(
    "tamper",
    [
        lambda value: value.replace(value[0], "A" if value[0] != "A" else "B", 1),
        lambda value: value[:-1] + ("x" if value[-1] != "x" else "y"),
        lambda value: "not-signed-at-all",
        lambda value: signing.TimestampSigner(key="another-secret").sign("stolen"),
    ],
    ids=["edited-key", "edited-signature", "unsigned", "other-secret"],
)
async def test_a_forged_cookie_is_a_new_visitor_who_sees_nothing(tamper):
    visitor = AsgiClient()
    mine = (await visitor.post("/api/chat", {"message": "secret"})).json()["conversation"]
    forger = AsgiClient()
    forger.cookies[ANONYMOUS_COOKIE] = tamper(visitor.cookies[ANONYMOUS_COOKIE])
    assert await listed(forger) == set()
    refused = await forger.get(f"/api/conversations/{mine}")
    assert refused.status == 404
    # The forger was given an identity of their own instead.
    assert forger.cookies[ANONYMOUS_COOKIE] != visitor.cookies[ANONYMOUS_COOKIE]
    assert await listed(visitor) == {mine}


async def test_cookie_is_renewed_after_a_day_and_expires_with_the_session_age(
    settings, monkeypatch
):
    visitor = AsgiClient()
    mine = (await visitor.post("/api/chat", {"message": "hi"})).json()["conversation"]
    issued = time.time()

    monkeypatch.setattr(time, "time", lambda: issued + RENEW_AFTER_SECONDS + 60)
    renewed = await visitor.get("/api/conversations")
    assert ANONYMOUS_COOKIE in renewed.set_cookies  # same owner, fresh date
    assert {c["id"] for c in renewed.json()["conversations"]} == {mine}

    # Unused for longer than SESSION_COOKIE_AGE: forgotten, as a session would be.
    monkeypatch.setattr(
        time, "time", lambda: issued + RENEW_AFTER_SECONDS + settings.SESSION_COOKIE_AGE + 120
    )
    assert await listed(visitor) == set()


async def test_logout_drops_the_anonymous_cookie():
    user = await get_user_model().objects.acreate(username="ada", is_staff=True)

    def logout_response() -> object:
        client = Client()
        client.force_login(user)
        client.cookies[ANONYMOUS_COOKIE] = anonymous_cookie("before-login")
        return client.post("/admin/logout/")

    response = await sync_to_async(logout_response)()
    assert response.status_code == 200
    morsel = response.cookies[ANONYMOUS_COOKIE]
    assert morsel.value == "" and str(morsel["max-age"]) == "0"


async def test_key_from_an_older_session_is_adopted_into_the_cookie():
    # Before the cookie, anonymous keys lived in the session: such a visitor keeps theirs.
    await Conversation.objects.acreate(anonymous_key="from-the-session", title="old chat")
    session = SessionStore()
    session[SESSION_ANONYMOUS_KEY] = "from-the-session"
    await sync_to_async(session.create)()
    response = await asgi_request(
        "GET", "/api/conversations", cookies={"sessionid": session.session_key}
    )
    assert [c["title"] for c in response.json()["conversations"]] == ["old chat"]
    assert response.cookies[ANONYMOUS_COOKIE]
    visitor = AsgiClient()
    visitor.cookies[ANONYMOUS_COOKIE] = response.cookies[ANONYMOUS_COOKIE]
    assert len(await listed(visitor)) == 1


async def test_browser_session_cookie_when_sessions_end_with_the_browser(settings):
    settings.SESSION_EXPIRE_AT_BROWSER_CLOSE = True
    response = await asgi_request("POST", "/api/chat", body={"message": "hi"})
    assert response.status == 200
    assert "Max-Age" not in response.set_cookies[ANONYMOUS_COOKIE]


async def test_short_cookie_ages_are_renewed_before_they_expire(settings, monkeypatch):
    settings.SESSION_COOKIE_AGE = 3600
    visitor = AsgiClient()
    mine = (await visitor.post("/api/chat", {"message": "hi"})).json()["conversation"]
    issued = time.time()
    monkeypatch.setattr(time, "time", lambda: issued + 1900)  # past half its life
    renewed = await visitor.get("/api/conversations")
    assert ANONYMOUS_COOKIE in renewed.set_cookies
    monkeypatch.setattr(time, "time", lambda: issued + 3000)  # 1100 s after renewal
    assert await listed(visitor) == {mine}
