"""People signing in and out in a real browser: with a password, through single sign-on to
a real OpenID Connect provider, and bringing their anonymous conversations along."""

from __future__ import annotations

import re
import sqlite3
import uuid

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Identity, LiveServer

pytestmark = pytest.mark.browser

PASSWORD = "a long, unusual passphrase 42"


def send(page: Page, text: str) -> None:
    box = page.get_by_label("Message", exact=True)
    box.fill(text)
    box.press("Enter")


def sign_in_with_password(page: Page, login: str) -> None:
    page.locator("#id_login").fill(login)
    page.locator("#id_password").fill(PASSWORD)
    page.get_by_role("button", name="Sign In").click()


def test_sign_in_chat_and_sign_out(
    sign_in_page: Page, sign_in_server: tuple[LiveServer, Identity]
) -> None:
    server, _ = sign_in_server
    page = sign_in_page
    server.create_user("erin", PASSWORD, "erin@example.com")
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))
    expect(page.get_by_role("heading", name="Sign In")).to_be_visible()
    expect(page.get_by_role("link", name="Sign in with Example SSO")).to_be_visible()
    expect(page.get_by_text("Sign up")).to_have_count(0)  # closed by default

    sign_in_with_password(page, "erin")
    expect(page).to_have_url(server.url + "/")
    expect(page.locator("#account-name")).to_have_text("erin")
    expect(page.locator("#budget")).to_contain_text("$0.00 of $5.00 this month")

    send(page, "hello as erin")
    reply = page.locator(".message-assistant").last
    expect(reply).to_have_attribute("data-state", "completed")
    owner = server.rows(
        "SELECT u.username FROM chat_conversation c JOIN auth_user u ON u.id = c.owner_id "
        "WHERE c.title = ?",
        "hello as erin",
    )
    assert [row["username"] for row in owner] == ["erin"]

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))
    refused = page.request.post(
        "/api/chat", data={"message": "still there?"}, headers={"Content-Type": "application/json"}
    )
    assert refused.status == 401
    assert refused.json()["error"]["type"] == "authentication_required"
    listed = page.request.get("/api/conversations")
    assert listed.status == 401


def test_sign_in_returns_to_the_conversation_asked_for(
    sign_in_page: Page, sign_in_server: tuple[LiveServer, Identity]
) -> None:
    server, _ = sign_in_server
    page = sign_in_page
    server.create_user("frank", PASSWORD)
    page.goto("/")
    sign_in_with_password(page, "frank")
    send(page, "keep this one")
    expect(page.locator(".message-assistant").last).to_have_attribute("data-state", "completed")
    page.wait_for_url(re.compile(r"#[0-9a-f-]{36}$"))
    link = page.url
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/accounts/login/"))

    page.goto(link)  # a bookmark to the conversation, while signed out
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/#"))
    sign_in_with_password(page, "frank")
    expect(page).to_have_url(link)
    expect(page.locator(".message-user .bubble")).to_have_text("keep this one")


def test_single_sign_on_creates_the_person_and_finds_them_again(
    sign_in_page: Page, sign_in_server: tuple[LiveServer, Identity]
) -> None:
    server, _ = sign_in_server
    page = sign_in_page
    email = f"dana-{uuid.uuid4().hex[:6]}@example.com"
    for _ in range(2):
        page.goto("/")
        page.get_by_role("link", name="Sign in with Example SSO").click()
        page.get_by_role("button", name="Continue").click()  # allauth: sign in by POST
        # The identity provider's own screens (oidc-provider's development interactions).
        page.locator('input[name="login"]').fill(email)
        page.locator('input[name="password"]').fill("anything")
        page.locator('button[type="submit"]').click()
        consent = page.locator("h1", has_text="Authorize")
        expect(consent.or_(page.locator("#account-name"))).to_be_visible()
        if consent.count():
            page.locator('button[type="submit"]').click()  # consent to share the profile
        expect(page).to_have_url(server.url + "/")
        expect(page.locator("#account-name")).to_contain_text(re.compile("dana", re.I))
        page.get_by_role("button", name="Sign out").click()
        expect(page).to_have_url(re.compile(r"/accounts/login/"))
        # Signed out of the provider too, so the second time goes through its screens.
        page.context.clear_cookies()
    people = server.rows(
        "SELECT u.id, u.email, s.provider, s.uid FROM auth_user u "
        "JOIN socialaccount_socialaccount s ON s.user_id = u.id WHERE u.email = ?",
        email,
    )
    assert len(people) == 1  # the second sign-in found the account the first one made
    assert people[0]["provider"] == "sso" and people[0]["uid"] == email


def test_anonymous_conversations_are_kept_when_signing_in(
    page: Page, chat_server: LiveServer
) -> None:
    chat_server.create_user("gina", PASSWORD)
    page.goto("/")
    send(page, "started before signing in")
    expect(page.locator(".message-assistant").last).to_have_attribute("data-state", "completed")
    page.wait_for_url(re.compile(r"#[0-9a-f-]{36}$"))
    conversation = page.url.rsplit("#", 1)[1]

    page.get_by_role("link", name="Sign in").click()
    sign_in_with_password(page, "gina")
    expect(page.locator("#account-name")).to_have_text("gina")
    expect(page.locator("#conversation-list a")).to_contain_text(["started before signing in"])
    owner = chat_server.rows(
        "SELECT u.username FROM chat_conversation c JOIN auth_user u ON u.id = c.owner_id "
        "WHERE c.id = ?",
        conversation.replace("-", ""),
    )
    assert [row["username"] for row in owner] == ["gina"]


def test_a_reached_budget_is_said_plainly_and_nothing_is_sent(
    sign_in_page: Page, sign_in_server: tuple[LiveServer, Identity]
) -> None:
    server, _ = sign_in_server
    page = sign_in_page
    server.create_user("hugo", PASSWORD)
    # An admin gave Hugo a budget of nothing (the chat_budget row the admin's inline writes).
    with sqlite3.connect(server.database) as connection:
        connection.execute(
            "INSERT INTO chat_budget (user_id, limit_usd, unlimited, updated_at) "
            "SELECT id, 0, 0, CURRENT_TIMESTAMP FROM auth_user WHERE username = 'hugo'"
        )
    page.goto("/")
    sign_in_with_password(page, "hugo")
    expect(page.locator("#budget")).to_contain_text("Budget reached: $0.00 of $0.00 this month")
    expect(page.locator("#budget")).to_have_class(re.compile("budget-exceeded"))

    send(page, "anything?")
    failure = page.locator(".message-assistant").last
    expect(failure).to_contain_text("Budget reached")
    expect(failure).to_contain_text("is used up")
    expect(failure.get_by_role("button", name="Retry")).to_have_count(0)
    assert (
        server.rows(
            "SELECT m.id FROM chat_message m JOIN chat_conversation c ON c.id = m.conversation_id "
            "JOIN auth_user u ON u.id = c.owner_id WHERE u.username = 'hugo'"
        )
        == []
    )
