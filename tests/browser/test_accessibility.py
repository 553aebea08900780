"""Accessibility checked by a machine and by the keyboard: axe-core finds no serious or
critical violation on the chat page (empty, with a conversation, with its menus open; on a
desktop and a phone; light and dark) or the sign-in pages; every control is reached by Tab
with its focus visible; a streaming reply is announced politely, once, not delta by delta.
The admin's usage dashboard is checked in test_admin_lists.py, with the admin's server."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.axe import assert_accessible
from tests.browser.conftest import Identity, LiveServer
from tests.browser.test_versions_page import finished

pytestmark = pytest.mark.browser

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
SCREENS = [
    pytest.param(DESKTOP, "light", id="desktop-light"),
    pytest.param(DESKTOP, "dark", id="desktop-dark"),
    pytest.param(PHONE, "light", id="phone-light"),
    pytest.param(PHONE, "dark", id="phone-dark"),
]


@contextlib.contextmanager
def screen(browser: Any, url: str, viewport: dict[str, int], scheme: str) -> Iterator[Page]:
    context = browser.new_context(base_url=url, viewport=viewport, color_scheme=scheme)
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.mark.parametrize(("viewport", "scheme"), SCREENS)
def test_the_chat_page_has_no_serious_violation(
    browser: Any, chat_server: LiveServer, viewport: dict[str, int], scheme: str
) -> None:
    with screen(browser, chat_server.url, viewport, scheme) as page:
        page.goto("/")
        expect(page.get_by_label("Message", exact=True)).to_be_enabled()
        assert_accessible(page, "empty chat page")

        finished(page, "Show me some code, with **markdown**")
        assert_accessible(page, "with a conversation")

        if viewport is PHONE:  # the conversation list is a drawer behind ☰
            page.get_by_role("button", name="Show conversations").click()
            expect(page.locator("#sidebar")).to_be_visible()
            assert_accessible(page, "conversation list open")
            page.keyboard.press("Escape")
        page.get_by_role("button", name="Actions for this conversation").click()
        expect(page.get_by_role("menu")).to_be_visible()
        assert_accessible(page, "conversation menu open")
        page.keyboard.press("Escape")

        if viewport is DESKTOP:  # a search, with its words marked
            page.get_by_role("searchbox", name="Search conversations").fill("markdown")
            expect(page.locator("#conversation-list mark").first).to_be_visible()
            assert_accessible(page, "search results")


@pytest.mark.parametrize(("viewport", "scheme"), SCREENS)
def test_the_sign_in_pages_have_no_serious_violation(
    browser: Any,
    sign_in_server: tuple[LiveServer, Identity],
    viewport: dict[str, int],
    scheme: str,
) -> None:
    server, _ = sign_in_server
    with screen(browser, server.url, viewport, scheme) as page:
        page.goto("/")
        expect(page).to_have_url(re.compile(r"/accounts/login/"))
        assert_accessible(page, "sign-in page")
        page.locator("#id_login").fill("nobody@example.com")
        page.locator("#id_password").fill("not the password")
        page.get_by_role("button", name="Sign In").click()
        expect(page.locator(".errorlist, [role=alert]").first).to_be_visible()
        assert_accessible(page, "sign-in page with an error")
        page.goto("/accounts/password/reset/")
        assert_accessible(page, "password reset page")


# What Tab must reach on the chat page, by accessible name, with a conversation open.
CONTROLS = [
    "Skip to message box",
    "New chat",
    "Search conversations",
    "Actions for this conversation",
    "Model",
    "Hide this notice",
    "Attach files",
    "Message",
    "Send",
    "Regenerate",
    "Copy reply as markdown",
    "Copy code",
    "Edit",
    "Sign in",
]

FOCUSED = """() => {
  const el = document.activeElement;
  const style = getComputedStyle(el);
  const name = el.getAttribute("aria-label")
    || (el.labels && el.labels[0] && el.labels[0].textContent.trim())
    || el.textContent.trim();
  const outline = style.outlineStyle !== "none" && parseFloat(style.outlineWidth) > 0;
  return {name, tag: el.tagName, visible: outline || style.boxShadow !== "none"};
}"""


def test_every_control_is_reached_by_tab_with_its_focus_visible(
    page: Page, chat_server: LiveServer
) -> None:
    page.goto("/")
    finished(page, "Keyboard only")
    page.locator("body").click(position={"x": 5, "y": 790})  # focus back at the page
    page.evaluate("document.activeElement.blur()")
    reached = []
    for _ in range(60):
        page.keyboard.press("Tab")
        focused = page.evaluate(FOCUSED)
        if focused["tag"] == "BODY":
            continue
        reached.append(focused["name"])
        assert focused["visible"], f"no visible focus on {focused}"
    missing = [name for name in CONTROLS if not any(name in seen for seen in reached)]
    assert not missing, f"Tab never reached {missing}; it reached {reached}"

    # Operable: the conversation menu opens with Enter, its items by arrow keys, Esc closes.
    actions = page.get_by_role("button", name="Actions for this conversation")
    actions.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("menuitem", name="Rename")).to_be_focused()
    page.keyboard.press("ArrowDown")
    expect(page.get_by_role("menuitem", name="Export as Markdown")).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.get_by_role("menu")).to_be_hidden()
    expect(actions).to_be_focused()


# Every change to a live region of the page while a reply streams, and the regions
# themselves (a region holding the transcript would read each redraw).
RECORD_ANNOUNCEMENTS = """() => {
  window.__said = [];
  const live = [...document.querySelectorAll('[aria-live], [role=log], [role=status]')];
  window.__liveHoldsTranscript = live.some((r) => r.contains(document.getElementById("messages")))
    || Boolean(document.querySelector('#messages [aria-live], #messages[role=log]'));
  for (const region of live) {
    new MutationObserver(() => window.__said.push(region.textContent.trim()))
      .observe(region, {childList: true, subtree: true, characterData: true});
  }
}"""


def test_a_streaming_reply_is_announced_politely_once(page: Page, chat_server: LiveServer) -> None:
    page.goto("/")
    expect(page.locator("#announcer")).to_have_attribute("aria-live", "polite")
    page.evaluate(RECORD_ANNOUNCEMENTS)
    finished(page, "Announce this reply")
    assert page.evaluate("window.__liveHoldsTranscript") is False
    said = [text for text in page.evaluate("window.__said") if text]
    deltas = page.evaluate("document.querySelector('.message-assistant .markdown').textContent")
    assert len(deltas) > 200  # a reply of many deltas ...
    assert said[0] == "Sent. The assistant is thinking."
    assert "The assistant is replying." in said
    # ... read out once, whole, as text (no markdown marks), when it ends.
    assert said[-1].startswith("Reply finished. Offline demo model — no API key")
    assert "**" not in said[-1] and "Announce this reply" in said[-1]
    assert len(said) <= 4, said
