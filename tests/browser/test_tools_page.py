"""Thinking and tool cards on the chat page, in a real browser, with the demo model (which
thinks, then calls the `current_time` tool, when asked the time somewhere)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import LiveServer, _browser_page, _free_port, live_server
from tests.browser.test_chat_page import conversation_id, last_reply, send

pytestmark = pytest.mark.browser


def test_thinking_streams_then_folds_and_a_tool_card_shows_the_call(
    page: Page, chat_server: LiveServer
) -> None:
    page.goto("/")
    send(page, "what time is it in Tokyo?")
    reply = last_reply(page)

    # Live: the thinking section is open and fills while the model thinks.
    thinking = reply.locator(".thinking-section").first
    expect(thinking).to_have_attribute("open", "")
    expect(thinking.locator("summary")).to_have_text("Thinking…")
    expect(thinking.locator(".thinking-text")).to_contain_text("The person wants the time")

    expect(reply).to_have_attribute("data-state", "completed")
    # Folded once the tool was called, saying how long it took.
    expect(thinking).not_to_have_attribute("open", "")
    expect(thinking.locator("summary")).to_have_text(re.compile(r"^Thought for \d+(\.\d)? m?s$"))
    card = reply.locator(".tool-card")
    expect(card).to_have_count(1)
    expect(card).to_have_attribute("data-state", "done")
    expect(card.locator("summary")).to_contain_text("current_time")
    expect(card.locator("summary")).to_contain_text(re.compile(r"done in \d+ ms"))
    card.locator("summary").click()
    expect(card.locator(".tool-arguments")).to_have_text('{"timezone": "Tokyo"}')
    expect(card.locator(".tool-output")).to_contain_text('"timezone": "Asia/Tokyo"')
    expect(reply.locator(".markdown")).to_contain_text(re.compile(r"It is \d\d:\d\d in Asia/Tokyo"))
    expect(reply.locator(".details")).to_contain_text(re.compile(r"\d+ out \(\d+ thinking\)"))

    _, assistant = chat_server.messages(conversation_id(page))
    parts = json.loads(assistant["parts"])
    assert [p["type"] for p in parts] == [
        "reasoning",
        "tool_call",
        "tool_result",
        "reasoning",
        "text",
    ]
    assert len(json.loads(assistant["rounds"])) == 2

    # After a reload the stored reply shows the same: folded thinking, the tool card.
    page.reload()
    reply = last_reply(page)
    expect(reply.locator(".markdown")).to_contain_text("Asia/Tokyo")
    expect(reply.locator(".thinking-section")).to_have_count(2)
    expect(reply.locator(".thinking-section").first).not_to_have_attribute("open", "")
    expect(reply.locator(".tool-card")).to_have_attribute("data-state", "done")


@pytest.fixture(scope="module")
def search_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The demo on the Responses API with the hosted web search offered."""
    workdir = tmp_path_factory.mktemp("search")
    with live_server(workdir, _free_port(), CHAT_API="responses", CHAT_WEB_SEARCH="true") as server:
        yield server


@pytest.fixture
def search_page(browser: Any, search_server: LiveServer) -> Iterator[Any]:
    with _browser_page(browser, search_server.url) as page:
        yield page


def test_a_web_search_shows_what_it_searched_and_numbered_sources(
    search_page: Page, search_server: LiveServer
) -> None:
    page = search_page
    page.goto("/")
    send(page, "search the web for django release dates")
    reply = last_reply(page)
    expect(reply).to_have_attribute("data-state", "completed")
    expect(reply.locator(".web-search")).to_have_text("🔎 Searched the web: django release dates")
    source = reply.locator(".sources li a")
    expect(source).to_have_count(1)
    expect(source).to_have_text("Django documentation")
    expect(source).to_have_attribute("href", "https://docs.djangoproject.com/")
    expect(source).to_have_attribute("rel", "noopener noreferrer")
    expect(reply.locator(".markdown")).to_contain_text("cannot search the web")

    _, assistant = search_server.messages(conversation_id(page))
    parts = json.loads(assistant["parts"])
    assert [p["type"] for p in parts] == ["reasoning", "web_search", "text", "citation"]
    page.reload()
    expect(last_reply(page).locator(".sources li a")).to_have_text("Django documentation")
