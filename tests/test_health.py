"""/healthz and /readyz (chat.ops.health, chat.ops.views)."""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request

import pytest

from tests.asgi import asgi_request
from tests.servers import HOST, free_port, start_worker, stop


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_ready_when_database_and_cache_answer(caplog):
    with caplog.at_level(logging.DEBUG):
        healthz = await asgi_request("GET", "/healthz")
        readyz = await asgi_request("GET", "/readyz")
    assert healthz.status == 200 and healthz.json() == {"status": "ok"}
    assert readyz.status == 200
    assert readyz.json() == {"status": "ok", "checks": {"database": "ok", "cache": "ok"}}
    # Probed every few seconds: not a log line each time.
    assert not [r for r in caplog.records if r.name.startswith(("chat", "django"))]


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_probes_are_not_rate_limited(settings):
    settings.CHAT_RATE_LIMIT = "1/min"
    for _ in range(3):
        assert (await asgi_request("GET", "/readyz")).status == 200
        assert (await asgi_request("GET", "/healthz")).status == 200


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_worker_whose_database_and_cache_are_down_is_alive_but_not_ready(tmp_path):
    """A real worker with a database file it cannot open and a Redis nothing listens on."""
    port, closed_port = free_port(), free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path}/missing-dir/db.sqlite3",
        "REDIS_URL": f"redis://{HOST}:{closed_port}/0",
    }
    with open(tmp_path / "worker.log", "wb") as log:
        proc = start_worker(env, port, output=log)
    try:
        assert get(f"http://{HOST}:{port}/healthz") == (200, {"status": "ok"})
        status, body = get(f"http://{HOST}:{port}/readyz")
    finally:
        stop(proc)
    assert status == 503
    assert body["status"] == "unavailable" and body["failed"] == ["database"]
    assert body["checks"]["database"] == "failed: OperationalError"
    # Redis down is not a failure: the worker serves from its own cache (chat/ops/cache.py).
    assert body["checks"]["cache"] == "degraded"
    # Which host or file failed is for the operator's log, not for whoever probes.
    assert str(tmp_path) not in json.dumps(body)
    assert "readiness check database failed" in (tmp_path / "worker.log").read_text()
