"""Managing conversations on the page, in a real browser against the live demo server:
rename, delete with Undo, search, export, copying code."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta

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

UNDO_MS = 6000  # chat/static/chat/listing.js


def chat(page: Page, text: str) -> str:
    """A finished turn in a new conversation; its id."""
    page.get_by_role("button", name="New chat").click()
    send(page, text)
    expect(last_reply(page)).to_have_attribute("data-state", "completed")
    return conversation_id(page)


def item(page: Page, title: str) -> Locator:
    return page.locator("#conversation-list li").filter(has_text=title)


def open_menu(page: Page, title: str) -> Locator:
    item(page, title).get_by_role("button", name=f"Actions for “{title}”").click()
    menu = page.get_by_role("menu")
    expect(menu).to_be_visible()
    return menu


def stored(server: LiveServer, conversation: str) -> dict:
    [row] = server.rows(
        "SELECT title, deleted_at FROM chat_conversation WHERE id = ?",
        conversation.replace("-", ""),
    )
    return dict(row)


def api_status(page: Page, path: str) -> int:
    """What the API answers this browser (same cookies, so the same person)."""
    return page.request.get(path).status


def test_rename_in_the_list_saves_on_enter_and_cancels_on_escape(
    page: Page, chat_server: LiveServer
) -> None:
    page.goto("/")
    conversation = chat(page, "Notes about pears")
    link = page.locator(f'#conversation-list a[data-id="{conversation}"]')
    expect(link).to_contain_text("Notes about pears")

    # By keyboard: the ⋯ button, then the menu's first item.
    item(page, "Notes about pears").get_by_role("button").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("menuitem", name="Rename")).to_be_focused()
    page.keyboard.press("Enter")
    box = page.get_by_role("textbox", name="Conversation title")
    expect(box).to_be_focused()
    expect(box).to_have_value("Notes about pears")
    box.fill("Pear varieties")
    box.press("Enter")

    expect(box).to_have_count(0)
    expect(link).to_contain_text("Pear varieties")
    expect(link).to_be_focused()
    expect(page.locator("#title")).to_have_text("Pear varieties")
    assert stored(chat_server, conversation)["title"] == "Pear varieties"

    # Esc puts the old title back and saves nothing.
    open_menu(page, "Pear varieties").get_by_role("menuitem", name="Rename").click()
    box.fill("Not this")
    box.press("Escape")
    expect(box).to_have_count(0)
    expect(link).to_contain_text("Pear varieties")
    assert stored(chat_server, conversation)["title"] == "Pear varieties"
    # That Esc was the box's own: the drawer and the reply are untouched.
    expect(page.locator(".message-assistant")).to_have_attribute("data-state", "completed")

    # The page survives a reload with the new title.
    page.reload()
    expect(link).to_contain_text("Pear varieties")
    expect(page.locator("#title")).to_have_text("Pear varieties")


def test_a_list_refresh_waits_while_a_title_is_being_typed(
    page: Page, chat_server: LiveServer
) -> None:
    page.goto("/")
    conversation = chat(page, "Rename during a reply")
    page.get_by_role("button", name="New chat").click()
    send(page, "A slow reply elsewhere")
    partial_reply(page)
    open_menu(page, "Rename during a reply").get_by_role("menuitem", name="Rename").click()
    box = page.get_by_role("textbox", name="Conversation title")
    box.fill("Typed while a reply streams")
    # The reply's end refreshes the list; the box and what was typed in it stay.
    with page.expect_response(re.compile(r"/api/conversations$")):
        expect(last_reply(page)).to_have_attribute("data-state", "completed")
    expect(box).to_be_focused()
    expect(box).to_have_value("Typed while a reply streams")
    box.press("Enter")
    link = page.locator(f'#conversation-list a[data-id="{conversation}"]')
    expect(link).to_contain_text("Typed while a reply streams")
    expect(item(page, "A slow reply elsewhere")).to_have_count(1)
    assert stored(chat_server, conversation)["title"] == "Typed while a reply streams"


def test_a_refused_title_keeps_the_box_open_with_the_reason(
    page: Page, chat_server: LiveServer
) -> None:
    page.goto("/")
    conversation = chat(page, "Refused titles")
    open_menu(page, "Refused titles").get_by_role("menuitem", name="Rename").click()
    box = page.get_by_role("textbox", name="Conversation title")
    box.fill("   ")
    box.press("Enter")
    error = page.get_by_role("alert")
    expect(error).to_have_text(re.compile("1 to 200 characters"))
    expect(box).to_have_attribute("aria-invalid", "true")
    expect(box).to_be_focused()
    assert stored(chat_server, conversation)["title"] == "Refused titles"

    box.fill("Accepted title")
    expect(error).to_be_hidden()
    box.press("Enter")
    expect(page.locator("#title")).to_have_text("Accepted title")
    assert stored(chat_server, conversation)["title"] == "Accepted title"


def test_rename_from_the_title_menu(page: Page, chat_server: LiveServer) -> None:
    page.goto("/")
    conversation = chat(page, "Title menu rename")
    page.get_by_role("button", name="Actions for this conversation").click()
    page.get_by_role("menuitem", name="Rename").click()
    box = page.locator(".topbar").get_by_role("textbox", name="Conversation title")
    expect(box).to_be_focused()
    box.fill("Renamed above")
    box.press("Enter")
    expect(page.locator("#title")).to_have_text("Renamed above")
    expect(page.get_by_role("button", name="Actions for this conversation")).to_be_focused()
    expect(page.locator(f'#conversation-list a[data-id="{conversation}"]')).to_contain_text(
        "Renamed above"
    )
    assert stored(chat_server, conversation)["title"] == "Renamed above"


def test_the_menu_closes_on_escape_and_returns_focus(page: Page) -> None:
    page.goto("/")
    chat(page, "Menu keys")
    button = item(page, "Menu keys").get_by_role("button")
    button.focus()
    page.keyboard.press("Enter")
    menu = page.get_by_role("menu")
    expect(button).to_have_attribute("aria-expanded", "true")
    page.keyboard.press("ArrowDown")
    expect(menu.get_by_role("menuitem", name="Export as Markdown")).to_be_focused()
    page.keyboard.press("End")
    expect(menu.get_by_role("menuitem", name="Delete")).to_be_focused()
    page.keyboard.press("ArrowDown")  # wraps round
    expect(menu.get_by_role("menuitem", name="Rename")).to_be_focused()
    page.keyboard.press("Escape")
    expect(menu).to_be_hidden()
    expect(button).to_be_focused()
    expect(button).to_have_attribute("aria-expanded", "false")
    # A click elsewhere closes it too.
    button.click()
    expect(menu).to_be_visible()
    page.locator("#transcript").click()
    expect(menu).to_be_hidden()


def test_delete_hides_at_once_and_undo_brings_it_back_unsent(
    page: Page, chat_server: LiveServer
) -> None:
    deletes: list[str] = []
    page.on("request", lambda r: deletes.append(r.url) if r.method == "DELETE" else None)
    page.clock.install()
    page.goto("/")
    keep = chat(page, "Keep this one")
    doomed = chat(page, "Maybe delete this")

    open_menu(page, "Maybe delete this").get_by_role("menuitem", name="Delete").click()
    # Gone from the list at once; it was open, so a new chat takes its place.
    expect(item(page, "Maybe delete this")).to_have_count(0)
    expect(item(page, "Keep this one")).to_have_count(1)
    expect(page).not_to_have_url(re.compile("#"))
    expect(page.locator(".message")).to_have_count(0)
    expect(page.locator("#title")).to_have_text("New chat")
    toast = page.locator(".toast")
    expect(toast).to_contain_text("Deleted “Maybe delete this”.")
    undo = toast.get_by_role("button", name="Undo")
    expect(undo).to_be_focused()
    assert deletes == []

    undo.click()
    expect(toast).to_have_count(0)
    expect(item(page, "Maybe delete this")).to_have_count(1)
    expect(page).to_have_url(re.compile(f"#{doomed}$"))  # open again, as it was
    expect(page.locator(".message-user .bubble")).to_have_text(["Maybe delete this"])

    page.clock.fast_forward(UNDO_MS * 2)
    expect(item(page, "Maybe delete this")).to_have_count(1)
    assert deletes == []
    assert stored(chat_server, doomed)["deleted_at"] is None
    assert stored(chat_server, keep)["deleted_at"] is None
    assert api_status(page, f"/api/conversations/{doomed}") == 200


def test_delete_without_undo_is_sent_when_the_toast_expires(
    page: Page, chat_server: LiveServer
) -> None:
    page.clock.install()
    page.goto("/")
    doomed = chat(page, "Delete me for real")
    keep = chat(page, "Stay around")

    open_menu(page, "Delete me for real").get_by_role("menuitem", name="Delete").click()
    expect(item(page, "Delete me for real")).to_have_count(0)
    # Another conversation was open: it stays open.
    expect(page).to_have_url(re.compile(f"#{keep}$"))
    assert stored(chat_server, doomed)["deleted_at"] is None  # not yet: Undo is still open

    with page.expect_request(lambda r: r.method == "DELETE") as sent:
        page.clock.fast_forward(UNDO_MS + 100)
    assert sent.value.url == f"{chat_server.url}/api/conversations/{doomed}"
    expect(page.locator(".toast")).to_have_count(0)
    assert eventually(lambda: stored(chat_server, doomed)["deleted_at"])
    assert api_status(page, f"/api/conversations/{doomed}") == 404
    assert stored(chat_server, keep)["deleted_at"] is None

    page.reload()
    expect(item(page, "Stay around")).to_have_count(1)
    expect(item(page, "Delete me for real")).to_have_count(0)


def test_leaving_the_page_sends_a_waiting_delete(page: Page, chat_server: LiveServer) -> None:
    page.goto("/")
    doomed = chat(page, "Leave and delete")
    open_menu(page, "Leave and delete").get_by_role("menuitem", name="Delete").click()
    expect(page.locator(".toast")).to_contain_text("Deleted")
    page.goto("about:blank")
    assert eventually(lambda: stored(chat_server, doomed)["deleted_at"])
    assert api_status(page, f"/api/conversations/{doomed}") == 404


def test_deleting_from_the_title_menu(page: Page, chat_server: LiveServer) -> None:
    page.clock.install()
    page.goto("/")
    doomed = chat(page, "Title menu delete")
    page.get_by_role("button", name="Actions for this conversation").click()
    page.get_by_role("menuitem", name="Delete").click()
    expect(page.locator("#title")).to_have_text("New chat")
    expect(page.get_by_role("button", name="Actions for this conversation")).to_be_hidden()
    expect(item(page, "Title menu delete")).to_have_count(0)
    with page.expect_request(lambda r: r.method == "DELETE"):
        page.clock.fast_forward(UNDO_MS + 100)
    assert eventually(lambda: stored(chat_server, doomed)["deleted_at"])


def test_search_finds_a_conversation_by_its_messages_and_shows_a_snippet(
    page: Page, chat_server: LiveServer
) -> None:
    page.goto("/")
    chat(page, "Quinces are fragrant")
    chat(page, "Apricots ripen early")
    search = page.get_by_role("searchbox", name="Search conversations")
    titles = page.locator("#conversation-list .conversation-title")
    expect(titles).to_have_count(2)

    search.fill("fragrant")
    expect(titles).to_have_text(["Quinces are fragrant"])
    snippet = item(page, "Quinces are fragrant").locator(".conversation-snippet")
    expect(snippet).to_contain_text("fragrant")
    search.fill("ripen early")
    expect(titles).to_have_text(["Apricots ripen early"])
    search.fill("zebra")
    expect(titles).to_have_count(0)
    expect(page.locator("#conversation-empty")).to_have_text("Nothing matches “zebra”.")
    search.press("Escape")
    expect(search).to_have_value("")
    expect(titles).to_have_count(2)
    expect(page.locator(".conversation-snippet")).to_have_count(0)


def test_search_matches_message_text_beyond_titles_and_shows_markup_as_text(
    page: Page, chat_server: LiveServer
) -> None:
    page.goto("/")
    conversation = chat(page, "<b>bold claim</b> about figs")
    # A title of its own, so only the message text can match "claim".
    page.get_by_role("button", name="Actions for this conversation").click()
    page.get_by_role("menuitem", name="Rename").click()
    box = page.get_by_role("textbox", name="Conversation title")
    box.fill("Figs")
    box.press("Enter")
    expect(page.locator("#title")).to_have_text("Figs")

    page.get_by_role("searchbox", name="Search conversations").fill("claim")
    expect(page.locator("#conversation-list .conversation-title")).to_have_text(["Figs"])
    snippet = item(page, "Figs").locator(".conversation-snippet")
    expect(snippet).to_contain_text("<b>bold claim</b>")
    expect(item(page, "Figs").locator("b")).to_have_count(0)
    item(page, "Figs").get_by_role("link").click()
    expect(page).to_have_url(re.compile(f"#{conversation}$"))


def test_load_more_pages_through_a_long_history(page: Page, chat_server: LiveServer) -> None:
    page.goto("/")
    newest = chat(page, "The newest conversation")
    [owner] = chat_server.rows(
        "SELECT anonymous_key FROM chat_conversation WHERE id = ?", newest.replace("-", "")
    )
    # 60 older conversations of the same visitor, written as the server would store them.
    start = datetime.now(UTC) - timedelta(days=30)
    for n in range(60):
        when = (start + timedelta(minutes=n)).strftime("%Y-%m-%d %H:%M:%S.%f")
        chat_server.rows(
            "INSERT INTO chat_conversation (id, anonymous_key, title, model, system_prompt,"
            " created_at, updated_at) VALUES (?, ?, ?, 'offline-demo', '', ?, ?)",
            uuid.uuid4().hex,
            owner["anonymous_key"],
            f"Old conversation {n:02d}",
            when,
            when,
        )
    page.reload()
    titles = page.locator("#conversation-list .conversation-title")
    expect(titles).to_have_count(50)
    expect(titles.first).to_have_text("The newest conversation")
    more = page.get_by_role("button", name="Load more")
    more.click()
    expect(titles).to_have_count(61)
    expect(titles.last).to_have_text("Old conversation 00")
    expect(more).to_be_hidden()

    # A new reply refreshes the list without folding it back to one page.
    send(page, "One more turn")
    expect(page.locator(".message-assistant")).to_have_count(2)
    expect(last_reply(page)).to_have_attribute("data-state", "completed")
    expect(titles).to_have_count(61)
    expect(titles.last).to_have_text("Old conversation 00")

    # Search pages the same way: every old one has "Old" in its title.
    page.get_by_role("searchbox", name="Search conversations").fill("old conversation")
    expect(titles).to_have_count(50)
    expect(titles.first).to_have_text("Old conversation 59")
    more.click()
    expect(titles).to_have_count(60)
    expect(more).to_be_hidden()


def test_export_links_download_markdown_and_json(page: Page, chat_server: LiveServer) -> None:
    page.goto("/")
    conversation = chat(page, "Export this talk")
    menu = open_menu(page, "Export this talk")
    markdown = menu.get_by_role("menuitem", name="Export as Markdown")
    expect(markdown).to_have_attribute(
        "href", f"/api/conversations/{conversation}/export?format=md"
    )
    with page.expect_download() as download:
        markdown.click()
    expect(menu).to_be_hidden()
    assert download.value.suggested_filename.endswith(".md")
    text = download.value.path().read_text(encoding="utf-8")
    assert "Export this talk" in text and "Offline demo model" in text

    menu = open_menu(page, "Export this talk")
    with page.expect_download() as download:
        menu.get_by_role("menuitem", name="Export as JSON").click()
    assert download.value.suggested_filename.endswith(".json")
    exported = json.loads(download.value.path().read_text(encoding="utf-8"))
    contents = json.dumps(exported, ensure_ascii=False)
    assert "Export this talk" in contents
    assert demo_reply("Export this talk")[:40] in contents


def test_every_code_block_has_a_copy_button(page: Page) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.goto("/")
    chat(page, "Show me code")
    block = last_reply(page).locator(".code-block")
    expect(block).to_have_count(1)
    block.get_by_role("button", name="Copy code").click()
    button = block.locator(".code-copy")  # its name is now "Copied"
    expect(button).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == 'print("Grüße, 世界 👋")\n'
    expect(block.get_by_role("button", name="Copy code")).to_be_visible()  # back again

    # The whole reply copies as its markdown.
    last_reply(page).get_by_role("button", name="Copy reply as markdown").click()
    assert page.evaluate("navigator.clipboard.readText()") == demo_reply("Show me code")


def test_copying_code_falls_back_without_the_clipboard_api(page: Page) -> None:
    # As on plain http to another host: no navigator.clipboard at all.
    page.add_init_script(
        """Object.defineProperty(Navigator.prototype, "clipboard", {get: () => undefined});
        document.addEventListener("copy", (event) => {
          window.__copied = document.getSelection().toString() || event.target.value;
        });"""
    )
    page.goto("/")
    chat(page, "Code without a clipboard")
    last_reply(page).get_by_role("button", name="Copy code").click()
    expect(last_reply(page).locator(".code-copy")).to_have_text("Copied")
    assert page.evaluate("window.__copied") == 'print("Grüße, 世界 👋")\n'
    expect(page.locator(".copy-buffer")).to_have_count(0)
