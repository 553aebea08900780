"""What a new user sees first (issue 25), in a real browser against the demo server: the
phone header with a long title, touch targets, code blocks with their language and
colours, search hits marked in plain text, the list by day, nothing moving when a reply
ends or a title is renamed, and a Markdown export taken while a reply is written."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import LiveServer
from tests.browser.test_accessibility import PHONE, screen
from tests.browser.test_chat_page import conversation_id, last_reply, partial_reply, send
from tests.browser.test_versions_page import finished

pytestmark = pytest.mark.browser

LONG = (
    "Please explain, step by step and with plenty of examples, how a guidance computer "
    "schedules its jobs when the radar overloads it"
)


def box(page: Page, selector: str) -> dict[str, float]:
    found = page.locator(selector).first.bounding_box()
    assert found is not None, selector
    return found


def test_the_phone_header_keeps_its_buttons_with_a_long_title(
    browser: Any, chat_server: LiveServer
) -> None:
    with screen(browser, chat_server.url, PHONE, "light") as page:
        page.goto("/")
        finished(page, LONG)
        expect(page.locator("#title")).to_have_text(re.compile(f"^{LONG[:40]}.*…$"))
        menu = box(page, "#sidebar-open")
        actions = box(page, "#title-actions")
        model = page.locator("#model")
        # ☰ and ⋯ at full size, the model's name whole; the title is what is cut.
        assert menu["width"] >= 44 and menu["height"] >= 44, menu
        assert actions["width"] >= 44 and actions["height"] >= 44, actions
        assert model.evaluate("m => m.scrollWidth <= m.clientWidth + 1")
        assert box(page, "#model")["width"] >= 100
        title = page.locator("#title")
        assert title.evaluate("t => t.scrollWidth > t.clientWidth")  # cut with an ellipsis
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        right = box(page, "#model")
        assert right["x"] + right["width"] <= PHONE["width"]


def test_touch_targets_on_a_phone_are_44_px(browser: Any, chat_server: LiveServer) -> None:
    with screen(browser, chat_server.url, PHONE, "dark") as page:
        page.goto("/")
        finished(page, "Touch targets")
        last_reply(page).get_by_role("button", name="Regenerate").click()
        expect(last_reply(page)).to_have_attribute("data-state", "completed")
        targets = {
            "banner ✕": page.get_by_role("button", name="Hide this notice"),
            "Copy reply": page.get_by_role("button", name="Copy reply as markdown"),
            "Copy code": page.get_by_role("button", name="Copy code"),
            "Regenerate": page.get_by_role("button", name="Regenerate"),
            "‹": page.get_by_role("button", name="Previous version"),
            "›": page.get_by_role("button", name="Next version"),
            "Attach": page.get_by_role("button", name="Attach files"),
        }
        for name, target in targets.items():
            size = target.bounding_box()
            assert size is not None and size["width"] >= 44 and size["height"] >= 44, (name, size)


def test_a_code_block_has_its_language_and_colours(page: Page) -> None:
    page.goto("/")
    finished(page, "Show me code")
    block = last_reply(page).locator(".code-block")
    expect(block.locator(".code-lang")).to_have_text("Python")
    code = block.locator("pre code")
    expect(code).to_have_class(re.compile(r"\bhljs\b.*\blanguage-python\b"))
    expect(code).to_have_text('print("Grüße, 世界 👋")\n')
    # The function and the string are coloured apart from each other and the plain text.
    colours = code.evaluate(
        """c => [c, c.querySelector('.hljs-built_in'), c.querySelector('.hljs-string')]
              .map(e => getComputedStyle(e).color)"""
    )
    assert len(set(colours)) == 3, colours


def test_code_a_model_writes_stays_text_when_highlighted(page: Page) -> None:
    # The demo echoes the message in a quote: a fenced block of markup inside it.
    page.goto("/")
    page.evaluate("window.__ran = false")
    finished(
        page,
        '```html\n<img src=x onerror="window.__ran = true"><script>window.__ran=true</script>\n```',
    )
    code = last_reply(page).locator("blockquote .code-block code")
    expect(code).to_contain_text('<img src=x onerror="window.__ran = true">')
    expect(last_reply(page).locator(".code-lang").first).to_have_text("HTML, XML")
    assert last_reply(page).locator("img, script").count() == 0
    assert code.locator("span").count() > 0  # highlighted: spans, and only spans
    assert code.evaluate("c => [...c.querySelectorAll('*')].every(e => e.tagName === 'SPAN')")
    assert page.evaluate("window.__ran") is False


def test_search_marks_the_words_in_a_plain_text_snippet(page: Page) -> None:
    page.goto("/")
    finished(page, "Tell me about **sourdough** starters")
    page.get_by_role("searchbox", name="Search conversations").fill("sourdough")
    hit = page.locator("#conversation-list li").filter(has_text="sourdough").first
    marks = hit.locator("mark")
    expect(marks.first).to_have_text(re.compile("^sourdough$", re.I))
    snippet = hit.locator(".conversation-snippet")
    text = snippet.text_content() or ""
    assert "**" not in text and ">" not in text, text
    # It starts at a word (after "…"), a word the reply has.
    first = text.removeprefix("…").split()[0]
    assert re.fullmatch(r"[\w“”\"'(—-]+[.,:;!?]?", first), first
    expect(snippet.locator("mark")).to_have_text(["sourdough"])
    # Within the two lines the list shows of the snippet, not cut off after them.
    shown, mark = box(page, ".conversation-snippet"), box(page, ".conversation-snippet mark")
    assert mark["y"] + mark["height"] <= shown["y"] + shown["height"] + 1, (shown, mark)


def test_the_list_is_grouped_by_day(page: Page, chat_server: LiveServer) -> None:
    page.goto("/")
    finished(page, "Written today")
    now = datetime.now(UTC)
    for text, days in [
        ("Written yesterday", 1),
        ("Written last week", 3),
        ("Written long ago", 40),
    ]:
        page.get_by_role("button", name="New chat").click()
        finished(page, text)
        when = (now - timedelta(days=days)).strftime("%Y-%m-%d %H:%M:%S.%f")
        chat_server.rows(
            "UPDATE chat_conversation SET updated_at = ? WHERE id = ?",
            when,
            conversation_id(page).replace("-", ""),
        )
    page.reload()
    groups = page.locator("#conversation-list .conversation-group-title")
    expect(groups).to_have_text(["Today", "Yesterday", "Previous 7 days", "Earlier"])
    for group, title in [
        ("Yesterday", "Written yesterday"),
        ("Previous 7 days", "Written last week"),
        ("Earlier", "Written long ago"),
    ]:
        following = page.locator(
            f"#conversation-list li:has(h3:text-is('{group}')) + li .conversation-title"
        )
        expect(following).to_have_text(title)


def test_the_version_switch_stays_put_when_the_reply_ends(page: Page) -> None:
    page.goto("/")
    finished(page, "Switch position")
    last_reply(page).get_by_role("button", name="Regenerate").click()
    partial_reply(page)
    switch = last_reply(page).get_by_role("group", name="Versions")
    while_streaming = switch.bounding_box()
    expect(last_reply(page)).to_have_attribute("data-state", "completed")
    expect(last_reply(page).locator(".details")).to_contain_text("total")
    after = switch.bounding_box()
    assert while_streaming is not None and after is not None
    assert abs(after["x"] - while_streaming["x"]) < 1, (while_streaming, after)


def test_renaming_in_the_list_moves_nothing_below(page: Page) -> None:
    page.goto("/")
    finished(page, "Older conversation")
    page.get_by_role("button", name="New chat").click()
    finished(page, "Rename me in place")
    items = page.locator("#conversation-list li.conversation")
    # bounding_box() answers None for an item not shown yet: read once it is.
    expect(items.nth(1)).to_be_visible()
    below = items.nth(1).bounding_box()
    items.first.get_by_role("button", name="Actions for “Rename me in place”").click()
    page.get_by_role("menuitem", name="Rename").click()
    expect(page.get_by_role("textbox", name="Conversation title")).to_be_focused()
    expect(items.nth(1)).to_be_visible()
    during = items.nth(1).bounding_box()
    assert below is not None and during is not None
    assert abs(during["y"] - below["y"]) < 1, (below, during)


def test_a_markdown_export_during_a_reply_has_the_text_on_screen(page: Page) -> None:
    page.goto("/")
    send(page, "Export me while you write")
    shown = partial_reply(page)
    page.get_by_role("button", name="Actions for this conversation").click()
    with page.expect_download() as download:
        page.get_by_role("menuitem", name="Export as Markdown").click()
    text = Path(download.value.path()).read_text()
    assert download.value.suggested_filename.endswith(".md")
    assert "*(no text)*" not in text
    assert shown.strip()[:30] in " ".join(text.split())
    assert "*(still being written when exported)*" in text
