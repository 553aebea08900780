"""Load benchmark: our app against the seeds' pattern, both fed by one fake upstream.

    make bench                      # or: .venv/bin/python -m bench.run [--json] [--only c1,c50]

Starts `bench.fake_upstream`, our app (`uvicorn chatsite.asgi:application`, DEBUG off, a
fresh migrated SQLite file) and the fixed point it is compared with, the seeds' minimal
FastAPI + AsyncOpenAI app (`uvicorn bench.fastapi_seed:app`), each on its own 127.0.0.1
port. Each scenario both can serve is driven in alternating pairs (seed, ours, seed,
ours, …; `--pairs`, 3 by default; never both at once: client and servers share the
machine's cores), and each ratio is reported from its median pair, with the others'
range: a contended machine moves both members of a pair alike. Server CPU is read from
each server process's own CPU time (/proc/<pid>/stat), not from wall time, and every turn
of ours is checked in the database afterwards: exactly one finished row, with the
upstream's usage. Last, `starts1000` opens 1000 streams against an upstream that holds
its first token back, and reads each server thread's CPU until every upstream call was
made: the cost of opening a stream, split between the event loop and the other threads.

`image20` sends every turn with a screenshot (a 1280×800 PNG each visitor uploaded once,
before the measurement; that upload, re-encode included, is measured on its own) and
`text20` the same turns without: ours only, since the seed's app has no attachments, in
alternating pairs (text20, image20, …) when both are wanted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import re
import resource
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from PIL import Image, ImageDraw

from bench.fake_upstream import TOOL_CALL_TOKENS

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
MESSAGE_ID = re.compile(rb'"message":\s*(\d+)')
T = TypeVar("T")


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    requests: int
    concurrency: int
    tokens: int
    delay_ms: float
    mode: str = "sse"  # or "json"
    ttft_ms: float = 50.0
    time_limit_s: float = 60.0
    tool_rounds: int = 0  # model calls that ask for a tool before the reply (ours only)


SCENARIOS = [
    Scenario("c1", "concurrency 1, 100 tokens 2 ms apart", 40, 1, 100, 2.0),
    Scenario("c50", "concurrency 50, 100 tokens 10 ms apart", 300, 50, 100, 10.0),
    Scenario("c50-json", "as c50, Accept: application/json", 150, 50, 100, 10.0, "json"),
    Scenario(
        "resume50",
        "as c50, deferred; each reader hangs up mid-reply and resumes (Last-Event-ID)",
        150,
        50,
        100,
        10.0,
        "resume",
    ),
    Scenario(
        "tools50",
        "as c50, with a tool offered: a plain reply, then each turn one tool round first",
        300,
        50,
        100,
        10.0,
        tool_rounds=1,
    ),
    Scenario(
        "burst1000",
        "1000 streams opened at once, 40 tokens 400 ms apart",
        1000,
        1000,
        40,
        400.0,
        time_limit_s=90.0,
    ),
    # The same turns with and without an image: what a screenshot adds to a turn's CPU.
    Scenario("text20", "concurrency 20, 100 tokens 10 ms apart, text only", 200, 20, 100, 10.0),
    Scenario(
        "image20",
        "as text20, each turn with a 1280x800 PNG screenshot",
        200,
        20,
        100,
        10.0,
        "image",
    ),
]


# Stream starts alone: the upstream holds each first token back this long, so the server's
# CPU until it has made every upstream call is the cost of opening streams, nothing else.
STARTS = Scenario(
    "starts1000",
    "CPU per stream start, 1000 at once",
    1000,
    1000,
    1,
    1.0,
    ttft_ms=10_000.0,
    time_limit_s=60.0,
)


# Admin under load: 20 chats streaming while staff load the usage dashboard and the message
# list over ADMIN_MESSAGES stored messages, again and again. Ours only (the seed has no
# admin); the same chats are first driven with no admin traffic, for the baseline.
ADMIN_CHATS = Scenario(
    "admin20",
    "20 chats streaming, with and without the dashboard and message list loading",
    300,
    20,
    100,
    10.0,
    time_limit_s=90.0,
)
ADMIN_MESSAGES = 200_000
ADMIN_PAGES = ("/admin/chat/message/usage/?period=30d", "/admin/chat/message/")
ADMIN_LOADERS = 2  # staff members reloading at once
ADMIN_TTFT_P99_BUDGET_MS = 50.0


@dataclass
class UploadCost:
    uploads: int
    errors: int
    cpu_ms_per_upload: float  # the server's, re-encode included
    bytes_per_upload: int


@dataclass
class AdminLoad:
    chats_p99_ms: float | None  # chat TTFT p99 without admin traffic
    chats_with_admin_p99_ms: float | None
    chats_errors: int
    page_loads: int
    page_errors: int
    page_mean_ms: float | None
    messages: int = ADMIN_MESSAGES


@dataclass
class StartCost:
    target: str
    starts: int
    seconds: float  # until the upstream had been called for every one
    cpu_ms_per_start: float
    loop_thread_ms_per_start: float  # the event loop's thread
    other_threads_ms_per_start: float  # the database thread, executors
    errors: int = 0
    recorded: str = ""


@dataclass
class Outcome:
    ok: bool
    ttft_s: float | None
    total_s: float
    message_id: int | None = None
    error: str = ""


@dataclass
class Figures:
    target: str
    scenario: str
    requests: int
    errors: int
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    ttft_p99_ms: float | None
    total_s: float
    cpu_ms_per_reply: float
    peak_open_streams: int
    rss_base_mib: float
    rss_peak_mib: float
    kib_per_open_stream: float | None
    recorded: str = ""
    first_errors: list[str] = field(default_factory=list)
    pair: int = 1  # which of the alternating pairs


# --- processes ----------------------------------------------------------------------------


def listening(port: int) -> bool:
    """Whether something accepts connections on HOST:port now."""
    with socket.socket() as sock:
        return sock.connect_ex((HOST, port)) == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def stat_cpu_seconds(stat: Path) -> float:
    """utime + stime from a /proc .../stat file (the command name may hold spaces)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_seconds(pid: int) -> float:
    return stat_cpu_seconds(Path(f"/proc/{pid}/stat"))


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of `pid`; the main thread's id is `pid` itself."""
    seconds = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            seconds[task.name] = stat_cpu_seconds(task / "stat")
    return seconds


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE


