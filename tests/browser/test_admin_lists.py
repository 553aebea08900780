"""The admin at a 1280×800 screen: each list answers "who spent what" without sideways
scrolling, its money columns in view."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.axe import assert_accessible
from tests.browser.conftest import ROOT, LiveServer, _browser_page, _free_port, live_server

pytestmark = pytest.mark.browser

PASSWORD = "a long, unusual passphrase 42"
# Realistic worst cases for a row: a long title, a long username and email, a dated model.
SEED = f"""
import os, django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
django.setup()
from django.contrib.auth import get_user_model
from tests.usage_rows import TURNS, Turn, create_turns
get_user_model().objects.create_superuser("admin", "admin@example.com", {PASSWORD!r})
long = [
    Turn("margaret.hamilton-apollo", "gpt-4.1-mini-2025-04-14", 0, input_tokens=123456,
         output_tokens=65432, cost="12.34567800", ttft_ms=12345,
         title="Explain, step by step and with examples, how the guidance computer "
               "scheduled its jobs when the rendezvous radar overloaded it"),
    Turn("margaret.hamilton-apollo", "gpt-4.1-mini-2025-04-14", 1, "failed", None, None,
         None, None, "upstream_unreachable", "Why did the upstream fail this time around?"),
]
create_turns([*TURNS, *long])
get_user_model().objects.filter(username="margaret.hamilton-apollo").update(
    email="margaret.hamilton-apollo@guidance.example.com")
"""


@pytest.fixture(scope="module")
def admin_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("admin"), _free_port()) as server:
        subprocess.run(
            [sys.executable, "-c", SEED], cwd=ROOT, env=server.env, check=True, capture_output=True
        )
        yield server


@pytest.fixture
def admin_page(browser: Any, admin_server: LiveServer) -> Iterator[Page]:
    with _browser_page(browser, admin_server.url) as page:
        page.goto("/admin/login/?next=/admin/")
        page.locator("#id_username").fill("admin")
        page.locator("#id_password").fill(PASSWORD)
        page.locator("input[type=submit]").click()
        expect(page.get_by_role("heading", name="Usage, people and prices")).to_be_visible()
        yield page


def overflow(page: Page) -> dict[str, int]:
    """How far the page and the results table reach past their boxes, in pixels."""
    return page.evaluate(
        """() => {
          const results = document.querySelector('#changelist .results');
          return {
            page: document.documentElement.scrollWidth - document.documentElement.clientWidth,
            results: results.scrollWidth - results.clientWidth,
          };
        }"""
    )


def right_edge(page: Page, header: str) -> float:
    box = page.locator("#result_list thead th").filter(has_text=header).first.bounding_box()
    assert box is not None
    return box["x"] + box["width"]


@pytest.mark.parametrize(
    ("url", "money"),
    [
        ("/admin/chat/message/", ["Cost", "Tokens in → out", "Model"]),
        ("/admin/chat/conversation/", ["Cost", "Tokens", "Model"]),
        ("/admin/auth/user/", ["Spent this period", "Budget"]),
    ],
)
def test_lists_fit_a_1280_px_screen(admin_page: Page, url: str, money: list[str]) -> None:
    page = admin_page
    page.goto(url)
    expect(page.locator("#result_list tbody tr").first).to_be_visible()
    assert overflow(page) == {"page": 0, "results": 0}
    for header in money:
        assert right_edge(page, header) <= 1280, f"{header} is off-screen"
    # One line per row: a long title or email is cut, not wrapped to seven lines.
    heights = page.eval_on_selector_all(
        "#result_list tbody tr", "rows => rows.map(r => r.getBoundingClientRect().height)"
    )
    assert max(heights) < 40, heights


def test_message_list_shows_money_in_one_format(admin_page: Page) -> None:
    page = admin_page
    page.goto("/admin/chat/message/?role__exact=assistant")
    expect(page.locator("#result_list")).to_contain_text("$12.35")
    expect(page.locator("#result_list")).to_contain_text("$0.000176")
    expect(page.locator("#result_list")).to_contain_text("123,456 → 65,432")


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_usage_dashboard_and_the_admin_have_no_serious_violation(
    admin_page: Page, scheme: str
) -> None:
    """axe-core (tests/browser/axe.py) on the usage dashboard and the admin's index."""
    page = admin_page
    page.emulate_media(color_scheme=scheme)
    page.goto("/admin/chat/message/usage/")
    expect(page.locator("svg").first).to_be_visible()
    assert_accessible(page, f"usage dashboard ({scheme})")
    page.goto("/admin/")
    assert_accessible(page, f"admin index ({scheme})")


def test_api_tokens_are_named_so(admin_page: Page) -> None:
    page = admin_page
    page.goto("/admin/")
    expect(page.get_by_role("link", name="API tokens", exact=True)).to_be_visible()
    expect(page.get_by_text("Api tokens", exact=True)).to_have_count(0)
