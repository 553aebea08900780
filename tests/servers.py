"""Real server processes for tests: a free port, and waiting until a process listens."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO
from urllib.parse import quote

import pytest
from django.db import connection

from bench.run import listening

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"server on {port} exited with {proc.returncode}"
        if listening(port):
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


def start(
    cmd: list[str], env: dict[str, str], port: int, *, output: IO[bytes] | int | None = None
) -> subprocess.Popen[bytes]:
    """Run `cmd` (its output to `output`, discarded by default) until it listens on `port`."""
    stdout = subprocess.DEVNULL if output is None else output
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=stdout, stderr=output)
    wait_listening(port, proc)
    return proc


def stop(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """Ask a server to stop; kill it if it has not within `timeout` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def start_worker(
    env: dict[str, str],
    port: int,
    *args: str,
    output: IO[bytes] | int | None = None,
) -> subprocess.Popen[bytes]:
    """A real uvicorn worker of this project on `port`, as production runs it."""
    command = [sys.executable, "-m", "uvicorn", "chatsite.asgi:application"]
    return start([*command, "--host", HOST, "--port", str(port), *args], env, port, output=output)


def database_url() -> str:
    """The test database, for a child process (committed data: transaction=True)."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    if db["ENGINE"] == "django.db.backends.postgresql":
        auth = quote(db["USER"]) + (f":{quote(db['PASSWORD'])}" if db["PASSWORD"] else "")
        return f"postgres://{auth}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"
    pytest.skip(f"no URL for {db['ENGINE']}")


def fake_model_env(fake_upstream: str, **overrides: str) -> dict[str, str]:
    """A worker's environment: the test database, and the benchmark's fake upstream as
    an OpenAI-compatible model (`fake-model`)."""
    return {
        **os.environ,
        "DATABASE_URL": database_url(),
        "OPENAI_BASE_URL": f"{fake_upstream}/v1",
        "OPENAI_API_KEY": "x",
        "CHAT_PROVIDER": "openai",
        "CHAT_API": "chat",
        "CHAT_MODEL": "fake-model",
        "CHAT_MAX_RETRIES": "0",
        **overrides,
    }