async def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}; see its log")
        try:
            _, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return
    raise SystemExit(f"{what} did not listen on {port} within 30 s")


@contextlib.contextmanager
def started(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def uvicorn_cmd(app: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--host",
        HOST,
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
        "--backlog",
        "4096",
    ]


def app_env(
    upstream_port: int, db_path: Path, database_url: str = "", redis_url: str = ""
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHAT_", "OPENAI_"))}
    env.update(
        CHAT_READ_DOTENV="false",
        DEBUG="false",
        SECRET_KEY="bench-only-not-secret",
        ALLOWED_HOSTS=HOST,
        DATABASE_URL=f"sqlite:///{db_path}",
        MEDIA_ROOT=str(db_path.parent / "media"),
        STATIC_ROOT=str(db_path.parent / "static"),
        OPENAI_BASE_URL=f"http://{HOST}:{upstream_port}/v1",
        OPENAI_API_KEY="x",
        CHAT_PROVIDER="openai",
        CHAT_API="chat",
        CHAT_MODEL="fake-model",
        CHAT_VISION_MODELS="fake-model",
        CHAT_ALLOW_ANONYMOUS="true",
        # Plain HTTP on loopback: no TLS proxy in front of the benchmark.
        SECURE_SSL_REDIRECT="false",
        SESSION_COOKIE_SECURE="false",
        CSRF_COOKIE_SECURE="false",
        # One client address opens every chat here: limits stay on (their bookkeeping is
        # part of the cost measured) but high enough never to refuse.
        CHAT_RATE_LIMIT="1000000/min",
        CHAT_MAX_CONCURRENT_STREAMS="100000",
    )
    env.pop("REDIS_URL", None)
    if database_url:
        env["DATABASE_URL"] = database_url
    if redis_url:
        env["REDIS_URL"] = redis_url
        env["CHAT_CACHE_PREFIX"] = f"bench-{os.getpid()}"
    return env


# --- client -------------------------------------------------------------------------------


class User:
    """One simulated visitor: keeps its cookies (the anonymous identity) like a browser;
    `auth` headers (a personal API token) make it a signed-in person instead. Image
    scenarios keep the file it uploaded."""

    def __init__(self, auth: dict[str, str] | None = None) -> None:
        self.cookies: dict[str, str] = {}
        self.cookie = ""
        self.auth = auth or {}
        self.file_id = ""

    def headers(self, **extra: str) -> dict[str, str]:
        extra = {**extra, **self.auth}
        return {**extra, "Cookie": self.cookie} if self.cookie else dict(extra)

    def remember(self, response: aiohttp.ClientResponse) -> None:
        for name, morsel in response.cookies.items():
            self.cookies[name] = morsel.value
        self.cookie = "; ".join(f"{name}={value}" for name, value in self.cookies.items())


def open_request(gauge: list[int]) -> None:
    """Count a request in flight: gauge is [open now, most open at once]."""
    gauge[0] += 1
    gauge[1] = max(gauge[1], gauge[0])


async def chat_once(
    session: aiohttp.ClientSession, url: str, mode: str, user: User, gauge: list[int]
) -> Outcome:
    headers = user.headers(
        **{
            "Content-Type": "application/json",
            "Accept": "application/json" if mode == "json" else "text/event-stream",
        }
    )
    request: dict[str, Any] = {"message": "Say something."}
    if user.file_id:
        request["attachments"] = [user.file_id]
    began = time.perf_counter()
    ttft: float | None = None
    body = bytearray()
    open_request(gauge)
    try:
        async with session.post(url, json=request, headers=headers) as r:
            user.remember(r)
            async for chunk in r.content.iter_any():
                if ttft is None and b"event: delta" in chunk:
                    ttft = time.perf_counter() - began
                body += chunk
            total = time.perf_counter() - began
            if r.status != 200:
                return Outcome(False, ttft, total, error=f"HTTP {r.status}: {bytes(body[:200])!r}")
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        return Outcome(False, ttft, time.perf_counter() - began, error=repr(exc)[:200])
    finally:
        gauge[0] -= 1
    found = MESSAGE_ID.search(body)
    message_id = int(found.group(1)) if found else None
    if mode == "json":
        reply = json.loads(body)
        ok = bool(reply.get("reply")) and reply.get("status", "completed") == "completed"
        return Outcome(ok, None, total, message_id, "" if ok else bytes(body[:200]).decode())
    ok = b"event: end" in body and b"event: error" not in body
    return Outcome(ok, ttft, total, message_id, "" if ok else bytes(body[-200:]).decode())


LAST_ID = re.compile(rb"^id: (\d+)$", re.M)
RESUME_AFTER_FRAMES = 20  # about a fifth of a 100-token reply


async def resume_once(
    session: aiohttp.ClientSession, url: str, user: User, gauge: list[int], tokens: int
) -> Outcome:
    """A page's turn whose connection drops mid-reply: POST ?stream=defer, open the stream,
    hang up after some frames, reconnect with Last-Event-ID and read to the end. The reply
    must arrive whole, once."""
    headers = user.headers(**{"Content-Type": "application/json"})
    began = time.perf_counter()
    ttft: float | None = None
    body = bytearray()
    open_request(gauge)
    try:
        async with session.post(
            f"{url}?stream=defer", json={"message": "Say something."}, headers=headers
        ) as r:
            user.remember(r)
            created = await r.json()
            if r.status != 201:
                return Outcome(False, None, time.perf_counter() - began, error=str(created)[:200])
        stream = url.rsplit("/api/", 1)[0] + created["stream_url"]
        sse = {"Accept": "text/event-stream", "Cookie": user.cookie}
        async with session.get(stream, headers=sse) as r:
            async for chunk in r.content.iter_any():
                if ttft is None and b"event: delta" in chunk:
                    ttft = time.perf_counter() - began
                body += chunk
                if body.count(b"\nid: ") >= RESUME_AFTER_FRAMES:
                    break
        body = body[: body.rindex(b"\n\n") + 2]  # whole frames only, as EventSource keeps
        ids = LAST_ID.findall(body)
        resume = {**sse, "Last-Event-ID": ids[-1].decode() if ids else "0"}
        async with session.get(stream, headers=resume) as r:
            async for chunk in r.content.iter_any():
                body += chunk
        total = time.perf_counter() - began
    except (TimeoutError, aiohttp.ClientError, OSError, KeyError, ValueError) as exc:
        return Outcome(False, ttft, time.perf_counter() - began, error=repr(exc)[:200])
    finally:
        gauge[0] -= 1
    numbers = [int(n) for n in LAST_ID.findall(body)]
    text = "".join(
        json.loads(line[6:])["text"]
        for frame in bytes(body).split(b"\n\n")
        if b"event: delta" in frame
        for line in frame.decode().split("\n")
        if line.startswith("data: ")
    )
    ok = (
        b"event: end" in body
        and numbers == list(range(1, len(numbers) + 1))  # no gap, no duplicate
        and text.count(" word") == tokens
    )
    return Outcome(ok, ttft, total, created["message"], "" if ok else bytes(body[-200:]).decode())


def screenshot() -> bytes:
    """A screenshot-like PNG of a few hundred KiB: flat panels, lines of "text", a
    gradient, and a photo (noise, which compresses as badly as one)."""
    image = Image.linear_gradient("L").resize((1280, 800)).convert("RGB")
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 260, 800), fill=(32, 36, 44))
    for row in range(40, 780, 22):
        draw.rectangle((300, row, 300 + (row * 37) % 800, row + 10), fill=(20, 20, 20))
    image.paste(Image.effect_noise((480, 300), 60).convert("RGB"), (760, 420))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


