"""Who may do what: ownership on every endpoint, API tokens, anonymous use, cross-site
refusal, the admin's CSRF token and `check --deploy` with production settings."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import Client

from chat.access.tokens import token_create, token_revoke
from chat.models import ApiToken, Conversation, Message
from tests.asgi import AsgiClient, asgi_request, parse_sse

SSE = {"accept": "text/event-stream"}
BASE_DIR = Path(__file__).resolve().parent.parent


async def snapshot() -> list[tuple]:
    rows = Message.objects.order_by("pk").values_list(
        "pk", "conversation_id", "status", "content", "finished_at"
    )
    conversations = Conversation.objects.order_by("pk").values_list(
        "pk", "title", "updated_at", "system_prompt", "model"
    )
    return [row async for row in rows] + [row async for row in conversations]


async def owned_turns(client: AsgiClient) -> dict:
    """A conversation with one finished turn and one deferred (pending) turn."""
    done = (await client.post("/api/chat", {"message": "secret plans"})).json()
    pending = (
        await client.post(
            "/api/chat?stream=defer",
            {"message": "more secrets", "conversation": done["conversation"]},
        )
    ).json()
    assert pending["conversation"] == done["conversation"]
    return {"conversation": done["conversation"], "done": done["message"], **pending}


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_two_users_and_two_anonymous_sessions_never_reach_each_others_chats():
    clients = {
        "ada": await AsgiClient.logged_in("ada"),
        "bob": await AsgiClient.logged_in("bob"),
        "anon1": AsgiClient(),
        "anon2": AsgiClient(),
    }
    turns = {name: await owned_turns(client) for name, client in clients.items()}
    before = await snapshot()

    for name, client in clients.items():
        for other, turn in turns.items():
            if other == name:
                continue
            conversation, pending, done = turn["conversation"], turn["message"], turn["done"]
            attempts = [
                await client.get(f"/api/conversations/{conversation}"),
                await client.get(f"/api/messages/{pending}/stream", headers=SSE),
                await client.get(f"/api/messages/{done}/stream", headers=SSE),
                await client.post(f"/api/messages/{pending}/cancel", {}),
                await client.post(f"/api/messages/{done}/cancel", {}),
                await client.post(
                    "/api/chat", {"message": "let me in", "conversation": conversation}
                ),
                await client.post(
                    "/api/chat?stream=defer",
                    {"message": "let me in", "conversation": conversation},
                ),
            ]
            for response in attempts:
                assert response.status == 404, (name, other, response.body)
                assert response.json()["error"]["type"] == "not_found"
                assert b"secret" not in response.body
            listing = (await client.get("/api/conversations")).json()["conversations"]
            assert conversation not in {c["id"] for c in listing}

    assert await snapshot() == before
    # ...while each owner still reaches their own.
    for name, client in clients.items():
        detail = await client.get(f"/api/conversations/{turns[name]['conversation']}")
        assert detail.status == 200 and len(detail.json()["messages"]) == 4


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_bearer_token_acts_as_its_user():
    ada = await AsgiClient.logged_in("ada")
    mine = (await ada.post("/api/chat", {"message": "from the browser"})).json()
    user = await get_user_model().objects.aget(username="ada")
    _, raw = await sync_to_async(token_create)(user=user, name="script")
    bearer = {"authorization": f"Bearer {raw}"}

    listing = await asgi_request("GET", "/api/conversations", headers=bearer)
    assert [c["id"] for c in listing.json()["conversations"]] == [mine["conversation"]]
    reply = await asgi_request(
        "POST",
        "/api/chat",
        body={"message": "from a script", "conversation": mine["conversation"]},
        headers=bearer,
    )
    assert reply.status == 200 and reply.json()["conversation"] == mine["conversation"]
    conversation = await Conversation.objects.aget()
    assert conversation.owner_id == user.pk
    assert (await ApiToken.objects.aget()).last_used_at is not None


@pytest.mark.parametrize(
    "authorization",
    ["Bearer chat_unknown", "Bearer ", "Basic YWRhOnB3", "Token abc", "Bearer revoked"],
)
@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_bad_or_revoked_token_is_401_and_never_falls_back_to_the_session(authorization):
    ada = await AsgiClient.logged_in("ada")
    await ada.post("/api/chat", {"message": "browser chat"})
    if authorization == "Bearer revoked":
        user = await get_user_model().objects.aget(username="ada")
        token, raw = await sync_to_async(token_create)(user=user, name="old")
        await sync_to_async(token_revoke)(token)
        authorization = f"Bearer {raw}"
    before = await snapshot()
    for method, path, body in [
        ("GET", "/api/conversations", b""),
        ("POST", "/api/chat", {"message": "hi"}),
    ]:
        # The session cookie of a logged-in user rides along: it must not be used.
        response = await ada.request(
            method, path, body=body, headers={"authorization": authorization}
        )
        assert response.status == 401
        assert response.json()["error"]["type"] == "invalid_token"
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert b"browser chat" not in response.body
    assert await snapshot() == before


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_anonymous_use_is_refused_unless_allowed(settings):
    settings.CHAT_ALLOW_ANONYMOUS = False
    for method, path in [("POST", "/api/chat"), ("GET", "/api/conversations")]:
        response = await asgi_request(method, path, body={"message": "hi"})
        assert response.status == 401
        assert response.json()["error"]["type"] == "authentication_required"
    assert await Message.objects.acount() == 0
    ada = await AsgiClient.logged_in("ada")
    assert (await ada.post("/api/chat", {"message": "hi"})).status == 200


# --- Cross-site requests ---------------------------------------------------------------

HOSTILE_FORM = {
    "content-type": "application/x-www-form-urlencoded",
    "origin": "https://evil.example",
}


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status"),
    [
        # A hostile page's <form method=post> (no preflight, the visitor's cookies ride along).
        ("POST", "/api/chat", b"message=hi", HOSTILE_FORM, 403),
        ("POST", "/api/chat", b"message=hi", {**HOSTILE_FORM, "sec-fetch-site": "cross-site"}, 403),
        # The same form from a browser that sends no Origin: still not JSON.
        ("POST", "/api/chat", b"message=hi", {"content-type": "text/plain"}, 415),
        # fetch() from another site with a JSON body (would be preflighted, but refused anyway).
        (
            "POST",
            "/api/chat",
            b'{"message": "hi"}',
            {
                "content-type": "application/json",
                "sec-fetch-site": "cross-site",
                "origin": "https://evil.example",
            },
            403,
        ),
        # A sibling subdomain is same-site but not same-origin.
        (
            "POST",
            "/api/chat",
            b'{"message": "hi"}',
            {
                "content-type": "application/json",
                "sec-fetch-site": "same-site",
                "origin": "https://other.127.0.0.1",
            },
            403,
        ),
        (
            "POST",
            "/api/chat",
            b'{"message": "hi"}',
            {"content-type": "application/json", "origin": "null"},
            403,
        ),
        # Reading is refused too, so a hostile page cannot read a visitor's chats.
        (
            "GET",
            "/api/conversations",
            b"",
            {"sec-fetch-site": "cross-site", "origin": "https://evil.example"},
            403,
        ),
        # A bearer token does not make a browser request from another site acceptable.
        (
            "POST",
            "/api/chat",
            b'{"message": "hi"}',
            {
                "content-type": "application/json",
                "sec-fetch-site": "cross-site",
                "authorization": "Bearer x",
            },
            403,
        ),
    ],
)
@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_cross_site_requests_are_refused(method, path, body, headers, status):
    victim = AsgiClient()
    await victim.post("/api/chat", {"message": "private"})
    before = await snapshot()
    response = await victim.request(method, path, body=body, headers=headers)
    assert response.status == status
    assert response.json()["error"]["type"] in ("cross_origin", "unsupported_media_type")
    assert b"private" not in response.body
    assert await snapshot() == before


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_the_page_curl_and_a_cookie_keeping_script_work():
    page = AsgiClient()
    same_origin = {"origin": "http://127.0.0.1", "sec-fetch-site": "same-origin"}
    first = await page.post("/api/chat?stream=defer", {"message": "hi"}, headers=same_origin)
    assert first.status == 201
    stream = await page.get(
        first.json()["stream_url"], headers={**SSE, "sec-fetch-site": "same-origin"}
    )
    assert parse_sse(stream.body)[-1][0] == "end"

    curl = await asgi_request("POST", "/api/chat", body={"message": "hi"})  # no Origin
    assert curl.status == 200 and curl.json()["status"] == "completed"

    script = AsgiClient()  # keeps the session cookie, like `curl -c jar -b jar`
    one = (await script.post("/api/chat", {"message": "one"})).json()
    two = await script.post("/api/chat", {"message": "two", "conversation": one["conversation"]})
    assert two.status == 200 and two.json()["conversation"] == one["conversation"]
    detail = (await script.get(f"/api/conversations/{one['conversation']}")).json()
    assert [m["content"] for m in detail["messages"] if m["role"] == "user"] == ["one", "two"]


def test_admin_login_form_needs_djangos_csrf_token(db):
    get_user_model().objects.create_superuser("root", password="pw-not-secret-123")
    credentials = {"username": "root", "password": "pw-not-secret-123", "next": "/admin/"}
    browser = Client(enforce_csrf_checks=True)
    refused = browser.post("/admin/login/", credentials)
    assert refused.status_code == 403
    assert "_auth_user_id" not in browser.session

    page = browser.get("/admin/login/")
    token = page.context["csrf_token"]
    accepted = browser.post("/admin/login/", {**credentials, "csrfmiddlewaretoken": token})
    assert accepted.status_code == 302 and browser.session["_auth_user_id"]


def test_check_deploy_is_clean_with_production_settings():
    env = {
        **os.environ,
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "chat.example.com",
        "CHAT_READ_DOTENV": "false",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_settings_refuse_to_start_without_a_secret_key():
    env = {**os.environ, "DEBUG": "false", "SECRET_KEY": "", "CHAT_READ_DOTENV": "false"}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "SECRET_KEY must be set" in result.stderr
