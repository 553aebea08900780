"""A production-like stack of its own on this machine, for `make chaos` and `make soak`:
a PostgreSQL cluster (initdb into a temporary directory, a free port), a redis-server
(`--save ""`, a free port), the fake upstream, `uvicorn --workers 2` as
deploy/systemd/chat.service runs it, and nginx with deploy/nginx/chat.conf in front.

Nothing here touches the machine's shared PostgreSQL or Redis: the cluster and the Redis
are this run's, so they can be stopped and restarted mid-run. As root, PostgreSQL runs
as the `postgres` user (it refuses root).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from bench.nginx import nginx_command, self_signed
from bench.run import HOST, ROOT, _event_loop_runner, app_env, free_port, listening, migrate

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
REDIS_SERVER = os.environ.get("REDIS_SERVER", shutil.which("redis-server") or "redis-server")
MODEL = "fake-model"
PRICE = (Decimal("2.00"), Decimal("0.50"), Decimal("8.00"))  # per million: in, cached, out
WORKERS = 2

# People who chat, with personal API tokens (printed as JSON).
PEOPLE_SCRIPT = """
import json, os
from django.contrib.auth import get_user_model
from chat.access.tokens import token_create
User = get_user_model()
tokens = []
for n in range(int(os.environ["STACK_PEOPLE"])):
    user = User.objects.create_user(f"person{n}", f"person{n}@example.com", "x-unused-x")
    tokens.append(token_create(user=user, name="chaos")[1])
print(json.dumps(tokens))
"""


def as_postgres() -> list[str]:
    """How to run PostgreSQL's programs: as `postgres` when we are root."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@dataclass