async def upload_files(base: str, users: list[User], data: bytes) -> list[Outcome]:
    """Each user uploads `data` once, as the page does (POST /api/files, multipart)."""
    outcomes: list[Outcome] = []
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        for user in users:
            form = aiohttp.FormData()
            form.add_field("file", data, filename="screenshot.png", content_type="image/png")
            began = time.perf_counter()
            async with session.post(f"{base}/api/files", data=form, headers=user.headers()) as r:
                user.remember(r)
                reply = await r.json()
            ok = r.status == 201
            user.file_id = reply.get("id", "") if ok else ""
            outcomes.append(Outcome(ok, None, time.perf_counter() - began, error=str(reply)[:200]))
    return outcomes


async def drive(
    url: str,
    scenario: Scenario,
    gauge: list[int],
    outcomes: list[Outcome] | None = None,
    auth: dict[str, str] | None = None,
    users: list[User] | None = None,
) -> tuple[list[Outcome], float]:
    """Run `scenario` against `url`; `outcomes` (if given) fills as requests end; `users`:
    the visitors to drive it as (one per concurrent worker), else new ones."""
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=scenario.time_limit_s)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        todo = iter(range(scenario.requests))
        if outcomes is None:
            outcomes = []

        async def worker() -> None:
            user = users.pop() if users else User(auth)
            for _ in todo:
                if scenario.mode == "resume":
                    outcomes.append(await resume_once(session, url, user, gauge, scenario.tokens))
                else:
                    outcomes.append(await chat_once(session, url, scenario.mode, user, gauge))

        began = time.perf_counter()
        workers = [asyncio.create_task(worker()) for _ in range(scenario.concurrency)]
        done, pending = await asyncio.wait(workers, timeout=scenario.time_limit_s + 5)
        for task in pending:
            task.cancel()
        elapsed = time.perf_counter() - began
    missing = scenario.requests - len(outcomes)
    outcomes += [Outcome(False, None, elapsed, error="scenario time limit")] * missing
    return outcomes, elapsed


async def configure_upstream(port: int, scenario: Scenario) -> None:
    config = {
        "ttft_ms": scenario.ttft_ms,
        "delay_ms": scenario.delay_ms,
        "tokens": scenario.tokens,
        "tool_rounds": scenario.tool_rounds,
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://{HOST}:{port}/_config", json=config) as response,
    ):
        response.raise_for_status()


async def measure_tools(
    scenario: Scenario,
    up_port: int,
    app: subprocess.Popen[bytes],
    port: int,
    quiet: bool,
    db_path: Path | str,
) -> list[Figures]:
    """The same chats on the app with a tool offered: plain replies first ("ours-plain"),
    then each with `tool_rounds` tool rounds before it ("ours"); the difference in CPU per
    reply is this server's cost of a tool round (two model calls, the tool, the parts)."""
    url = f"http://{HOST}:{port}/api/chat"
    results = []
    for target, rounds in (("ours-plain", 0), ("ours", scenario.tool_rounds)):
        run_as = Scenario(**{**asdict(scenario), "tool_rounds": rounds})
        await configure_upstream(up_port, run_as)
        figures, outcomes = await measure(target, app.pid, url, run_as)
        figures.recorded = check_recorded(db_path, outcomes, run_as)
        figures.scenario = scenario.name
        results.append(figures)
        if not quiet:
            print(table([figures]).splitlines()[-1], file=sys.stderr, flush=True)
    return results


