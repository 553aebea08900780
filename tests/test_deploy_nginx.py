"""deploy/nginx/chat.conf, for real: Debian's nginx with that file (rendered for temporary
ports and paths) in front of `uvicorn --workers 2` on a fresh PostgreSQL database and
Redis, with the demo model.

Runs in `make test`'s PostgreSQL/Redis pass. Without nginx (`apt-get install nginx`) it
skips, except under CI=true, where a missing nginx must fail the run (`.ci/run` installs
it). Client addresses are random loopback addresses (all of 127.0.0.0/8 is this machine),
so that rate-limit counters left in Redis by an earlier run never meet this one's.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import shutil
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import environ
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.nginx import NGINX, nginx_command, self_signed
from tests.servers import HOST, ROOT, free_port, start, start_worker, wait_listening

pytestmark = pytest.mark.nginx

DEMO_MODEL = "offline-demo"
DEMO_DELAY = 0.05  # seconds between the demo's tokens: a reply takes seconds
RATE_LIMIT = 3  # new turns per minute per client address
PRICE = {"input": Decimal("2.00"), "cached": Decimal("0.50"), "output": Decimal("8.00")}


def _require(condition: bool, reason: str) -> None:
    if condition:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the nginx test must run)", pytrace=False)
    pytest.skip(reason)


@dataclass
class Site:
    https_port: int
    http_port: int
    worker_port: int
    database: str  # libpq URL of the workers' database
    static_root: Path
    worker_log: Path
    access_log: Path

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database) as connection:
            return connection.execute(sql, params).fetchall()


def client_address() -> str:
    return f"127.{random.randrange(1, 255)}.{random.randrange(256)}.{random.randrange(1, 255)}"


def https(site: Site, source: str) -> http.client.HTTPSConnection:
    """A connection to nginx's TLS port from `source` (the self-signed test certificate)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return http.client.HTTPSConnection(
        HOST, site.https_port, source_address=(source, 0), context=context, timeout=60
    )


