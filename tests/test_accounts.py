"""People signing in, out and up (django-allauth behind chat/access/accounts.py), as a browser
does it: forms posted with the session cookie, redirects followed."""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import AsyncClient as Client

from chat.access.identity import ANONYMOUS_COOKIE
from chat.models import Conversation

# Django's AsyncClient calls the ASGI handler on the test's event loop, as uvicorn would.
pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

User = get_user_model()
PASSWORD = "a long, unusual passphrase 42"


@pytest.fixture
def alice(transactional_db):
    return User.objects.create_user("alice", "alice@example.com", PASSWORD)


async def sign_in(
    client: Client, login: str, password: str = PASSWORD, next_url: str = ""
) -> object:
    path = "/accounts/login/" + (f"?next={quote(next_url)}" if next_url else "")
    return await client.post(path, {"login": login, "password": password, "next": next_url})


async def chat(client: Client, message: str = "hello") -> object:
    return await client.post("/api/chat", {"message": message}, content_type="application/json")


async def test_a_page_sends_a_visitor_to_sign_in_and_back(production, alice):
    client = Client()
    response = await client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/"

    page = await client.get(response["Location"])
    html = page.content.decode()
    assert page.status_code == 200
    assert 'href="/static/chat/chat.css"' in html and 'class="entrance"' in html
    assert 'name="login"' in html and 'name="password"' in html
    assert "Sign up" not in html  # sign-up is closed by default

    signed_in = await sign_in(client, "alice", next_url="/")
    assert signed_in.status_code == 302 and signed_in["Location"] == "/"
    home = await client.get("/")
    assert home.status_code == 200
    assert "Signed in as <strong" in home.content.decode()
    assert 'id="sign-out"' in home.content.decode()


async def test_the_api_answers_json_not_a_redirect(production):
    response = await Client().get("/api/conversations")
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_required"


async def test_sign_in_by_email_and_a_wrong_password_is_refused(production, alice):
    client = Client()
    wrong = await sign_in(client, "alice", password="not it")
    assert wrong.status_code == 200  # the form again, with its error
    assert "not correct" in wrong.content.decode()
    assert (await client.get("/")).status_code == 302
    assert (await sign_in(client, "alice@example.com")).status_code == 302
    assert (await client.get("/")).status_code == 200


async def test_sign_out_ends_api_access(production, alice):
    client = Client()
    await sign_in(client, "alice")
    assert (await chat(client)).status_code == 200
    out = await client.post("/accounts/logout/")
    assert out.status_code == 302 and out["Location"] == "/"
    refused = await chat(client)
    assert refused.status_code == 401
    assert refused.json()["error"]["type"] == "authentication_required"
    assert (await client.get("/")).status_code == 302


async def test_sign_in_keeps_the_page_asked_for(production, alice):
    alice.is_staff = alice.is_superuser = True  # so the admin page opens once signed in
    await alice.asave()
    client = Client()
    for asked in ["/accounts/email/", "/admin/chat/message/?status=failed"]:
        redirect = await client.get(asked)
        assert redirect.status_code == 302
        page = await client.get(redirect["Location"])
        # The sign-in form carries where to go back to, as a browser would post it.
        next_url = re.search(r'name="next" value="([^"]+)"', page.content.decode()).group(1)
        signed_in = await client.post(
            redirect["Location"], {"login": "alice", "password": PASSWORD, "next": next_url}
        )
        assert signed_in.status_code == 302
        assert signed_in["Location"] == asked, signed_in["Location"]
        assert (await client.get(signed_in["Location"])).status_code == 200
        await client.post("/accounts/logout/")
    # A conversation link's #fragment never reaches the server; the page's script adds it
    # to `next` (tests/browser/test_sign_in.py), and the server honours it.
    signed_in = await sign_in(client, "alice", next_url="/#some-conversation")
    assert signed_in["Location"] == "/#some-conversation"


async def test_an_offsite_next_is_ignored(production, alice):
    signed_in = await sign_in(Client(), "alice", next_url="https://evil.example/")
    assert signed_in["Location"] == "/"


async def test_sign_up_is_closed_by_default(production):
    client = Client()
    page = await client.get("/accounts/signup/")
    assert "closed" in page.content.decode().lower()
    await client.post(
        "/accounts/signup/",
        {
            "email": "mallory@example.com",
            "username": "mallory",
            "password1": PASSWORD,
            "password2": PASSWORD,
        },
    )
    assert not await User.objects.filter(username="mallory").aexists()


async def signup(client: Client, email: str, username: str) -> object:
    return await client.post(
        "/accounts/signup/",
        {"email": email, "username": username, "password1": PASSWORD, "password2": PASSWORD},
    )


async def test_open_sign_up_verifies_the_address_first(production):
    production.CHAT_SIGNUP = True
    production.ACCOUNT_EMAIL_VERIFICATION = "mandatory"
    client = Client()
    assert "Sign up" in (await client.get("/accounts/login/")).content.decode()
    response = await signup(client, "bob@example.com", "bob")
    assert response.status_code == 302
    assert await User.objects.filter(username="bob").aexists()
    # Not signed in until the emailed link is followed.
    assert (await client.get("/")).status_code == 302
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["bob@example.com"]
    link = re.search(r"http://\S+/accounts/confirm-email/\S+/", mail.outbox[0].body).group(0)
    path = link.split("testserver", 1)[1]
    await client.post(path)
    assert (await sign_in(client, "bob")).status_code == 302
    assert (await client.get("/")).status_code == 200