# Driven in alternating pairs on our server alone (the seed's app takes no files): their
# difference is what a turn's image costs, and a pair shares the machine's conditions.
IMAGE_PAIR = ("text20", "image20")

Target = tuple[str, int, str]  # name, server pid, chat URL
# `bench.wire_floor`, between the seed's and ours in these scenarios' runs only: the CPU
# any app doing our wire work spends, so the account can say what the rest of ours costs.
FLOOR = "floor"
FLOOR_SCENARIOS = {"c50"}
# Issue 24's goal for server CPU per reply, ours / the seed's.
CPU_GOAL = 0.33


def serving(scenario: Scenario, targets: list[Target]) -> list[Target]:
    """The servers `scenario` is measured on: the wire floor only in `FLOOR_SCENARIOS`."""
    if scenario.name in FLOOR_SCENARIOS:
        return targets
    return [target for target in targets if target[0] != FLOOR]


def runs_of(
    scenario: Scenario, scenarios: list[Scenario], targets: list[Target], pairs: int
) -> list[tuple[int, Scenario, Target]]:
    """Which runs measure `scenario`, in order: the seed's app and ours (with the wire floor
    between them in `FLOOR_SCENARIOS`), `pairs` times; ours once for resumed turns (the
    seed's app resumes nothing); ours `pairs` times for text20 and image20, alternating
    when both are wanted. A pair's runs swap order every other pair (seed, ours; ours,
    seed; …): what drifts while the bench runs (the machine, the fake upstream they share)
    would otherwise always favour the same side."""
    ours = targets[-1]
    targets = serving(scenario, targets)
    if scenario.mode == "resume":
        return [(1, scenario, ours)]

    def in_turn(pair: int, runs: list[T]) -> list[T]:
        return runs if pair % 2 else runs[::-1]

    if scenario.name in IMAGE_PAIR:
        paired = [s for s in scenarios if s.name in IMAGE_PAIR]
        return [
            (pair, each, ours) for pair in range(1, pairs + 1) for each in in_turn(pair, paired)
        ]
    return [
        (pair, scenario, target)
        for pair in range(1, pairs + 1)
        for target in in_turn(pair, targets)
    ]


def percentile(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0] * 1000
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


async def measure(
    target: str,
    pid: int,
    url: str,
    scenario: Scenario,
    profile: Path | None = None,
    auth: dict[str, str] | None = None,
    users: list[User] | None = None,
) -> tuple[Figures, list[Outcome]]:
    """Drive `scenario` at one server; with `profile`, py-spy samples the server meanwhile
    (collapsed stacks, for `sort | uniq`; its sampling costs the server some CPU)."""
    spy = None
    if profile is not None:
        spy = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("py-spy")),
                "record",
                "--pid",
                str(pid),
                "--format",
                "raw",
                "--rate",
                "250",
                "--nonblocking",
                "--output",
                f"{profile}-{scenario.name}-{target}.txt",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await asyncio.sleep(1)
    gauge = [0, 0]  # open streams now, most open at once
    rss_base = rss_bytes(pid)
    rss_peak = rss_base

    async def sample_rss() -> None:
        nonlocal rss_peak
        while True:
            rss_peak = max(rss_peak, rss_bytes(pid))
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample_rss())
    cpu_before = cpu_seconds(pid)
    outcomes, elapsed = await drive(url, scenario, gauge, auth=auth, users=users)
    await asyncio.sleep(0.3)  # let the server finish its bookkeeping (turn_finish) first
    cpu = cpu_seconds(pid) - cpu_before
    sampler.cancel()
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
    ttfts = [o.ttft_s for o in outcomes if o.ok and o.ttft_s is not None]
    errors = [o.error for o in outcomes if not o.ok]
    per_stream = (rss_peak - rss_base) / 1024 / gauge[1] if scenario.concurrency >= 50 else None
    figures = Figures(
        target=target,
        scenario=scenario.name,
        requests=scenario.requests,
        errors=len(errors),
        ttft_p50_ms=percentile(ttfts, 50),
        ttft_p95_ms=percentile(ttfts, 95),
        ttft_p99_ms=percentile(ttfts, 99),
        total_s=elapsed,
        cpu_ms_per_reply=cpu * 1000 / scenario.requests,
        peak_open_streams=gauge[1],
        rss_base_mib=rss_base / 2**20,
        rss_peak_mib=rss_peak / 2**20,
        kib_per_open_stream=per_stream,
        first_errors=sorted(set(errors))[:3],
    )
    return figures, outcomes


async def upstream_calls(port: int) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{HOST}:{port}/_stats") as response,
    ):
        calls: int = (await response.json())["calls"]
        return calls


async def measure_starts(
    target: str, pid: int, url: str, upstream_port: int
) -> tuple[StartCost, list[Outcome]]:
    """Open STARTS.requests streams at once; CPU until the upstream was called for each
    (or, for a request that failed, until it failed)."""
    calls_before = await upstream_calls(upstream_port)
    threads_before = thread_cpu_seconds(pid)
    began = time.perf_counter()
    ended: list[Outcome] = []
    streams = asyncio.create_task(drive(url, STARTS, [0, 0], ended))
    while True:
        calls = await upstream_calls(upstream_port) - calls_before
        failed = sum(not outcome.ok for outcome in ended)
        if calls + failed >= STARTS.requests or streams.done():
            break
        await asyncio.sleep(0.02)
    seconds = time.perf_counter() - began
    threads = thread_cpu_seconds(pid)
    outcomes, _ = await streams
    used = {tid: cpu - threads_before.get(tid, 0.0) for tid, cpu in threads.items()}
    loop = used.pop(str(pid), 0.0)
    per = 1000 / max(calls, 1)
    cost = StartCost(
        target,
        calls,
        seconds,
        (loop + sum(used.values())) * per,
        loop * per,
        sum(used.values()) * per,
        errors=sum(not outcome.ok for outcome in outcomes),
    )
    return cost, outcomes