class Stack:
    workdir: Path
    people: int = 8
    upstream_args: list[str] = field(default_factory=list)
    env_overrides: dict[str, str] = field(default_factory=dict)
    pg_port: int = field(default_factory=free_port)
    redis_port: int = field(default_factory=free_port)
    upstream_port: int = field(default_factory=free_port)
    worker_port: int = field(default_factory=free_port)
    https_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    tokens: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def pgdata(self) -> Path:
        return self.workdir / "pg" / "data"

    @property
    def database(self) -> str:
        return f"postgres://postgres@{HOST}:{self.pg_port}/chat"

    @property
    def base(self) -> str:
        """nginx's TLS side, what clients use."""
        return f"https://{HOST}:{self.https_port}"

    @property
    def direct(self) -> str:
        """The workers' shared socket, past nginx (metrics, the staff login)."""
        return f"http://{HOST}:{self.worker_port}"

    # --- PostgreSQL ---------------------------------------------------------------------

    def pg_init(self) -> None:
        pg = self.workdir / "pg"
        pg.mkdir()
        if os.geteuid() == 0:
            self.workdir.chmod(0o755)
            shutil.chown(pg, "postgres", "postgres")
        subprocess.run(
            [*as_postgres(), str(PG_BIN / "initdb"), "-D", str(self.pgdata), "-A", "trust"]
            + ["-U", "postgres", "-E", "UTF8", "--no-sync"],
            check=True,
            capture_output=True,
        )
        self.pg_start()
        with psycopg.connect(self.pg_admin(), autocommit=True) as connection:
            connection.execute("CREATE DATABASE chat")

    def pg_admin(self) -> str:
        return f"host={HOST} port={self.pg_port} user=postgres dbname=postgres"

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [*as_postgres(), str(PG_BIN / "pg_ctl"), "-D", str(self.pgdata), "-w", *args],
            check=True,
            capture_output=True,
        )

    def pg_start(self) -> None:
        options = f"-p {self.pg_port} -k {self.workdir / 'pg'} -c listen_addresses={HOST}"
        options += " -c fsync=off -c max_connections=200"
        self.pg_ctl("-l", str(self.workdir / "pg" / "server.log"), "-o", options, "start")

    def pg_stop(self) -> None:
        """A restart's first half: connections are cut, as a deploy or a crash cuts them."""
        self.pg_ctl("-m", "fast", "stop")

    def rows(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database) as connection:
            return connection.execute(sql, params).fetchall()

    # --- Redis --------------------------------------------------------------------------

    def redis_start(self) -> None:
        command = [REDIS_SERVER, "--port", str(self.redis_port), "--bind", HOST]
        command += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        self.procs["redis"] = self._spawn("redis", command)
        self._wait_port(self.redis_port, "redis")

    def redis_stop(self) -> None:
        proc = self.procs.pop("redis")
        proc.terminate()
        proc.wait(10)

    # --- the service ----------------------------------------------------------------------

    def start(self) -> None:
        self.pg_init()
        self.redis_start()
        self.procs["upstream"] = self._spawn(
            "upstream",
            [sys.executable, "-m", "bench.fake_upstream", "--port", str(self.upstream_port)]
            + self.upstream_args,
        )
        self._wait_port(self.upstream_port, "the fake upstream")
        env = app_env(
            self.upstream_port,
            self.workdir / "unused.sqlite3",
            self.database,
            f"redis://{HOST}:{self.redis_port}/0",
        )
        metrics = self.workdir / "metrics"
        metrics.mkdir()
        env.update(
            # As deploy/chat.env.example has it, behind nginx.
            BEHIND_TLS_PROXY="true",
            CHAT_CLIENT_IP_HEADER="X-Forwarded-For",
            PROMETHEUS_MULTIPROC_DIR=str(metrics),
            CHAT_METRICS_TOKEN="bench-metrics-token",
            CHAT_ALLOW_ANONYMOUS="false",
            # Every person has a budget: the check compares what it says with the rows.
            CHAT_BUDGET_USD="1000",
        )
        env.update(self.env_overrides)
        self.env = env
        migrate(env)
        self.rows_write(
            "INSERT INTO chat_modelprice (model, input_per_million, cached_input_per_million,"
            " output_per_million, valid_from) VALUES (%s, %s, %s, %s, now() - interval '1 day')",
            MODEL,
            *PRICE,
        )
        made = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", PEOPLE_SCRIPT],
            env={**env, "STACK_PEOPLE": str(self.people)},
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        self.tokens = json.loads(made.stdout.decode().strip().splitlines()[-1])
        self.procs["workers"] = self._spawn(
            "workers",
            [sys.executable, "-m", "uvicorn", "chatsite.asgi:application"]
            + ["--host", HOST, "--port", str(self.worker_port), "--workers", str(WORKERS)]
            + ["--no-proxy-headers", "--no-access-log", "--timeout-graceful-shutdown", "5"]
            + ["--log-level", "warning"],
        )
        self.wait_workers()
        cert, key = self_signed(self.workdir)
        prefix = self.workdir / "nginx"
        prefix.mkdir()
        command = nginx_command(
            prefix,
            {
                "CHAT_SERVER_NAME": "localhost",
                "CHAT_HTTP_LISTEN": f"{HOST}:{self.http_port}",
                "CHAT_HTTPS_LISTEN": f"{HOST}:{self.https_port}",
                "CHAT_TLS_CERT": str(cert),
                "CHAT_TLS_KEY": str(key),
                "CHAT_UPSTREAM": f"{HOST}:{self.worker_port}",
                "CHAT_STATIC_ROOT": env["STATIC_ROOT"],
                "CHAT_LOG_DIR": str(prefix),
            },
        )
        self.procs["nginx"] = self._spawn("nginx", command)
        self._wait_port(self.https_port, "nginx")

    def rows_write(self, sql: str, *params: object) -> None:
        with psycopg.connect(self.database) as connection:
            connection.execute(sql, params)

    def worker_pids(self) -> list[int]:
        """The uvicorn worker processes (children of the supervisor; not the resource
        tracker multiprocessing starts beside them)."""
        pid = self.procs["workers"].pid
        workers = []
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            with contextlib.suppress(OSError):
                if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                    workers.append(int(child))
        return workers

    def wait_workers(self, timeout: float = 60) -> None:
        """Until all `WORKERS` processes run and the socket answers /readyz."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.worker_pids()) == WORKERS and self._ready():
                return
            time.sleep(0.1)
        raise SystemExit(f"the workers did not start; see {self.workdir / 'workers.log'}")

    def _ready(self) -> bool:
        import http.client

        try:
            connection = http.client.HTTPConnection(HOST, self.worker_port, timeout=5)
            connection.request("GET", "/readyz")
            return connection.getresponse().status == 200
        except OSError:
            return False

    def stop(self) -> None:
        for name in ("nginx", "workers", "upstream", "redis"):
            proc = self.procs.pop(name, None)
            if proc is None:
                continue
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        with contextlib.suppress(subprocess.CalledProcessError):
            self.pg_ctl("-m", "immediate", "stop")

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        with (self.workdir / f"{name}.log").open("ab") as log:
            return subprocess.Popen(
                command, env=self.env or None, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )

    def _wait_port(self, port: int, what: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if listening(port):
                return
            time.sleep(0.05)
        raise SystemExit(f"{what} did not listen on {port}; see {self.workdir}")


def stack_arguments(description: str, *, concurrency: int) -> argparse.ArgumentParser:
    """A command line with the options every run on the stack takes; the run adds its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--concurrency", type=int, default=concurrency)
    parser.add_argument("--people", type=int, default=8)
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, data)")
    return parser


def run_in_workdir(
    prefix: str, run: Callable[[Path], Coroutine[Any, Any, int]], *, keep: bool
) -> None:
    """Exit with what `run(workdir)` returns, in a new temporary work dir that is removed
    when it returned 0 unless `keep`; otherwise its path is printed (the logs are there)."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    code = 1
    try:
        code = _event_loop_runner()(run(workdir))
    finally:
        if code == 0 and not keep:
            subprocess.run(["rm", "-rf", str(workdir)], check=False)
        else:
            print(f"logs: {workdir}", file=sys.stderr)
    sys.exit(code)
