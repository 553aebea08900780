"""Real-browser fixtures: a live uvicorn server on the demo model, and Debian's Chromium.

The server runs in a subprocess with its own SQLite file, so tests read the rows it wrote
with the sqlite3 module, exactly as stored. Chromium is Debian's (`apt-get install
chromium`): Playwright's own browser download does not work on our machines. Without it the
tests skip, except under CI=true, where a missing browser must fail the run. CHROMIUM_PATH
overrides the path.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]
MODELS = ["offline-demo", "offline-demo-mini"]
# Slow enough that a reply is still streaming when a test stops or reloads it.
DEMO_DELAY = "0.03"
MAX_MESSAGE_CHARS = 2000


def _require(condition: bool, reason: str) -> None:
    if condition:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: browser tests must run)", pytrace=False)
    pytest.skip(reason)


@dataclass
class LiveServer:
    url: str
    database: Path
    log: Path

    def rows(self, sql: str, *params: Any) -> list[sqlite3.Row]:
        with sqlite3.connect(self.database, timeout=20) as connection:
            connection.row_factory = sqlite3.Row
            return connection.execute(sql, params).fetchall()

    def messages(self, conversation: str) -> list[sqlite3.Row]:
        # Django stores UUIDs in SQLite as 32 hex digits.
        return self.rows(
            "SELECT * FROM chat_message WHERE conversation_id = ? ORDER BY id",
            conversation.replace("-", ""),
        )

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_serving(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"uvicorn exited early:\n{log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"uvicorn did not answer in 30 s:\n{log.read_text(errors='replace')}")


@pytest.fixture(scope="session")
def chat_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("live")
    database = workdir / "db.sqlite3"
    log = workdir / "server.log"
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{database}",
        "DEBUG": "true",
        "SECRET_KEY": "browser-tests-only",
        "CHAT_READ_DOTENV": "false",
        "CHAT_PROVIDER": "demo",
        "CHAT_DEMO_DELAY": DEMO_DELAY,
        "CHAT_MODEL": MODELS[0],
        "CHAT_MODELS": ",".join(MODELS),
        "CHAT_MAX_MESSAGE_CHARS": str(MAX_MESSAGE_CHARS),
        "CHAT_ALLOW_ANONYMOUS": "true",
        "CHAT_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }
    # A shared Redis would carry stop requests keyed by message id between test runs.
    env.pop("REDIS_URL", None)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    port = _free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "chatsite.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_serving(url + "/", process, log)
        yield LiveServer(url=url, database=database, log=log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# Module scope: while Playwright's sync API is open it owns this thread's event loop, so it
# must be closed before any asyncio test runs.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _require(CHROMIUM.exists(), f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - a test extra
        _require(False, "playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any, chat_server: LiveServer) -> Iterator[Any]:
    """A fresh browser context per test: its own cookies, so its own anonymous session."""
    context = browser.new_context(base_url=chat_server.url, viewport={"width": 1280, "height": 800})
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