def check_recorded(db_path: Path | str, outcomes: list[Outcome], scenario: Scenario) -> str:
    """Every turn: exactly one assistant row, finished, with the upstream's usage."""
    ids = [o.message_id for o in outcomes if o.message_id is not None]
    if len(ids) < scenario.requests:
        return f"FAIL: {scenario.requests - len(ids)} replies named no message"
    rows = recorded_rows(db_path, ids)
    good = [
        row
        for row in rows
        if row[1] == "completed"
        and row[2] == scenario.tokens + scenario.tool_rounds * TOOL_CALL_TOKENS
        and not row[3]
        and row[4] is not None
        and row[5] == 1
    ]
    if len(good) == len(ids) == len(set(ids)):
        return f"ok {len(good)}/{scenario.requests}"
    return f"FAIL: {len(good)}/{scenario.requests} finished with usage"


def migrate(env: dict[str, str]) -> None:
    """`manage.py migrate` on the database `env` names, then `collectstatic` as `make
    serve-prod` runs it (DEBUG off, pages name the collected files), quietly."""
    for command in ("migrate", "collectstatic"):
        subprocess.run(
            [sys.executable, "manage.py", command, "--no-input", "-v", "0"],
            env=env,
            cwd=ROOT,
            check=True,
        )


def seed(env: dict[str, str], messages: int) -> float:
    """Store `messages` messages of a team's history (`bench.seed`); returns seconds."""
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "bench.seed", "--messages", str(messages)],
        env=env,
        cwd=ROOT,
        check=True,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - began


async def admin_session(base: str, env: dict[str, str]) -> dict[str, str]:
    """A signed-in staff member's cookies (a superuser made for the benchmark)."""
    subprocess.run(
        [sys.executable, "manage.py", "createsuperuser", "--noinput", "-v", "0"],
        env={
            **env,
            "DJANGO_SUPERUSER_USERNAME": "bench",
            "DJANGO_SUPERUSER_EMAIL": "bench@example.com",
            "DJANGO_SUPERUSER_PASSWORD": "bench-only-password",
        },
        cwd=ROOT,
        check=True,
    )
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        async with session.get(f"{base}/admin/login/") as page:
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', await page.text())
        assert token, "no CSRF token on the admin login page"
        form = {
            "csrfmiddlewaretoken": token.group(1),
            "username": "bench",
            "password": "bench-only-password",
        }
        async with session.post(
            f"{base}/admin/login/?next=/admin/",
            data=form,
            headers={"Referer": f"{base}/admin/login/"},
            allow_redirects=False,
        ) as done:
            assert done.status == 302, f"admin login failed: HTTP {done.status}"
        return {cookie.key: cookie.value for cookie in jar}


async def load_admin_pages(
    base: str, cookies: dict[str, str], stop: asyncio.Event
) -> tuple[int, int, list[float]]:
    """Reload the admin pages until `stop`; returns loads, errors and seconds per load."""
    header = {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}
    loads = errors = 0
    seconds: list[float] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        while not stop.is_set():
            for page in ADMIN_PAGES:
                began = time.perf_counter()
                try:
                    async with session.get(base + page, headers=header) as r:
                        body = await r.read()
                        ok = r.status == 200 and b"Log in" not in body[:3000]
                except (TimeoutError, aiohttp.ClientError, OSError):
                    ok = False
                loads += 1
                errors += not ok
                seconds.append(time.perf_counter() - began)
    return loads, errors, seconds


async def measure_admin_load(pid: int, base: str, env: dict[str, str], db_path: Path) -> AdminLoad:
    seed(env, ADMIN_MESSAGES)
    cookies = await admin_session(base, env)
    url = f"{base}/api/chat"
    alone, _ = await measure("ours", pid, url, ADMIN_CHATS)
    stop = asyncio.Event()
    loaders = [
        asyncio.create_task(load_admin_pages(base, cookies, stop)) for _ in range(ADMIN_LOADERS)
    ]
    await asyncio.sleep(1.0)  # the pages are loading when the chats begin
    beside, _ = await measure("ours", pid, url, ADMIN_CHATS)
    stop.set()
    pages = await asyncio.gather(*loaders)
    seconds = [s for _, _, each in pages for s in each]
    return AdminLoad(
        chats_p99_ms=alone.ttft_p99_ms,
        chats_with_admin_p99_ms=beside.ttft_p99_ms,
        chats_errors=alone.errors + beside.errors,
        page_loads=sum(loads for loads, _, _ in pages),
        page_errors=sum(errors for _, errors, _ in pages),
        page_mean_ms=statistics.mean(seconds) * 1000 if seconds else None,
    )


def admin_line(load: AdminLoad) -> str:
    rise = (
        load.chats_with_admin_p99_ms - load.chats_p99_ms
        if load.chats_p99_ms is not None and load.chats_with_admin_p99_ms is not None
        else None
    )
    verdict = "met" if rise is not None and rise <= ADMIN_TTFT_P99_BUDGET_MS else "MISSED"
    return (
        f"{ADMIN_CHATS.name} ours   chat TTFT p99 {fmt(load.chats_p99_ms)} ms alone, "
        f"{fmt(load.chats_with_admin_p99_ms)} ms beside {load.page_loads} admin page loads "
        f"({fmt(load.page_mean_ms)} ms each on average, {load.page_errors} errors) over "
        f"{load.messages:,} messages: {'+' if (rise or 0) >= 0 else ''}{fmt(rise)} ms "
        f"(target <= +{ADMIN_TTFT_P99_BUDGET_MS:.0f}) {verdict}; chat errors {load.chats_errors}"
    )