def request(
    connection: http.client.HTTPConnection,
    method: str,
    path: str,
    body: dict[str, Any] | bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[http.client.HTTPResponse, bytes]:
    headers = dict(headers or {})
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    return response, response.read()


def postgres_server() -> str | None:
    """The PostgreSQL server of this test pass (DATABASE_URL), if it is PostgreSQL."""
    url = os.environ.get("DATABASE_URL", "")
    return url if url.startswith(("postgres://", "postgresql://")) else None


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    _require(NGINX.exists(), f"{NGINX} is missing (apt-get install nginx)")
    _require(shutil.which("openssl") is not None, "openssl is missing (apt-get install openssl)")
    server, redis_url = postgres_server(), os.environ.get("REDIS_URL", "")
    if not (server and redis_url):
        pytest.skip(
            "runs on PostgreSQL and Redis: make test's second pass (DATABASE_URL, REDIS_URL)"
        )
    tmp = tmp_path_factory.mktemp("nginx")
    db = environ.Env.db_url_config(server)
    admin = f"host={db['HOST'] or HOST} port={db['PORT'] or 5432} user={db['USER']} dbname=postgres"
    if db["PASSWORD"]:
        admin += f" password={db['PASSWORD']}"
    name = f"chat_nginx_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    database = admin.replace("dbname=postgres", f"dbname={name}")
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    database_url = f"postgres://{auth}@{db['HOST'] or HOST}:{db['PORT'] or 5432}/{name}"
    static_root, metrics_dir, prefix = tmp / "static", tmp / "metrics", tmp / "nginx"
    metrics_dir.mkdir()
    prefix.mkdir()
    https_port, http_port, worker_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        # As deploy/chat.env.example has it.
        "DEBUG": "false",
        "SECRET_KEY": "nginx-test-" + uuid.uuid4().hex * 2,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "BEHIND_TLS_PROXY": "true",
        "CHAT_CLIENT_IP_HEADER": "X-Forwarded-For",
        "CHAT_LOG_FORMAT": "json",
        "CHAT_METRICS_TOKEN": "",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "STATIC_ROOT": str(static_root),
        "MEDIA_ROOT": str(tmp / "media"),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "CHAT_PROVIDER": "demo",
        "CHAT_DEMO_DELAY": str(DEMO_DELAY),
        "CHAT_ALLOW_ANONYMOUS": "true",
        "CHAT_RATE_LIMIT": f"{RATE_LIMIT}/min",
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        manage = [sys.executable, "manage.py"]
        subprocess.run([*manage, "migrate", "--no-input", "-v", "0"], env=env, cwd=ROOT, check=True)
        subprocess.run(
            [*manage, "collectstatic", "--no-input", "-v", "0"], env=env, cwd=ROOT, check=True
        )
        with psycopg.connect(database) as connection:
            connection.execute(
                "INSERT INTO chat_modelprice (model, input_per_million,"
                " cached_input_per_million, output_per_million, valid_from)"
                " VALUES (%s, %s, %s, %s, now() - interval '1 day')",
                (DEMO_MODEL, PRICE["input"], PRICE["cached"], PRICE["output"]),
            )
        cert, key = self_signed(tmp)
        worker_log = tmp / "workers.log"
        with open(worker_log, "wb") as log:
            # The command line of deploy/systemd/chat.service.
            procs.append(
                start_worker(
                    env,
                    worker_port,
                    *["--workers", "2", "--no-proxy-headers", "--no-access-log"],
                    *["--timeout-graceful-shutdown", "5"],
                    *["--log-config", str(ROOT / "deploy" / "uvicorn-log.json")],
                    output=log,
                )
            )
        nginx = nginx_command(
            prefix,
            {
                "CHAT_SERVER_NAME": "localhost",
                "CHAT_HTTP_LISTEN": f"{HOST}:{http_port}",
                "CHAT_HTTPS_LISTEN": f"{HOST}:{https_port}",
                "CHAT_TLS_CERT": str(cert),
                "CHAT_TLS_KEY": str(key),
                "CHAT_UPSTREAM": f"{HOST}:{worker_port}",
                "CHAT_STATIC_ROOT": str(static_root),
                "CHAT_LOG_DIR": str(prefix),
            },
        )
        with open(prefix / "nginx.out", "wb") as out:
            procs.append(start(nginx, env, https_port, output=out))
        wait_listening(http_port, procs[-1])
        site = Site(
            https_port=https_port,
            http_port=http_port,
            worker_port=worker_port,
            database=database,
            static_root=static_root,
            worker_log=worker_log,
            access_log=prefix / "chat.access.log",
        )
        _wait_ready(site)
        yield site
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(30)
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _wait_ready(site: Site) -> None:
    """Both workers have started once the shared socket answers /readyz."""
    deadline = time.monotonic() + 30
    while True:
        try:
            response, _ = request(
                http.client.HTTPConnection(HOST, site.worker_port), "GET", "/readyz"
            )
            if response.status == 200:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, "the workers never became ready"
        time.sleep(0.1)


def sse_events(response: http.client.HTTPResponse) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, data) as each frame arrives, read line by line from the socket."""
    name, data = "message", ""
    while line := response.readline():
        line = line.rstrip(b"\r\n")
        if line.startswith(b"event:"):
            name = line[6:].strip().decode()
        elif line.startswith(b"data:"):
            data = line[5:].strip().decode()
        elif not line and data:
            yield name, json.loads(data)
            name, data = "message", ""


def test_a_reply_streams_through_nginx_frame_by_frame(site: Site):
    connection = https(site, client_address())
    connection.request(
        "POST",
        "/api/chat",
        body=json.dumps({"message": "stream me"}),
        headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
    )
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("Content-Encoding") is None
    request_id = response.getheader("X-Request-ID")
    arrivals: list[tuple[str, float]] = []
    row_at_first_delta = None
    for name, data in sse_events(response):
        arrivals.append((name, time.monotonic()))
        if name == "start":
            message_id = data["message"]
        if name == "delta" and row_at_first_delta is None:
            # The upstream is still writing the reply: its row is not finished yet.
            [row_at_first_delta] = site.rows(
                "SELECT status, finished_at FROM chat_message WHERE id = %s", message_id
            )
    names = [name for name, _ in arrivals]
    assert names[0] == "start" and names[-1] == "end"
    assert names.count("delta") > 3
    assert row_at_first_delta == ("streaming", None)
    assert site.rows("SELECT status FROM chat_message WHERE id = %s", message_id) == [
        ("completed",)
    ]
    # Buffered, every frame would arrive at once, when the upstream had finished; streamed,
    # the end comes at least one of the demo's token intervals after the first delta.
    first_delta = next(at for name, at in arrivals if name == "delta")
    assert arrivals[-1][1] - first_delta >= DEMO_DELAY
    # nginx's request id reached the worker's JSON log and came back in the response.
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    log = [json.loads(line) for line in site.worker_log.read_text().splitlines()]
    finished = [
        entry
        for entry in log
        if entry["message"].startswith("turn finished") and entry["message_id"] == message_id
    ]
    assert [entry["request_id"] for entry in finished] == [request_id]
    assert finished[0]["status"] == "completed" and finished[0]["model"] == DEMO_MODEL
    assert f"rid={request_id}" in site.access_log.read_text()


def test_limits_count_the_client_address_nginx_forwarded(site: Site):
    """Every request reaches the workers from nginx's 127.0.0.1; only X-Forwarded-For, as
    nginx sets it, tells two clients apart."""
    first, second = client_address(), client_address()

    def turn(source: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
        response, _ = request(
            https(site, source), "POST", "/api/chat?stream=defer", {"message": "hi"}, headers
        )
        return response

    assert [turn(first).status for _ in range(RATE_LIMIT)] == [201] * RATE_LIMIT
    refused = turn(first)
    assert refused.status == 429 and refused.getheader("Retry-After")
    # What a client claims is kept in front of the address nginx appends: still refused.
    assert turn(first, {"X-Forwarded-For": second}).status == 429
    assert turn(second).status == 201


def test_the_app_sees_https_from_x_forwarded_proto(site: Site):
    response, _ = request(https(site, client_address()), "GET", "/healthz")
    # Django sends HSTS only on a request it takes for HTTPS.
    assert response.status == 200 and response.getheader("Strict-Transport-Security")
    plain = http.client.HTTPConnection(HOST, site.http_port, source_address=(client_address(), 0))
    redirect, _ = request(plain, "GET", "/api/conversations")
    assert redirect.status == 301
    assert redirect.getheader("Location") == "https://127.0.0.1/api/conversations"


def test_static_files_are_served_by_nginx(site: Site):
    # Written after the workers started: ServeStatic (DEBUG off) serves only the files it
    # found at start-up, so only nginx can answer this one.
    (site.static_root / "probe.txt").write_text("from nginx\n")
    connection = https(site, client_address())
    for path, expected in [
        ("/static/chat/chat.js", (site.static_root / "chat" / "chat.js").read_bytes()),
        ("/static/probe.txt", b"from nginx\n"),
    ]:
        response, body = request(connection, "GET", path)
        assert response.status == 200 and body == expected
        assert response.getheader("Server", "").startswith("nginx")
        assert response.getheader("ETag") and response.getheader("Last-Modified")
        assert response.getheader("X-Request-ID") is None  # no worker answered
        assert response.getheader("Cache-Control") == "max-age=60"
    missing, _ = request(connection, "GET", "/static/nope.js")
    assert missing.status == 404 and missing.getheader("X-Request-ID") is None

    # The page names its files by their hashed names: those are kept for a year.
    _, page = request(connection, "GET", "/")
    script = re.search(rb'src="(/static/chat/chat\.[0-9a-f]{12}\.js)"', page)
    assert script, page[:500]
    response, body = request(connection, "GET", script[1].decode())
    assert response.status == 200 and response.getheader("Server", "").startswith("nginx")
    assert body == (site.static_root / script[1].decode().removeprefix("/static/")).read_bytes()
    assert response.getheader("Cache-Control") == "max-age=315360000, public, immutable"
    assert response.getheader("X-Request-ID") is None


def test_an_oversized_body_is_refused_by_nginx(site: Site):
    connection = https(site, client_address())
    too_large = json.dumps({"message": "x" * (3 * 1024 * 1024 // 2)}).encode()
    response, body = request(
        connection, "POST", "/api/chat", too_large, {"Content-Type": "application/json"}
    )
    assert response.status == 413 and response.getheader("X-Request-ID") is None
    assert json.loads(body)["error"]["type"] == "body_too_large"
    # Under nginx's cap but over the app's own (CHAT_MAX_BODY_BYTES): the app refuses it.
    over_app = json.dumps({"message": "x" * 300_000}).encode()
    response, body = request(
        https(site, client_address()),
        "POST",
        "/api/chat",
        over_app,
        {"Content-Type": "application/json"},
    )
    assert response.status == 413 and response.getheader("X-Request-ID")
    assert json.loads(body)["error"]["type"] == "body_too_large"


def test_an_attachment_goes_through_nginx_and_a_larger_one_is_refused_there(site: Site):
    from tests.files import multipart

    # 3 MB: over the 1 MB nginx allows other bodies, under what it allows uploads.
    body, content_type = multipart("notes.txt", b"a line of text\n" * 200_000)
    connection = https(site, client_address())
    response, data = request(connection, "POST", "/api/files", body, {"Content-Type": content_type})
    assert response.status == 201, data
    uploaded = json.loads(data)
    cookie = response.getheader("Set-Cookie", "").split(";", 1)[0]
    response, served = request(connection, "GET", uploaded["url"], headers={"Cookie": cookie})
    assert response.status == 200 and served == b"a line of text\n" * 200_000
    assert response.getheader("X-Content-Type-Options") == "nosniff"

    body, content_type = multipart("big.pdf", b"%PDF-1.4\n" + b"0" * (22 * 1024 * 1024))
    response, data = request(
        https(site, client_address()), "POST", "/api/files", body, {"Content-Type": content_type}
    )
    assert response.status == 413 and response.getheader("X-Request-ID") is None
    assert json.loads(data)["error"]["type"] == "file_too_large"


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response, body = request(http.client.HTTPConnection(HOST, port), "GET", "/metrics")
    assert response.status == 200, body
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def test_metrics_of_both_workers_match_the_stored_rows(site: Site):
    def chat() -> None:
        response, body = request(
            https(site, client_address()), "POST", "/api/chat", {"message": "m"}
        )
        assert response.status == 200, body

    # Together, so that both workers are likely to serve some.
    threads = [threading.Thread(target=chat) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    [(completed, tokens_in, tokens_out, cost)] = site.rows(
        "SELECT count(*), sum(input_tokens), sum(output_tokens), sum(cost) FROM chat_message"
        " WHERE role = 'assistant' AND status = 'completed' AND model = %s",
        DEMO_MODEL,
    )
    assert completed >= 4 and cost > 0
    # Each scrape is a new connection, served by either worker: every one sums both.
    for _ in range(6):
        scraped = scrape(site.worker_port)

        def value(name: str, **labels: str) -> float:
            return scraped.get((name, frozenset(labels.items())), 0.0)  # noqa: B023

        assert value("chat_turns_total", model=DEMO_MODEL, status="completed") == completed
        assert value("chat_tokens_total", model=DEMO_MODEL, kind="input") == tokens_in
        assert value("chat_tokens_total", model=DEMO_MODEL, kind="output") == tokens_out
        assert value("chat_cost_usd_total", model=DEMO_MODEL) == pytest.approx(float(cost))
        assert value("chat_streams_open") == 0
    # Through nginx, without CHAT_METRICS_TOKEN: refused (the request was forwarded).
    response, _ = request(https(site, client_address()), "GET", "/metrics")
    assert response.status == 403
    for probe in ("/healthz", "/readyz"):
        response, _ = request(https(site, client_address()), "GET", probe)
        assert response.status == 200
    assert "/readyz" not in site.access_log.read_text()


def test_a_worker_that_is_gone_is_a_json_error_from_nginx(tmp_path: Path):
    """Between a worker's death and its restart nginx itself answers the API: in the
    API's JSON, like every other /api/ error; pages keep nginx's own."""
    _require(NGINX.exists(), f"{NGINX} is missing (apt-get install nginx)")
    _require(shutil.which("openssl") is not None, "openssl is missing (apt-get install openssl)")
    https_port, http_port, nobody = free_port(), free_port(), free_port()
    cert, key = self_signed(tmp_path)
    (tmp_path / "static").mkdir()
    command = nginx_command(
        tmp_path,
        {
            "CHAT_SERVER_NAME": "localhost",
            "CHAT_HTTP_LISTEN": f"{HOST}:{http_port}",
            "CHAT_HTTPS_LISTEN": f"{HOST}:{https_port}",
            "CHAT_TLS_CERT": str(cert),
            "CHAT_TLS_KEY": str(key),
            "CHAT_UPSTREAM": f"{HOST}:{nobody}",  # nothing listens there
            "CHAT_STATIC_ROOT": str(tmp_path / "static"),
            "CHAT_LOG_DIR": str(tmp_path),
        },
    )
    with open(tmp_path / "nginx.out", "wb") as out:
        nginx = start(command, dict(os.environ), https_port, output=out)
    try:
        site = Site(https_port, http_port, nobody, "", tmp_path, tmp_path, tmp_path)
        for method, path, body in [
            ("POST", "/api/chat", {"message": "hi"}),
            ("GET", "/api/conversations", None),
        ]:
            response, data = request(https(site, client_address()), method, path, body)
            assert response.status == 503 and response.getheader("Retry-After")
            assert response.getheader("Content-Type") == "application/json"
            assert json.loads(data)["error"]["type"] == "unavailable"
        page, data = request(https(site, client_address()), "GET", "/")
        assert page.status == 502 and b"<html>" in data
    finally:
        nginx.terminate()
        nginx.wait(30)
