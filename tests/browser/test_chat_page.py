"""The chat page in a real browser, against a live server answering with the demo model."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from chat.llm.demo import demo_reply
from chat.streams import sse_event
from tests.browser.conftest import MAX_MESSAGE_CHARS, MODELS, LiveServer

pytestmark = pytest.mark.browser

FINAL = re.compile(r"^(completed|cancelled|incomplete|failed)$")

# Every data-state an assistant message goes through, recorded as it happens (a poll
# could miss the short "thinking" state).
RECORD_STATES = """() => {
  window.__states = [];
  new MutationObserver((records) => {
    for (const r of records) window.__states.push(r.target.dataset.state);
  }).observe(document.getElementById("messages"), {
    subtree: true, attributes: true, attributeFilter: ["data-state"],
  });
}"""

# The text of the newest reply, once some but not all of it has arrived.
PARTIAL_REPLY = """() => {
  const reply = [...document.querySelectorAll(".message-assistant")].pop();
  const text = reply?.querySelector(".markdown").textContent ?? "";
  return reply?.dataset.state === "streaming" && text.length > 0 && text;
}"""


def send(page: Page, text: str) -> None:
    box = page.get_by_label("Message", exact=True)
    box.fill(text)
    box.press("Enter")


def last_reply(page: Page) -> Locator:
    return page.locator(".message-assistant").last


def partial_reply(page: Page) -> str:
    return page.wait_for_function(PARTIAL_REPLY).json_value()


def conversation_id(page: Page) -> str:
    page.wait_for_url(re.compile(r"#[0-9a-f-]{36}$"))
    return page.url.rsplit("#", 1)[1]


def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll a condition the server settles on its own schedule (rows, log lines)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_reply_streams_token_by_token_and_renders_markdown(
    page: Page, chat_server: LiveServer
) -> None:
    page.goto("/")
    expect(page.get_by_role("note")).to_contain_text("Offline demo model")
    page.evaluate(RECORD_STATES)
    box = page.get_by_label("Message", exact=True)
    box.press_sequentially("line one")
    box.press("Shift+Enter")  # a new line, not a send
    box.press_sequentially("line two")
    box.press("Enter")

    partial = partial_reply(page)
    expect(page.get_by_role("button", name="Stop")).to_be_visible()
    reply = last_reply(page)
    expect(reply).to_have_attribute("data-state", "completed")
    full = reply.locator(".markdown").text_content()
    # Seen mid-stream: a prefix of the reply (its markdown may still be unclosed, "**Off").
    assert "Off" in partial and len(partial) < len(full)
    states = page.evaluate("window.__states")
    assert states[0] == "thinking" and "streaming" in states and states[-1] == "completed"

    # The model's markdown is rendered: bold, a quote with line breaks, a list, code.
    expect(page.locator(".message-user .bubble")).to_have_text("line one\nline two")
    expect(reply.locator("strong").first).to_have_text("Offline demo model")
    expect(reply.locator("blockquote")).to_have_text(re.compile(r"line one\s*line two"))
    expect(reply.locator("ol > li")).to_have_count(3)
    expect(reply.locator("pre code")).to_contain_text('print("Grüße, 世界 👋")')
    expect(reply.locator(".details")).to_contain_text("offline-demo")
    expect(reply.locator(".details")).to_contain_text(re.compile(r"\d+ in · \d+ out"))
    expect(reply.locator(".details")).to_contain_text("first token")
    expect(page.get_by_role("button", name="Send")).to_be_visible()

    user, assistant = chat_server.messages(conversation_id(page))
    assert user["role"] == "user" and user["content"] == "line one\nline two"
    assert assistant["status"] == "completed"
    assert assistant["content"] == demo_reply("line one\nline two")
    expect(page.locator("#conversation-list a")).to_contain_text("line one line two")


def test_stop_keeps_the_partial_reply_as_cancelled(page: Page, chat_server: LiveServer) -> None:
    page.goto("/")
    send(page, "Write something long")
    partial_reply(page)
    page.get_by_role("button", name="Stop").click()

    reply = last_reply(page)
    expect(reply).to_have_attribute("data-state", "cancelled")
    expect(reply).to_contain_text("Stopped")
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    _, assistant = chat_server.messages(conversation_id(page))
    assert assistant["status"] == "cancelled" and assistant["finished_at"]
    full = demo_reply("Write something long")
    assert assistant["content"] and len(assistant["content"]) < len(full)
    assert full.startswith(assistant["content"])


def test_reload_mid_reply_lets_the_reply_go_on_to_its_end(
    page: Page, chat_server: LiveServer
) -> None:
    page.goto("/")
    send(page, "Reload me")
    partial = partial_reply(page)
    conversation = conversation_id(page)
    [message_id] = [row["id"] for row in chat_server.messages(conversation)][1:]

    page.reload()

    reply = last_reply(page)
    expect(reply).to_have_attribute("data-state", "completed", timeout=30_000)
    rows = chat_server.messages(conversation)
    assert [row["role"] for row in rows] == ["user", "assistant"]
    assistant = rows[1]
    full = demo_reply("Reload me")
    assert assistant["id"] == message_id and assistant["status"] == "completed"
    assert assistant["content"] == full and len(partial) < len(full)
    # The whole reply is on screen (rendered as markdown, so compared word by word).
    # What streamed in after the reload is the whole reply: the same as the stored one
    # rendered from history.
    shown = reply.locator(".markdown").text_content()
    page.reload()
    expect(last_reply(page)).to_have_attribute("data-state", "completed")
    assert shown == last_reply(page).locator(".markdown").text_content()
    # Every model call ends in exactly one "turn finished" log line; a second call (a
    # re-run after the reload) would write a second one.
    finished = f"turn finished message={message_id} "
    assert eventually(lambda: finished in chat_server.log_text())
    assert chat_server.log_text().count(finished) == 1


def test_history_reopens_a_conversation_and_continues_it(
    page: Page, chat_server: LiveServer
) -> None:
    page.goto("/")
    send(page, "Tell me about apples")
    expect(last_reply(page)).to_have_attribute("data-state", "completed")
    first = conversation_id(page)

    page.get_by_role("button", name="New chat").click()
    expect(page.locator(".message")).to_have_count(0)
    page.get_by_label("Model", exact=True).select_option("offline-demo-mini")
    send(page, "Now pears")
    expect(last_reply(page)).to_have_attribute("data-state", "completed")
    expect(last_reply(page).locator(".details")).to_contain_text("offline-demo-mini")
    second = conversation_id(page)
    assert second != first

    links = page.locator("#conversation-list a")
    expect(links).to_have_count(2)
    links.filter(has_text="Tell me about apples").click()
    expect(page).to_have_url(re.compile(f"#{first}$"))
    expect(page.locator(".message-user .bubble")).to_have_text(["Tell me about apples"])
    expect(last_reply(page)).to_have_attribute("data-state", "completed")
    expect(last_reply(page).locator("ol > li")).to_have_count(3)
    expect(page.get_by_label("Model", exact=True)).to_have_value("offline-demo")
    expect(links.filter(has_text="Tell me about apples")).to_have_attribute("aria-current", "page")

    send(page, "And more?")
    expect(page.locator(".message-assistant")).to_have_count(2)
    expect(last_reply(page)).to_have_attribute("data-state", "completed")
    rows = chat_server.messages(first)
    assert [(r["role"], r["content"][:20]) for r in rows[::2]] == [
        ("user", "Tell me about apples"),
        ("user", "And more?"),
    ]
    assert [r["status"] for r in rows[1::2]] == ["completed", "completed"]
    [_, pears] = chat_server.messages(second)
    assert pears["model"] == "offline-demo-mini"


def test_html_in_a_reply_is_shown_as_text_and_never_runs(
    page: Page, chat_server: LiveServer
) -> None:
    prompt = '<img src=x onerror="window.__xss=1"> <script>window.__xss=2</script>'
    page.goto("/")
    send(page, prompt)
    reply = last_reply(page)
    expect(reply).to_have_attribute("data-state", "completed")
    _, assistant = chat_server.messages(conversation_id(page))
    assert prompt in assistant["content"]  # the demo echoed it: the model "said" it

    for _ in range(2):  # as streamed, then as stored history after a reload
        expect(page.locator(".message-user .bubble")).to_have_text(prompt)
        expect(reply.locator("blockquote")).to_have_text(prompt)
        expect(page.locator("#messages img, #messages script")).to_have_count(0)
        assert page.evaluate("window.__xss") is None
        page.reload()
        expect(reply).to_have_attribute("data-state", "completed")


def test_a_refused_message_explains_itself_and_can_be_edited(page: Page) -> None:
    page.goto("/")
    too_long = "x" * (MAX_MESSAGE_CHARS + 1)
    send(page, too_long)
    notice = last_reply(page).get_by_role("alert")
    expect(notice).to_contain_text("That message is too long")
    notice.get_by_role("button", name="Edit message").click()
    expect(page.get_by_label("Message", exact=True)).to_have_value(too_long)
    expect(page.locator(".message")).to_have_count(0)
    expect(page).not_to_have_url(re.compile("#"))


def test_a_failed_reply_is_worded_by_the_status_its_error_carries(
    page: Page, chat_server: LiveServer
) -> None:
    """The model provider's rate limit (429 in `error.http_status`) reads as "busy", live
    and from the stored reply after a reload; the page keeps no table of its own."""
    busy = "The model provider is rate limiting us; try again shortly."

    def rate_limited(route: Any) -> None:
        message = int(route.request.url.rsplit("/", 2)[-2])
        error = {"type": "upstream_rate_limit", "message": busy, "http_status": 429}
        route.fulfill(
            status=200,
            content_type="text/event-stream",
            body=sse_event("start", {"conversation": None, "message": message, "model": MODELS[0]})
            + sse_event("error", {"status": "failed", "error": error, "retry_after": "12"}),
        )

    page.route("**/api/messages/*/stream", rate_limited)
    page.goto("/")
    send(page, "Hello when the provider is busy")
    notice = last_reply(page).get_by_role("alert")
    expect(notice).to_contain_text("The model provider is busy")
    expect(notice).to_contain_text(f"{busy} Try again in 12 seconds.")
    expect(notice.get_by_role("button", name="Retry")).to_be_visible()

    # The turn as the server would have stored it; the reload reads it back.
    _, assistant = chat_server.messages(conversation_id(page))
    with sqlite3.connect(chat_server.database, timeout=20) as connection:
        connection.execute(
            "UPDATE chat_message SET status = 'failed', error_type = 'upstream_rate_limit', "
            "error_message = ?, finished_at = created_at WHERE id = ?",
            (busy, assistant["id"]),
        )
    page.unroute("**/api/messages/*/stream")
    page.reload()
    expect(last_reply(page)).to_have_attribute("data-state", "failed")
    expect(last_reply(page).get_by_role("alert")).to_contain_text("The model provider is busy")


def test_a_lost_stream_is_shown_and_reconnecting_never_posts_again(
    page: Page, chat_server: LiveServer
) -> None:
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    page.route("**/api/messages/*/stream", lambda route: route.abort())
    page.goto("/")
    send(page, "Hello over a bad network")
    notice = last_reply(page).get_by_role("alert")
    expect(notice).to_contain_text("Connection lost")

    page.unroute("**/api/messages/*/stream")
    notice.get_by_role("button", name="Reconnect").click()
    expect(last_reply(page)).to_have_attribute("data-state", "completed")
    assert [url for url in posts if "/api/chat" in url] == [
        f"{chat_server.url}/api/chat?stream=defer"
    ]
    _, assistant = chat_server.messages(conversation_id(page))
    assert assistant["status"] == "completed"
    assert assistant["content"] == demo_reply("Hello over a bad network")


def test_a_dropped_stream_resumes_where_it_was(page: Page, chat_server: LiveServer) -> None:
    opened: list[str] = []

    def drop_the_first(route: Any) -> None:
        """The first stream ends after a few frames, as a network drop ends it."""
        opened.append(route.request.url)
        if len(opened) > 1:
            route.continue_()
            return
        response = route.fetch()
        frames = response.body().split(b"\n\n")
        route.fulfill(response=response, body=b"\n\n".join(frames[:4]) + b"\n\n")

    page.route("**/api/messages/*/stream", drop_the_first)
    page.goto("/")
    send(page, "Keep going through a drop")

    reply = last_reply(page)
    expect(reply).to_have_attribute("data-state", "completed", timeout=30_000)
    conversation = conversation_id(page)
    _, assistant = chat_server.messages(conversation)
    assert assistant["status"] == "completed"
    assert assistant["content"] == demo_reply("Keep going through a drop")
    # The browser reopened the stream on its own (no Reconnect click, no second POST).
    assert len(opened) == 2
    shown = reply.locator(".markdown").text_content()
    page.unroute("**/api/messages/*/stream")
    page.reload()  # the stored reply, rendered from history: the same text
    expect(last_reply(page)).to_have_attribute("data-state", "completed")
    assert shown == last_reply(page).locator(".markdown").text_content()
    finished = f"turn finished message={assistant['id']} "
    assert eventually(lambda: finished in chat_server.log_text())
    assert chat_server.log_text().count(finished) == 1