def recorded_rows(db_path: Path | str, ids: list[int]) -> list[tuple[Any, ...]]:
    """Each message's status, usage and how many assistant rows its conversation has."""
    sql = (
        "SELECT m.id, m.status, m.output_tokens, m.usage_estimated, m.finished_at,"
        " (SELECT COUNT(*) FROM chat_message a WHERE a.conversation_id = m.conversation_id"
        "  AND a.role = 'assistant') FROM chat_message m WHERE m.id IN ({marks})"
    )
    if isinstance(db_path, str):  # a PostgreSQL URL
        import psycopg

        with psycopg.connect(db_path) as db:
            return db.execute(sql.format(marks=",".join(["%s"] * len(ids))), ids).fetchall()
    with contextlib.closing(sqlite3.connect(db_path, timeout=30)) as db:
        return db.execute(sql.format(marks=",".join("?" * len(ids))), ids).fetchall()


# --- report -------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(results: list[Figures]) -> str:
    head = (
        f"{'scenario':<10} {'server':<6} {'pair':>4} {'reqs':>5} {'err':>4} {'ttft p50':>9} "
        f"{'p95':>7} {'p99':>7} {'total s':>8} {'cpu ms/reply':>13} {'open':>5} "
        f"{'rss MiB':>8} {'KiB/stream':>10}  recorded"
    )
    lines = [head, "-" * len(head)]
    for f in results:
        lines.append(
            f"{f.scenario:<10} {f.target:<6} {f.pair:>4} {f.requests:>5} {f.errors:>4} "
            f"{fmt(f.ttft_p50_ms):>9} {fmt(f.ttft_p95_ms):>7} {fmt(f.ttft_p99_ms):>7} "
            f"{f.total_s:>8.2f} {f.cpu_ms_per_reply:>13.2f} {f.peak_open_streams:>5} "
            f"{f.rss_peak_mib:>8.1f} {fmt(f.kib_per_open_stream):>10}  {f.recorded}"
        )
        lines += [f"{'':<18}error: {e}" for e in f.first_errors]
    return "\n".join(lines)


async def measure_uploads(pid: int, base: str, users: list[User]) -> UploadCost:
    """Each user's one upload (re-encoded by the server), the server's CPU per upload."""
    data = screenshot()
    cpu_before = cpu_seconds(pid)
    outcomes = await upload_files(base, users, data)
    await asyncio.sleep(0.3)
    cpu = cpu_seconds(pid) - cpu_before
    return UploadCost(
        uploads=len(users),
        errors=sum(not o.ok for o in outcomes),
        cpu_ms_per_upload=cpu * 1000 / max(1, len(users)),
        bytes_per_upload=len(data),
    )


def upload_line(cost: UploadCost) -> str:
    return (
        f"uploads: {cost.uploads} PNGs of {cost.bytes_per_upload / 1024:.0f} KiB, "
        f"{cost.errors} errors, {cost.cpu_ms_per_upload:.1f} ms server CPU each "
        "(re-encode included)"
    )


def start_line(cost: StartCost) -> str:
    return (
        f"{STARTS.name} {cost.target:<6} {cost.cpu_ms_per_start:.2f} ms CPU per stream start "
        f"(event loop {cost.loop_thread_ms_per_start:.2f}, other threads "
        f"{cost.other_threads_ms_per_start:.2f}); {cost.starts} upstream calls made "
        f"after {cost.seconds:.2f} s; {cost.errors} errors"
        + (f"; recorded {cost.recorded}" if cost.recorded else "")
    )


