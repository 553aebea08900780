"""Regenerate, edit and the versions of a turn on the page, in a real browser against the
live demo server. The demo model's reply echoes the message, so an edited message has a
reply of its own; a regenerated one is the same text unless it is stopped part way."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from chat.llm.demo import demo_reply
from tests.browser.conftest import LiveServer
from tests.browser.test_chat_page import (
    conversation_id,
    eventually,
    last_reply,
    partial_reply,
    send,
)

pytestmark = pytest.mark.browser


def finished(page: Page, text: str) -> None:
    send(page, text)
    expect(last_reply(page)).to_have_attribute("data-state", "completed")


def versions(page: Page) -> Locator:
    return last_reply(page).get_by_role("group", name="Versions")


def current_pairs(server: LiveServer, conversation: str) -> list[tuple[str, str]]:
    """The conversation as the model will see it next: rows no newer version replaced."""
    return [
        (row["role"], row["content"])
        for row in server.messages(conversation)
        if row["superseded_at"] is None
    ]


def selects(page: Page) -> list[str]:
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url) if r.url.endswith("/select") else None)
    return urls


def test_regenerate_makes_a_second_version_and_the_switch_shows_each(
    page: Page, chat_server: LiveServer
) -> None:
    page.goto("/")
    finished(page, "First question")
    finished(page, "Tell me about plums")
    conversation = conversation_id(page)
    first_reply = page.locator(".message-assistant").first
    # Only the last turn can change.
    expect(first_reply.get_by_role("button", name="Regenerate")).to_have_count(0)
    expect(page.locator(".message-user").first.get_by_role("button", name="Edit")).to_have_count(0)
    expect(versions(page)).to_have_count(0)  # one version: no switch

    last_reply(page).get_by_role("button", name="Regenerate").click()
    partial_reply(page)  # the new version streams in place of the old
    page.get_by_role("button", name="Stop").click()
    expect(last_reply(page)).to_have_attribute("data-state", "cancelled")
    expect(versions(page)).to_contain_text("2/2")
    expect(last_reply(page)).to_contain_text("Stopped")
    stopped = last_reply(page).locator(".markdown").text_content()
    full = demo_reply("Tell me about plums")

    rows = chat_server.messages(conversation)
    assert [(r["role"], r["status"]) for r in rows] == [
        ("user", "completed"),
        ("assistant", "completed"),
        ("user", "completed"),
        ("assistant", "completed"),
        ("user", "completed"),
        ("assistant", "cancelled"),
    ]
    old_user, old_reply, new_user, new_reply = rows[2:]
    assert new_user["content"] == old_user["content"] == "Tell me about plums"
    assert new_user["version_of_id"] == old_user["id"]
    assert new_reply["version_of_id"] == old_reply["id"]
    assert old_reply["superseded_at"] and new_reply["superseded_at"] is None
    assert full.startswith(new_reply["content"]) and new_reply["content"] != full
    # The regenerated reply called the model once, like any turn.
    finished_line = f"turn finished message={new_reply['id']} "
    assert eventually(lambda: finished_line in chat_server.log_text())
    assert chat_server.log_text().count(finished_line) == 1

    # Back to version 1: the whole first reply, and it is the context again.
    chosen = selects(page)
    versions(page).get_by_role("button", name="Previous version").click()
    expect(versions(page)).to_contain_text("1/2")
    expect(last_reply(page)).to_have_attribute("data-state", "completed")
    expect(last_reply(page).locator("ol > li")).to_have_count(3)
    expect(last_reply(page)).not_to_contain_text("Stopped")
    expect(versions(page).get_by_role("button", name="Previous version")).to_be_disabled()
    assert eventually(lambda: current_pairs(chat_server, conversation)[-1][1] == full)
    assert chosen == [f"{chat_server.url}/api/messages/{old_reply['id']}/select"]

    versions(page).get_by_role("button", name="Next version").click()
    expect(versions(page)).to_contain_text("2/2")
    expect(last_reply(page)).to_contain_text("Stopped")
    assert last_reply(page).locator(".markdown").text_content() == stopped
    partial = new_reply["content"]
    assert eventually(lambda: current_pairs(chat_server, conversation)[-1][1] == partial)

    # A reload shows the current version and still knows the other.
    page.reload()
    expect(versions(page)).to_contain_text("2/2")
    expect(last_reply(page)).to_contain_text("Stopped")
    versions(page).get_by_role("button", name="Previous version").click()
    expect(versions(page)).to_contain_text("1/2")
    expect(last_reply(page).locator("ol > li")).to_have_count(3)


def test_edit_the_last_message_in_place(page: Page, chat_server: LiveServer) -> None:
    page.goto("/")
    finished(page, "Pears are green")  # its id is not known on the page yet: found on Edit
    conversation = conversation_id(page)
    user = page.locator(".message-user").last

    user.get_by_role("button", name="Edit").click()
    box = user.get_by_role("textbox", name="Edit your message")
    expect(box).to_be_focused()
    expect(box).to_have_value("Pears are green")
    box.fill("Not this")
    box.press("Escape")  # cancels, and is not the page's Esc
    expect(box).to_have_count(0)
    expect(user.locator(".bubble")).to_have_text("Pears are green")
    expect(user.get_by_role("button", name="Edit")).to_be_focused()
    assert len(chat_server.messages(conversation)) == 2

    user.get_by_role("button", name="Edit").click()
    box.fill("   ")
    user.get_by_role("button", name="Save").click()
    expect(user.get_by_role("alert")).to_have_text("A message needs some text.")
    box.fill("Pears are yellow")
    box.press("Enter")
    expect(box).to_have_count(0)
    expect(user.locator(".bubble")).to_have_text("Pears are yellow")
    expect(last_reply(page)).to_have_attribute("data-state", "completed")
    expect(last_reply(page).locator("blockquote")).to_have_text("Pears are yellow")
    expect(versions(page)).to_contain_text("2/2")

    rows = chat_server.messages(conversation)
    assert [(r["role"], r["content"][:16]) for r in rows] == [
        ("user", "Pears are green"),
        ("assistant", "**Offline demo m"),
        ("user", "Pears are yellow"),
        ("assistant", "**Offline demo m"),
    ]
    assert rows[3]["content"] == demo_reply("Pears are yellow")
    assert rows[2]["version_of_id"] == rows[0]["id"] and rows[0]["superseded_at"]
    assert current_pairs(chat_server, conversation) == [
        ("user", "Pears are yellow"),
        ("assistant", demo_reply("Pears are yellow")),
    ]

    # The switch shows each version's message and reply together.
    versions(page).get_by_role("button", name="Previous version").click()
    expect(user.locator(".bubble")).to_have_text("Pears are green")
    expect(last_reply(page).locator("blockquote")).to_have_text("Pears are green")
    expect(versions(page)).to_contain_text("1/2")
    versions(page).get_by_role("button", name="Next version").click()
    expect(user.locator(".bubble")).to_have_text("Pears are yellow")
    expect(last_reply(page).locator("blockquote")).to_have_text("Pears are yellow")

    # The next message is answered from the version shown.
    versions(page).get_by_role("button", name="Previous version").click()
    expect(versions(page)).to_contain_text("1/2")
    finished(page, "And their season?")
    assert current_pairs(chat_server, conversation) == [
        ("user", "Pears are green"),
        ("assistant", demo_reply("Pears are green")),
        ("user", "And their season?"),
        ("assistant", demo_reply("And their season?")),
    ]


def test_an_earlier_turns_versions_can_be_seen_but_not_chosen(
    page: Page, chat_server: LiveServer
) -> None:
    page.goto("/")
    finished(page, "Apples are sweet")
    conversation = conversation_id(page)
    first_user = page.locator(".message-user").first
    first_user.get_by_role("button", name="Edit").click()
    first_user.get_by_role("textbox", name="Edit your message").fill("Apples are sour")
    first_user.get_by_role("button", name="Save").click()
    expect(versions(page)).to_contain_text("2/2")
    expect(last_reply(page)).to_have_attribute("data-state", "completed")
    finished(page, "Which ones are best?")
    before = current_pairs(chat_server, conversation)
    chosen = selects(page)

    first_reply = page.locator(".message-assistant").first
    switch = first_reply.get_by_role("group", name="Versions")
    expect(switch).to_contain_text("2/2")
    expect(first_reply.get_by_role("button", name="Regenerate")).to_have_count(0)
    expect(first_user.get_by_role("button", name="Edit")).to_have_count(0)
    switch.get_by_role("button", name="Previous version").click()
    expect(switch).to_contain_text("1/2")
    expect(first_user.locator(".bubble")).to_have_text("Apples are sweet")
    expect(first_reply.locator("blockquote")).to_have_text("Apples are sweet")
    # Looking is all: nothing was asked of the server, the context is as it was.
    expect(first_reply.get_by_role("button", name="Regenerate")).to_have_count(0)
    assert chosen == []
    assert current_pairs(chat_server, conversation) == before


def test_a_stale_tab_is_told_the_turn_is_no_longer_the_last(
    page: Page, chat_server: LiveServer
) -> None:
    page.goto("/")
    finished(page, "Two tabs")
    conversation = conversation_id(page)
    other: Any = page.context.new_page()
    other.goto(f"/#{conversation}")
    expect(other.locator(".message-assistant")).to_have_attribute("data-state", "completed")
    finished(other, "Said in the other tab")
    other.close()

    last_reply(page).get_by_role("button", name="Regenerate").click()
    notice = last_reply(page).get_by_role("alert")
    expect(notice).to_contain_text("Only the last turn can change")
    expect(versions(page)).to_have_count(0)
    assert len(chat_server.messages(conversation)) == 4  # nothing new was written
    page.reload()
    expect(page.locator(".message-user .bubble")).to_have_text(
        ["Two tabs", "Said in the other tab"]
    )
    expect(
        page.locator(".message-assistant").first.get_by_role("button", name="Regenerate")
    ).to_have_count(0)
    expect(last_reply(page).get_by_role("button", name="Regenerate")).to_be_visible()
