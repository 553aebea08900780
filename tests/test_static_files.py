"""Static files under a real uvicorn worker, as `make run` and `make serve-prod` serve
them: every file the page names arrives, and the server logs no warning doing it
(ServeStatic's middleware is async-native; WhiteNoise's sync file iterator made Django warn
"StreamingHttpResponse must consume synchronous iterators" on each file)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.servers import HOST, ROOT, database_url, free_port, start_worker, stop

pytestmark = pytest.mark.django_db(transaction=True)


def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        headers = {name.lower(): value for name, value in response.headers.items()}
        return response.status, headers, response.read()


@pytest.mark.parametrize("debug", ["true", "false"], ids=["make-run", "serve-prod"])
def test_the_page_and_its_static_files_are_served_without_a_warning(tmp_path, debug):
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DEBUG": debug,
        "CHAT_ALLOW_ANONYMOUS": "true",
        "SECURE_SSL_REDIRECT": "false",
        "STATIC_ROOT": str(tmp_path / "static"),
    }
    if debug == "false":  # what `make serve-prod` does first
        subprocess.run(
            [sys.executable, "manage.py", "collectstatic", "--no-input", "-v", "0"],
            cwd=ROOT,
            env=env,
            check=True,
        )
    port = free_port()
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        proc = start_worker(env, port, output=log)
    try:
        status, _, page = fetch(f"http://{HOST}:{port}/")
        assert status == 200
        urls = re.findall(rb'(?:src|href)="(/static/[^"]+)"', page)
        assert len(urls) > 5 and b"/static/chat/chat.js" in urls
        for url in urls:
            status, headers, body = fetch(f"http://{HOST}:{port}{url.decode()}")
            assert status == 200 and body == (ROOT / "chat" / url.decode()[1:]).read_bytes()
            if debug == "false":  # browsers may keep them a while; DEBUG: always fresh
                assert headers["cache-control"] == "max-age=60, public"
    finally:
        stop(proc, 20)
    log_text = Path(log_path).read_text(errors="replace")
    assert "Warning" not in log_text and "warning" not in log_text.lower(), log_text