async def test_sign_up_domains_refuse_other_addresses(production):
    production.CHAT_SIGNUP = True
    production.CHAT_SIGNUP_DOMAINS = ["example.com"]
    production.ACCOUNT_EMAIL_VERIFICATION = "none"
    refused = await signup(Client(), "eve@elsewhere.test", "eve")
    assert refused.status_code == 200
    assert "example.com only" in refused.content.decode()
    assert not await User.objects.filter(username="eve").aexists()
    accepted = await signup(Client(), "Carol@EXAMPLE.com", "carol")
    assert accepted.status_code == 302
    assert await User.objects.filter(username="carol").aexists()


async def test_password_reset_by_email(production, alice):
    client = Client()
    await client.post("/accounts/password/reset/", {"email": "alice@example.com"})
    assert len(mail.outbox) == 1
    link = re.search(r"http://testserver(/accounts/password/reset/key/\S+/)", mail.outbox[0].body)
    form = await client.get(link.group(1), follow=True)
    new = "another long passphrase 43"
    await client.post(form.redirect_chain[-1][0], {"password1": new, "password2": new})
    assert (
        await sign_in(Client(), "alice", password=PASSWORD)
    ).status_code == 200  # old one refused
    assert (await sign_in(Client(), "alice", password=new)).status_code == 302


async def test_password_change(production, alice):
    client = Client()
    await sign_in(client, "alice")
    new = "changed passphrase, also long 44"
    changed = await client.post(
        "/accounts/password/change/",
        {"oldpassword": PASSWORD, "password1": new, "password2": new},
    )
    assert changed.status_code == 302
    assert (await sign_in(Client(), "alice", password=new)).status_code == 302


async def test_anonymous_conversations_move_to_the_account_at_sign_in(settings, alice):
    settings.CHAT_ALLOW_ANONYMOUS = True
    client = Client()
    started = await chat(client, "before signing in")
    assert started.status_code == 200
    conversation = started.json()["conversation"]
    assert client.cookies[ANONYMOUS_COOKIE].value
    stranger = Client()
    await chat(stranger, "someone else's")

    signed_in = await sign_in(client, "alice")
    assert signed_in.status_code == 302
    # The anonymous identity ends at sign-in, as it would at sign-out.
    assert client.cookies[ANONYMOUS_COOKIE].value == ""
    adopted = await Conversation.objects.aget(pk=conversation)
    assert adopted.owner_id == alice.pk and adopted.anonymous_key == ""
    listed = (await client.get("/api/conversations")).json()["conversations"]
    assert [c["id"] for c in listed] == [conversation]
    assert (await client.get(f"/api/conversations/{conversation}")).status_code == 200
    # The other browser's conversation stayed anonymous and is not Alice's.
    assert await Conversation.objects.filter(owner__isnull=True).acount() == 1


async def test_a_person_who_is_not_staff_reaches_no_admin_page(production, alice):
    client = Client()
    await sign_in(client, "alice")
    for path in [
        "/admin/",
        "/admin/chat/message/",
        "/admin/chat/conversation/",
        "/admin/chat/usage/",
        "/admin/auth/user/",
    ]:
        response = await client.get(path)
        assert response.status_code == 302, path
        assert response["Location"].startswith("/admin/login/"), path
    # Where they are sent: a kind refusal, with no stale "Successfully signed in" on it.
    refusal = (await client.get("/admin/", follow=True)).content.decode()
    assert "No access" in refusal and "Back to chat" in refusal
    assert "signed in as <strong>alice</strong>" in refusal
    assert "Successfully signed in" not in refusal and 'name="password"' not in refusal


async def test_signing_in_leaves_no_message_waiting_for_a_later_page(production, alice):
    client = Client()
    await sign_in(client, "alice")
    # The chat page shows who is signed in; a message would wait for the next page that
    # shows messages, such as the sign-in page after signing out.
    await client.post("/accounts/logout/")
    page = (await client.get("/accounts/login/")).content.decode()
    assert "Successfully signed in" not in page


async def test_the_page_shows_the_signed_in_person_and_budget(production, alice):
    production.CHAT_BUDGET_USD = __import__("decimal").Decimal("5")
    client = Client()
    await sign_in(client, "alice")
    html = (await client.get("/")).content.decode()
    config = json.loads(re.search(r'id="chat-config"[^>]*>(.*?)</script>', html).group(1))
    assert config["account"]["user"]["username"] == "alice"
    assert config["account"]["budget"]["limit"] == "5.00"
    assert config["account"]["budget"]["spent"] == "0"
    me = (await client.get("/api/account")).json()
    assert me["user"]["username"] == "alice" and me["budget"]["limit"] == "5.00"


async def test_an_anonymous_visitors_files_move_with_their_conversations(settings, alice, tmp_path):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.files import png

    settings.CHAT_ALLOW_ANONYMOUS = True
    settings.STORAGES = {
        **settings.STORAGES,
        "attachments": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }

    async def upload(client: Client, data: bytes) -> str:
        sent = await client.post("/api/files", {"file": SimpleUploadedFile("a.png", data)})
        assert sent.status_code == 201, sent.content
        return sent.json()["id"]

    own = Client()
    await sign_in(own, "alice")
    hers = await upload(own, png(10, 10))  # the account already has this one
    visitor = Client()
    await visitor.get("/api/account")
    new, same = await upload(visitor, png(20, 20)), await upload(visitor, png(10, 10))
    assert same != hers
    started = await visitor.post(
        "/api/chat",
        {"message": "look", "attachments": [new, same]},
        content_type="application/json",
    )
    conversation = started.json()["conversation"]

    await sign_in(visitor, "alice")
    detail = (await visitor.get(f"/api/conversations/{conversation}")).json()
    files = detail["messages"][0]["attachments"]
    assert [f["id"] for f in files] == [new, hers]
    for file in files:
        assert (await visitor.get(file["url"])).status_code == 200
