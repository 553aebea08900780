"""chat/ops/workers.py: several workers (WEB_CONCURRENCY) never silently split state: without
REDIS_URL `manage.py check` warns, and a real worker refuses to start, saying why."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from chat.ops.workers import workers_check
from tests.servers import HOST, ROOT, free_port


def test_several_workers_without_redis_are_warned_about(settings, monkeypatch):
    settings.REDIS_URL = ""
    monkeypatch.setenv("WEB_CONCURRENCY", "2")
    [warning] = workers_check()
    assert warning.id == "chat.W201" and "REDIS_URL" in warning.msg
    with pytest.raises(SystemCheckError, match="chat.W201"):
        call_command("check", fail_level="WARNING")


@pytest.mark.parametrize(("workers", "redis"), [("1", ""), ("4", "redis://127.0.0.1:6379/0")])
def test_one_worker_or_a_shared_redis_is_fine(settings, monkeypatch, workers, redis):
    settings.REDIS_URL = redis
    monkeypatch.setenv("WEB_CONCURRENCY", workers)
    assert workers_check() == []


def test_a_worker_of_several_without_redis_refuses_to_start(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "WEB_CONCURRENCY": "2",
    }
    command = [sys.executable, "-m", "uvicorn", "chatsite.asgi:application"]
    # --workers 1: this one process, told by WEB_CONCURRENCY that it is one of two.
    args = ["--host", HOST, "--port", str(free_port()), "--workers", "1"]
    done = subprocess.run(
        [*command, *args], env=env, cwd=ROOT, capture_output=True, timeout=60, check=False
    )
    assert done.returncode != 0
    assert b"2 workers (WEB_CONCURRENCY) without REDIS_URL" in done.stderr
