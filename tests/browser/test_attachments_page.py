"""Attachments on the page in a real browser: paste a screenshot, drop a PDF, see a
refused file say why, and find the image in the conversation after a reload."""

from __future__ import annotations

import base64

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import LiveServer
from tests.browser.test_chat_page import conversation_id, last_reply, send
from tests.files import ELF, pdf, png

pytestmark = pytest.mark.browser

PASTE = """([b64, name, type]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], name, { type }));
  const box = document.getElementById("composer-input");
  const init = { clipboardData: data, bubbles: true, cancelable: true };
  box.dispatchEvent(new ClipboardEvent("paste", init));
}"""

DROP = """([b64, name, type]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], name, { type }));
  const main = document.getElementById("main");
  for (const kind of ["dragenter", "dragover", "drop"]) {
    const init = { dataTransfer: data, bubbles: true, cancelable: true };
    main.dispatchEvent(new DragEvent(kind, init));
  }
}"""


def encoded(data: bytes) -> str:
    return base64.b64encode(data).decode()


def attached(page: Page, name: str) -> None:
    """Wait until `name` is uploaded (its chip is no longer uploading)."""
    chip = page.locator(".attachment", has_text=name)
    expect(chip).to_be_visible()
    expect(chip).not_to_have_class("attachment uploading")
    expect(chip).not_to_have_class("attachment refused")


def test_a_pasted_screenshot_is_sent_answered_and_shown_after_reload(
    page: Page, chat_server: LiveServer
):
    page.goto("/")
    page.evaluate(PASTE, [encoded(png(64, 48)), "image.png", "image/png"])
    attached(page, "image.png")
    expect(page.locator(".attachment .attachment-thumb")).to_have_count(1)
    send(page, "What is in this screenshot?")
    expect(last_reply(page)).to_have_attribute("data-state", "completed")
    expect(last_reply(page)).to_contain_text("a PNG image of 64×48 pixels")
    expect(page.locator("#attachments .attachment")).to_have_count(0)  # sent: the tray is empty
    conversation = conversation_id(page)
    [user, _] = chat_server.messages(conversation)
    [link] = chat_server.rows(
        "SELECT attachment_id FROM chat_messageattachment WHERE message_id = ?", user["id"]
    )

    page.reload()
    image = page.locator(".message-user .attachment-image img")
    expect(image).to_have_count(1)
    expect(image).to_have_attribute("src", f"/api/files/{_uuid(link['attachment_id'])}")
    page.wait_for_function(
        "() => document.querySelector('.message-user .attachment-image img').naturalWidth === 64"
    )

    # Someone else (another browser: another anonymous visitor) gets a 404 for it.
    other = page.context.browser.new_context(base_url=chat_server.url)
    response = other.request.get(f"/api/files/{_uuid(link['attachment_id'])}")
    assert response.status == 404
    other.close()


def test_a_dropped_pdf_is_uploaded_and_removable(page: Page):
    page.goto("/")
    page.evaluate(DROP, [encoded(pdf(3)), "report.pdf", "application/pdf"])
    attached(page, "report.pdf")
    page.evaluate(DROP, [encoded(pdf(1)), "other.pdf", "application/pdf"])
    attached(page, "other.pdf")
    page.get_by_role("button", name="Remove other.pdf").click()
    expect(page.locator(".attachment")).to_have_count(1)
    send(page, "Summarise the report")
    expect(last_reply(page)).to_have_attribute("data-state", "completed")
    expect(last_reply(page)).to_contain_text("a PDF, report.pdf, of 3 page(s)")
    expect(last_reply(page)).not_to_contain_text("other.pdf")
    expect(page.locator(".message-user .attachment-file")).to_contain_text("report.pdf")


def test_refused_files_say_why_before_anything_is_sent(page: Page, chat_server: LiveServer):
    page.goto("/")
    before = len(chat_server.rows("SELECT id FROM chat_attachment"))
    # Refused by the page: never uploaded.
    page.locator("#attach-input").set_input_files(
        files=[{"name": "logo.svg", "mimeType": "image/svg+xml", "buffer": b"<svg/>"}]
    )
    expect(page.locator(".attachment.refused")).to_contain_text("SVG images are not accepted")
    # Refused by the server, which reads the bytes: an executable called .png.
    page.locator("#attach-input").set_input_files(
        files=[{"name": "cat.png", "mimeType": "image/png", "buffer": ELF}]
    )
    refused = page.locator(".attachment.refused", has_text="cat.png")
    expect(refused).to_contain_text("This type of file is not accepted")
    assert len(chat_server.rows("SELECT id FROM chat_attachment")) == before
    page.get_by_role("button", name="Remove logo.svg").click()
    expect(page.locator(".attachment")).to_have_count(1)


def _uuid(hex32: str) -> str:
    """Django keeps UUIDs in SQLite as 32 hex digits."""
    h = hex32.replace("-", "")
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
