"""Static files under a real uvicorn worker, as `make run` and `make serve-prod` serve
them: every file the page names arrives, every module those import too, and the server
logs no warning doing it (ServeStatic's middleware is async-native; WhiteNoise's sync file
iterator made Django warn "StreamingHttpResponse must consume synchronous iterators" on
each file). In production the names carry a hash of the contents and browsers may keep
them for a year."""

from __future__ import annotations

import os
import posixpath
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
        named = [url.decode() for url in re.findall(rb'(?:src|href)="(/static/[^"]+)"', page)]
        assert len(named) > 5
        served = {}  # every file the page names, and every module they import
        waiting = list(named)
        while waiting:
            url = waiting.pop()
            if url in served:
                continue
            status, headers, body = fetch(f"http://{HOST}:{port}{url}")
            assert status == 200, url
            served[url] = headers
            if url.endswith((".js", ".mjs")):
                base = url.rsplit("/", 1)[0]
                imports = re.findall(rb'from\s*"(\./[^"]+)"', body)
                waiting += [posixpath.normpath(f"{base}/{name.decode()}") for name in imports]
        modules = [url for url in served if url.endswith((".js", ".mjs"))]
        assert len(modules) >= 20, modules  # chat.js, its modules and the vendored libraries
        for url, headers in served.items():
            name = url.removeprefix("/static/")
            if debug == "true":  # the source files as they are, always fresh
                assert (ROOT / "chat" / "static" / name).is_file(), url
                assert headers["cache-control"] == "max-age=0, public", url
            else:  # collected under hashed names, which never change: kept a year
                assert re.search(r"\.[0-9a-f]{12}\.[a-z]+$", name), url
                assert headers["cache-control"] == "max-age=315360000, public, immutable", url
    finally:
        stop(proc, 20)
    log_text = Path(log_path).read_text(errors="replace")
    assert "Warning" not in log_text and "warning" not in log_text.lower(), log_text