def median_by(items: list[T], key: Callable[[T], float]) -> T | None:
    """The item whose `key` is the median of the items' (the lower middle of an even count)."""
    if not items:
        return None
    return sorted(items, key=key)[(len(items) - 1) // 2]


def median_pair(
    results: list[Figures], scenario: str, figure: Callable[[Figures, Figures], float | None]
) -> tuple[float, list[float]] | None:
    """`figure(seed, ours)` of each alternating pair of `scenario`: the median pair's value
    and every pair's, in pair order (None when no pair could be measured)."""
    by = {(f.scenario, f.target, f.pair): f for f in results}
    values = []
    for pair in sorted({f.pair for f in results if f.scenario == scenario}):
        seed, ours = by.get((scenario, "seed", pair)), by.get((scenario, "ours", pair))
        if seed is not None and ours is not None and (value := figure(seed, ours)) is not None:
            values.append(value)
    middle = median_by(values, float)
    return None if middle is None else (middle, values)


def _ratio(ours: float | None, seed: float | None) -> float | None:
    return ours / seed if ours is not None and seed else None


# The figures (issue 24): what each is, how it is read from a pair, its goal.
RATIOS: list[tuple[str, str, Callable[[Figures, Figures], float | None], str, str]] = [
    (
        "server CPU per 100-token reply, ours / seed's (c50)",
        "c50",
        lambda seed, ours: _ratio(ours.cpu_ms_per_reply, seed.cpu_ms_per_reply),
        "x",
        f"<= {CPU_GOAL}x",
    ),
    (
        "added time to first token at concurrency 1 (p50)",
        "c1",
        lambda seed, ours: (
            ours.ttft_p50_ms - seed.ttft_p50_ms
            if ours.ttft_p50_ms is not None and seed.ttft_p50_ms is not None
            else None
        ),
        " ms",
        "<= +1.5 ms",
    ),
    (
        "TTFT p99 at concurrency 50, ours / seed's",
        "c50",
        lambda seed, ours: _ratio(ours.ttft_p99_ms, seed.ttft_p99_ms),
        "x",
        "<= 0.9x",
    ),
    (
        "1,000 streams opened at once: TTFT p99, ours / seed's",
        "burst1000",
        lambda seed, ours: _ratio(ours.ttft_p99_ms, seed.ttft_p99_ms),
        "x",
        "<= 0.9x",
    ),
]


def floor_verdict(results: list[Figures]) -> str | None:
    """The wire floor's CPU in its median pair: its share of the seed's, and what ours
    spends beyond it (what storage, Django and the rest of the product cost)."""
    lines = []
    for scenario in sorted(FLOOR_SCENARIOS):
        by = {(f.target, f.pair): f for f in results if f.scenario == scenario}
        runs = [
            (seed, floor, ours, share)
            for (target, pair), floor in by.items()
            if target == FLOOR
            and (seed := by.get(("seed", pair))) is not None
            and (ours := by.get(("ours", pair))) is not None
            and (share := _ratio(floor.cpu_ms_per_reply, seed.cpu_ms_per_reply)) is not None
        ]
        middle = median_by(runs, lambda run: run[3])
        if middle is None:
            continue
        seed, floor, ours, share = middle
        lines.append(
            f"wire floor ({scenario}, bench.wire_floor): {floor.cpu_ms_per_reply:.2f} ms per "
            f"reply, {share:.2f}x the seed's; ours spends "
            f"{ours.cpu_ms_per_reply - floor.cpu_ms_per_reply:.2f} ms more; the goal leaves "
            f"{CPU_GOAL * seed.cpu_ms_per_reply - floor.cpu_ms_per_reply:.2f} ms above it"
        )
    return "\n".join(lines) or None


def image_verdict(results: list[Figures]) -> str | None:
    """What an image adds to a turn's CPU, from the median of text20/image20's pairs."""
    by = {(f.scenario, f.pair): f for f in results if f.target == "ours"}
    pairs = [
        (text, image)
        for (name, pair), text in sorted(by.items())
        if name == IMAGE_PAIR[0] and (image := by.get((IMAGE_PAIR[1], pair))) is not None
    ]
    added = [image.cpu_ms_per_reply / text.cpu_ms_per_reply - 1 for text, image in pairs]
    median = median_by(list(range(len(pairs))), added.__getitem__)
    if median is None:
        return None
    text, image = pairs[median]
    each = ", ".join(f"{value:+.1%}" for value in added)
    return (
        f"CPU per turn with an image: {image.cpu_ms_per_reply:.2f} ms vs "
        f"{text.cpu_ms_per_reply:.2f} ms text only ({added[median]:+.1%}; pairs: {each}; "
        "target <= +10%, plus the one-time upload)"
    )


def verdicts(results: list[Figures]) -> list[str]:
    out: list[str] = []
    for title, scenario, figure, unit, goal in RATIOS:
        found = median_pair(results, scenario, figure)
        if found is None:
            continue
        median, values = found
        sign = "+" if unit == " ms" and median >= 0 else ""
        each = ", ".join(f"{value:.2f}" for value in values)
        out.append(f"{title}: {sign}{median:.2f}{unit} (pairs: {each}; goal {goal})")
    # Memory: the first burst on a fresh process (later ones reuse what it freed).
    first = {
        f.target: f for f in results if f.scenario == "burst1000" and f.pair == 1 and f.errors == 0
    }
    if (ours := first.get("ours")) and ours.kib_per_open_stream is not None:
        seed = first.get("seed")
        seed_kib = f"{seed.kib_per_open_stream:.0f}" if seed and seed.kib_per_open_stream else "-"
        out.append(
            f"memory per open stream (first burst1000): {ours.kib_per_open_stream:.0f} KiB "
            f"(seed's {seed_kib} KiB; goal <= 80 KiB)"
        )
    if (line := floor_verdict(results)) is not None:
        out.append(line)
    if (line := image_verdict(results)) is not None:
        out.append(line)
    by = {(f.scenario, f.target): f for f in results}
    plain, tooled = by.get(("tools50", "ours-plain")), by.get(("tools50", "ours"))
    if plain and tooled:
        per_round = tooled.cpu_ms_per_reply - plain.cpu_ms_per_reply
        out.append(f"CPU per tool round (tools50): {per_round:.2f} ms (target <= 5)")
    bursts = [f for f in results if f.scenario == "burst1000" and f.target == "ours"]
    if bursts:
        errors = sum(f.errors for f in bursts)
        recorded = ", ".join(f.recorded for f in bursts)
        out.append(f"1000 at once: errors {errors}, recorded {recorded}")
    return out


# --- main ---------------------------------------------------------------------------------


async def run(
    scenarios: list[Scenario],
    workdir: Path,
    quiet: bool,
    profile: bool = False,
    with_starts: bool = True,
    with_admin: bool = True,
    database_url: str = "",
    redis_url: str = "",
    pairs: int = 3,
) -> tuple[list[Figures], list[StartCost], AdminLoad | None, UploadCost | None]:
    up_port, app_port, seed_port, tools_port = free_port(), free_port(), free_port(), free_port()
    floor_port = free_port()
    db_path: Path | str = database_url or workdir / "bench.sqlite3"
    env = app_env(up_port, workdir / "bench.sqlite3", database_url, redis_url)
    migrate(env)
    app_log = workdir / "app.log"
    upstream_cmd = [sys.executable, "-m", "bench.fake_upstream", "--port", str(up_port)]
    with (
        started(upstream_cmd, env, workdir / "upstream.log") as upstream,
        started(uvicorn_cmd("chatsite.asgi:application", app_port), env, app_log) as app,
        started(
            uvicorn_cmd("bench.fastapi_seed:app", seed_port), env, workdir / "seed.log"
        ) as seed,
        started(
            uvicorn_cmd("bench.wire_floor:app", floor_port), env, workdir / "floor.log"
        ) as floor,
        # Ours with a Python tool offered, for the tool scenarios (the others offer none).
        started(
            uvicorn_cmd("chatsite.asgi:application", tools_port),
            {**env, "CHAT_TOOLS": "chat.tools.examples.current_time"},
            workdir / "tools-app.log",
        ) as tools_app,
    ):
        await wait_for_port(tools_port, tools_app, "our app with a tool")
        await wait_for_port(up_port, upstream, "fake upstream")
        await wait_for_port(app_port, app, "our app")
        await wait_for_port(seed_port, seed, "the seeds' FastAPI app")
        await wait_for_port(floor_port, floor, "the wire floor")
        targets = [
            ("seed", seed.pid, f"http://{HOST}:{seed_port}/chat"),
            (FLOOR, floor.pid, f"http://{HOST}:{floor_port}/chat"),
            ("ours", app.pid, f"http://{HOST}:{app_port}/api/chat"),
        ]
        warmup = Scenario("warmup", "", 20, 4, 10, 1.0, ttft_ms=5.0)
        await configure_upstream(up_port, warmup)
        for _, _, url in targets:
            await drive(url, warmup, [0, 0])
        results: list[Figures] = []
        starts: list[StartCost] = []
        upload_cost: UploadCost | None = None
        for scenario in scenarios:
            if scenario.tool_rounds:
                results += await measure_tools(
                    scenario, up_port, tools_app, tools_port, quiet, db_path
                )
                continue
            if scenario.name == IMAGE_PAIR[1] and any(s.name == IMAGE_PAIR[0] for s in scenarios):
                continue  # driven in text20's pairs
            for pair, run_as, (target, pid, url) in runs_of(scenario, scenarios, targets, pairs):
                await configure_upstream(up_port, run_as)
                users = None
                if run_as.mode == "image":
                    users = [User() for _ in range(run_as.concurrency)]
                    upload_cost = await measure_uploads(pid, f"http://{HOST}:{app_port}", users)
                    if not quiet:
                        print(upload_line(upload_cost), file=sys.stderr, flush=True)
                figures, outcomes = await measure(
                    target,
                    pid,
                    url,
                    run_as,
                    workdir / f"pair{pair}" if profile else None,
                    users=users,
                )
                figures.pair = pair
                if target == "ours":
                    figures.recorded = check_recorded(db_path, outcomes, run_as)
                results.append(figures)
                if not quiet:
                    print(table([figures]).splitlines()[-1], file=sys.stderr, flush=True)
        # Last: its thousand finished streams would otherwise inflate the others' memory.
        if with_starts:
            await configure_upstream(up_port, STARTS)
            for target, pid, url in serving(STARTS, targets):
                cost, outcomes = await measure_starts(target, pid, url, up_port)
                if target == "ours":
                    cost.recorded = check_recorded(db_path, outcomes, STARTS)
                starts.append(cost)
                if not quiet:
                    print(start_line(cost), file=sys.stderr, flush=True)
        # After everything else: it stores 200,000 messages in the database.
        admin_load = None
        if with_admin and isinstance(db_path, Path):  # it seeds the SQLite file directly
            await configure_upstream(up_port, ADMIN_CHATS)
            admin_load = await measure_admin_load(
                app.pid, f"http://{HOST}:{app_port}", env, db_path
            )
            if not quiet:
                print(admin_line(admin_load), file=sys.stderr, flush=True)
    return results, starts, admin_load, upload_cost


def main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark our app against the seeds' app.")
    parser.add_argument(
        "--pairs", type=int, default=3, help="alternating runs of each scenario on each server"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, DB)")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy every server measured (implies --keep)"
    )
    parser.add_argument(
        "--database-url", default="", help="an empty PostgreSQL database (default: SQLite)"
    )
    parser.add_argument("--redis-url", default="", help="Redis for the cache and turn logs")
    parser.add_argument(
        "--ledger-messages",
        type=int,
        default=0,
        help="messages the ledger scenario stores (default 1,000,000; 5,000,000 on PostgreSQL)",
    )
    args = parser.parse_args()
    only = args.only.split(",") if args.only else []
    wanted = [s for s in SCENARIOS if not only or s.name in only]
    with_starts = not only or STARTS.name in only
    with_admin = not only or ADMIN_CHATS.name in only
    with_ledger = not only or "ledger" in only
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 16384)), hard))
    workdir = Path(tempfile.mkdtemp(prefix="chat-bench-"))
    ledger_lines: list[str] = []
    try:
        results, starts, admin_load, upload_cost = _event_loop_runner()(
            run(
                wanted,
                workdir,
                args.json,
                args.profile,
                with_starts,
                with_admin,
                args.database_url,
                args.redis_url,
                args.pairs,
            )
        )
        if with_ledger:
            from bench.ledger import report, run_ledger

            messages = args.ledger_messages or (5_000_000 if args.database_url else 1_000_000)
            ledger = _event_loop_runner()(
                run_ledger(workdir, messages, args.database_url, args.redis_url)
            )
            ledger_lines = report(ledger)
    finally:
        if not (args.keep or args.profile):
            subprocess.run(["rm", "-rf", str(workdir)], check=False)
        else:
            print(f"work dir: {workdir}", file=sys.stderr)
    if args.json:
        print(
            json.dumps(
                {
                    "machine": machine(),
                    "results": [asdict(r) for r in results],
                    "starts": [asdict(s) for s in starts],
                    "admin": asdict(admin_load) if admin_load else None,
                    "ledger": ledger_lines,
                    "uploads": asdict(upload_cost) if upload_cost else None,
                }
            )
        )
        return
    print(f"machine: {machine()}")
    print(table(results))
    for cost in starts:
        print(start_line(cost))
    if admin_load is not None:
        print(admin_line(admin_load))
    for line in ledger_lines:
        print(line)
    if upload_cost is not None:
        print(upload_line(upload_cost))
    for line in verdicts(results):
        print(line)


def machine() -> str:
    cores = os.cpu_count()
    mem = os.sysconf("SC_PHYS_PAGES") * PAGE_SIZE / 2**30
    return f"{cores} cores, {mem:.0f} GiB RAM, Python {sys.version.split()[0]}"


def _event_loop_runner() -> Callable[[Coroutine[Any, Any, T]], T]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


if __name__ == "__main__":
    main()
