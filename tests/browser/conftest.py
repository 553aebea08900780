"""Real-browser fixtures: a live uvicorn server on the demo model, and Debian's Chromium.

The server runs in a subprocess with its own SQLite file, so tests read the rows it wrote
with the sqlite3 module, exactly as stored. Chromium is Debian's (`apt-get install
chromium`): Playwright's own browser download does not work on our machines. Without it the
tests skip, except under CI=true, where a missing browser must fail the run. CHROMIUM_PATH
overrides the path.
"""

from __future__ import annotations

import contextlib
import os
import shutil
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
    env: dict[str, str]

    def create_user(self, username: str, password: str, email: str = "") -> None:
        """A person made by staff, as in the admin (the server's own database)."""
        code = (
            "import os, sys, django; "
            "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'chatsite.settings'); "
            "django.setup(); from django.contrib.auth import get_user_model; "
            "get_user_model().objects.create_user(*sys.argv[1:])"
        )
        subprocess.run(
            [sys.executable, "-c", code, username, email, password],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
        )

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
            raise RuntimeError(f"the server exited early:\n{log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the server did not answer in 30 s:\n{log.read_text(errors='replace')}")


@contextlib.contextmanager
def live_server(workdir: Path, port: int, **overrides: str) -> Iterator[LiveServer]:
    """uvicorn on the demo model with its own SQLite file, migrated, until the block ends."""
    database = workdir / "db.sqlite3"
    log = workdir / "server.log"
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{database}",
        "MEDIA_ROOT": str(workdir / "media"),
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
        **overrides,
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
        _wait_until_serving(url + "/healthz", process, log)
        yield LiveServer(url=url, database=database, log=log, env=env)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def chat_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Anonymous use on, as `make run` serves it."""
    with live_server(tmp_path_factory.mktemp("live"), _free_port()) as server:
        yield server


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


@contextlib.contextmanager
def _browser_page(browser: Any, url: str) -> Iterator[Any]:
    """A fresh browser context: its own cookies, so its own anonymous identity."""
    context = browser.new_context(base_url=url, viewport={"width": 1280, "height": 800})
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def page(browser: Any, chat_server: LiveServer) -> Iterator[Any]:
    with _browser_page(browser, chat_server.url) as page:
        yield page


@pytest.fixture
def sign_in_page(browser: Any, sign_in_server: tuple[LiveServer, Identity]) -> Iterator[Any]:
    """A browser on the server with production's sign-in rules and SSO."""
    with _browser_page(browser, sign_in_server[0].url) as page:
        yield page


@dataclass
class Identity:
    """The local OpenID Connect provider (tests/oidc/provider.mjs) and the client it knows."""

    issuer: str
    client_id: str
    client_secret: str


def _npm_install(folder: Path) -> None:
    if (folder / "node_modules" / "oidc-provider").is_dir():
        return
    _require(shutil.which("npm") is not None, "npm is missing (the SSO test runs oidc-provider)")
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"], cwd=folder, check=True, capture_output=True
    )


@pytest.fixture(scope="session")
def sign_in_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LiveServer, Identity]]:
    """Production's rules (anonymous use off) with single sign-on to a real, local OpenID
    Connect provider: panva's oidc-provider on Node, from the npm registry."""
    folder = ROOT / "tests" / "oidc"
    _npm_install(folder)
    chat_port, oidc_port = _free_port(), _free_port()
    identity = Identity(f"http://127.0.0.1:{oidc_port}", "chat-tests", "tests-only-client-secret")
    log = tmp_path_factory.mktemp("oidc") / "provider.log"
    env = {
        **os.environ,
        "OIDC_PORT": str(oidc_port),
        "OIDC_CLIENT_ID": identity.client_id,
        "OIDC_CLIENT_SECRET": identity.client_secret,
        "OIDC_REDIRECT_URI": f"http://127.0.0.1:{chat_port}/accounts/oidc/sso/login/callback/",
    }
    with log.open("wb") as out:
        provider = subprocess.Popen(
            ["node", "provider.mjs"], cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_until_serving(f"{identity.issuer}/.well-known/openid-configuration", provider, log)
        with live_server(
            tmp_path_factory.mktemp("signin"),
            chat_port,
            CHAT_ALLOW_ANONYMOUS="false",
            CHAT_BUDGET_USD="5",
            CHAT_OIDC_ISSUER=identity.issuer,
            CHAT_OIDC_CLIENT_ID=identity.client_id,
            CHAT_OIDC_CLIENT_SECRET=identity.client_secret,
            CHAT_OIDC_NAME="Example SSO",
        ) as server:
            yield server, identity
    finally:
        provider.terminate()
        provider.wait(timeout=10)
