"""`make chaos`: turns driven through nginx while the service's parts are made to fail,
then a check that nothing was lost or counted twice.

    .venv/bin/python -m bench.chaos [--turns 500] [--concurrency 24] [--keep]

Starts a stack of its own (`bench.stack`: a PostgreSQL cluster and a Redis on free
ports, the fake upstream failing `--fault-rate` of its streams, `uvicorn --workers 2`
behind deploy/nginx/chat.conf), then drives `--turns` turns as several signed-in people,
a third each: a direct SSE stream (`?stream=resumable`), a deferred turn read to its end,
and a deferred turn whose reader hangs up mid-reply and resumes with Last-Event-ID. A
reader whose connection breaks reconnects with Last-Event-ID, as EventSource does; a
POST that fails is sent again, as a person would. Meanwhile, one after the other: one
worker is killed with `kill -9` (uvicorn's supervisor starts another), Redis is
restarted, PostgreSQL is restarted.

Then, once a lease period has passed, it checks and prints: every turn has exactly one
final row and none is `pending` or `streaming`; each reader ended with `end` or a final
`error`, the status its row has; `manage.py chat_ledger --verify`; each person's budget
equals their rows' cost; no more upstream calls than claimed turns (never a second call
for one); no 5xx except while a dependency was down, and those JSON. Exits 1 listing any
violation. The machine's own PostgreSQL and Redis are never touched.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp

from bench.run import HOST, ROOT
from bench.stack import Stack, run_in_workdir, stack_arguments

MODES = ("direct", "deferred", "resumed")
RESUME_AFTER_FRAMES = 8  # a resumed reader hangs up after this many deltas
RECONNECT_SECONDS = 0.5  # between a reader's attempts (EventSource's retry is ours)
ATTEMPTS = 120  # a reader's or a POST's, about a minute: past any outage here
OUTAGE_SLACK_SECONDS = 10.0  # after a dependency is back: pools reconnect, leases lapse
DOWN_SECONDS = 3.0  # how long Redis and PostgreSQL stay down
# A turn still without its final event after this long is a violation (a stream kept
# open by pings forever would otherwise hold the run).
TURN_DEADLINE_SECONDS = 180.0


@dataclass
class Turn:
    index: int
    mode: str
    token: str
    message_id: int | None = None
    final: str = ""  # the reader's last event: "end" or "error"
    status: str = ""  # as that event said
    error_type: str = ""
    posts: int = 0
    reconnects: int = 0
    problem: str = ""


@dataclass
class ServerError:
    at: float  # seconds since the start
    status: int
    json_body: bool
    what: str


@dataclass
class Disruption:
    name: str
    began: float
    ended: float = 0.0


@dataclass
class Run:
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    errors: list[ServerError] = field(default_factory=list)
    disruptions: list[Disruption] = field(default_factory=list)

    def now(self) -> float:
        return time.monotonic() - self.started


class Broken(Exception):
    """The connection ended before a final event."""


async def sse(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[int | None, str, Any]]:
    """(id, event, data) per SSE frame, as they arrive."""
    event_id: int | None = None
    name, data = "message", ""
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if line.startswith("id:"):
            event_id = int(line[3:].strip())
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data = line[5:].strip()
        elif not line and data:
            yield event_id, name, json.loads(data)
            event_id, name, data = None, "message", ""


class Driver:
    def __init__(self, session: aiohttp.ClientSession, base: str, run: Run) -> None:
        self.session = session
        self.base = base
        self.run = run

    async def refused(self, response: aiohttp.ClientResponse, what: str) -> None:
        """Note a response that is not what was asked for (a 5xx is checked later)."""
        body = await response.read()
        if response.status >= 500:
            try:
                json_body = "error" in json.loads(body)
            except ValueError:
                json_body = False
            self.run.errors.append(ServerError(self.run.now(), response.status, json_body, what))

    async def turn(self, turn: Turn) -> None:
        try:
            produce = self.direct(turn) if turn.mode == "direct" else self.deferred(turn)
            await asyncio.wait_for(produce, TURN_DEADLINE_SECONDS)
        except TimeoutError:
            turn.problem = f"no final event within {TURN_DEADLINE_SECONDS:.0f} s"
        except Exception as exc:  # a bug of this script must show, not hang the run
            turn.problem = f"client: {exc!r}"[:200]
        finally:
            self.run.done += 1

    def headers(self, turn: Turn, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {turn.token}", **extra}

    async def direct(self, turn: Turn) -> None:
        """POST with Accept: text/event-stream; the `start` event names the stream to
        resume from if the connection breaks."""
        body = {"message": f"Chaos turn {turn.index}."}
        headers = self.headers(turn, Accept="text/event-stream")
        for _ in range(ATTEMPTS):
            turn.posts += 1
            stream_url, last_id = "", 0
            try:
                async with self.session.post(
                    f"{self.base}/api/chat?stream=resumable", json=body, headers=headers
                ) as response:
                    if response.status != 200:
                        await self.refused(response, "POST /api/chat")
                        if response.status < 500:
                            turn.problem = f"POST answered {response.status}"
                            return
                        raise Broken
                    async for event_id, name, data in sse(response):
                        last_id = event_id or last_id
                        if name == "start":
                            turn.message_id, stream_url = data["message"], data["stream_url"]
                        elif name in ("end", "error"):
                            return self.ended(turn, name, data)
                    raise Broken
            except (Broken, aiohttp.ClientError, TimeoutError, OSError, ValueError):
                if stream_url:  # the turn exists: follow it from where the reply broke off
                    turn.reconnects += 1
                    return await self.follow(turn, stream_url, last_id)
                await asyncio.sleep(RECONNECT_SECONDS)
        turn.problem = "no POST was answered"

    async def deferred(self, turn: Turn) -> None:
        body = {"message": f"Chaos turn {turn.index}."}
        for _ in range(ATTEMPTS):
            turn.posts += 1
            try:
                async with self.session.post(
                    f"{self.base}/api/chat?stream=defer", json=body, headers=self.headers(turn)
                ) as response:
                    if response.status == 201:
                        created = await response.json()
                        turn.message_id = created["message"]
                        hang_up = RESUME_AFTER_FRAMES if turn.mode == "resumed" else None
                        return await self.follow(turn, created["stream_url"], 0, hang_up)
                    await self.refused(response, "POST /api/chat?stream=defer")
                    if response.status < 500:
                        turn.problem = f"POST answered {response.status}"
                        return
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
                pass
            await asyncio.sleep(RECONNECT_SECONDS)
        turn.problem = "no POST was answered"

    async def follow(
        self, turn: Turn, stream_url: str, last_id: int, hang_up: int | None = None
    ) -> None:
        """Read the turn's stream to its final event, reconnecting with Last-Event-ID;
        with `hang_up`, hang up once after that many deltas first."""
        for _ in range(ATTEMPTS):
            headers = self.headers(turn, Accept="text/event-stream")
            if last_id:
                headers["Last-Event-ID"] = str(last_id)
            try:
                async with self.session.get(self.base + stream_url, headers=headers) as response:
                    if response.status != 200:
                        await self.refused(response, "GET stream")
                        if response.status < 500:
                            turn.problem = f"stream answered {response.status}"
                            return
                    else:
                        deltas = 0
                        async for event_id, name, data in sse(response):
                            last_id = event_id or last_id
                            if name in ("end", "error"):
                                return self.ended(turn, name, data)
                            deltas += name == "delta"
                            if hang_up is not None and deltas >= hang_up:
                                hang_up = None
                                break  # leaves the body unread: the connection closes
                        else:
                            turn.reconnects += 1
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
                turn.reconnects += 1
            await asyncio.sleep(RECONNECT_SECONDS if hang_up is None else 0)
        turn.problem = "the reader never got an end or error event"

    def ended(self, turn: Turn, name: str, data: dict[str, Any]) -> None:
        turn.final, turn.status = name, data.get("status", "")
        turn.error_type = (data.get("error") or {}).get("type", "")


# --- disruptions ------------------------------------------------------------------------


async def kill_a_worker(stack: Stack) -> str:
    victim = stack.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pids = stack.worker_pids()
        if victim not in pids and len(pids) == 2:
            break
        await asyncio.sleep(0.1)
    await asyncio.to_thread(stack.wait_workers)
    return f"pid {victim} killed, a new worker started by uvicorn"


async def restart_redis(stack: Stack) -> str:
    await asyncio.to_thread(stack.redis_stop)
    await asyncio.sleep(DOWN_SECONDS)
    await asyncio.to_thread(stack.redis_start)
    return f'down {DOWN_SECONDS:.0f} s, back empty (--save "")'


async def restart_postgres(stack: Stack) -> str:
    await asyncio.to_thread(stack.pg_stop)
    await asyncio.sleep(DOWN_SECONDS)
    await asyncio.to_thread(stack.pg_start)
    return f"pg_ctl stop -m fast, down {DOWN_SECONDS:.0f} s"


PLAN: list[tuple[float, str, Callable[[Stack], Awaitable[str]]]] = [
    (0.2, "kill -9 one worker", kill_a_worker),
    (0.45, "restart Redis", restart_redis),
    (0.7, "restart PostgreSQL", restart_postgres),
]


async def disrupt(stack: Stack, run: Run, turns: int, notes: list[str]) -> None:
    for share, name, action in PLAN:
        while run.done < share * turns:
            await asyncio.sleep(0.1)
        disruption = Disruption(name, run.now())
        run.disruptions.append(disruption)
        notes.append(await action(stack))
        disruption.ended = run.now()


# --- the run ------------------------------------------------------------------------------


async def drive(stack: Stack, turns: int, concurrency: int) -> tuple[list[Turn], Run, list[str]]:
    run = Run()
    todo = [
        Turn(index, MODES[index % len(MODES)], stack.tokens[index % len(stack.tokens)])
        for index in range(turns)
    ]
    queue = iter(todo)
    notes: list[str] = []
    connector = aiohttp.TCPConnector(limit=0, ssl=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        driver = Driver(session, stack.base, run)

        async def client() -> None:
            for turn in queue:
                await driver.turn(turn)

        chaos = asyncio.create_task(disrupt(stack, run, turns, notes))
        await asyncio.gather(*(client() for _ in range(concurrency)))
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(chaos, 120)
    return todo, run, notes


def settle(stack: Stack, seconds: float) -> int:
    """Wait, up to `seconds`, until no row is pending or streaming; returns how many are."""
    deadline = time.monotonic() + seconds
    while True:
        [(left,)] = stack.rows(
            "SELECT count(*) FROM chat_message WHERE status IN ('pending', 'streaming')"
        )
        if not left or time.monotonic() > deadline:
            return int(left)
        time.sleep(0.5)


async def budgets(stack: Stack) -> dict[str, Decimal]:
    """What /api/account says each person has spent, through nginx."""
    spent = {}
    connector = aiohttp.TCPConnector(ssl=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        for token in stack.tokens:
            async with session.get(
                f"{stack.base}/api/account", headers={"Authorization": f"Bearer {token}"}
            ) as response:
                account = await response.json()
            spent[account["user"]["username"]] = Decimal(account["budget"]["spent"])
    return spent


async def upstream_stats(stack: Stack) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{HOST}:{stack.upstream_port}/_stats") as response,
    ):
        stats: dict[str, Any] = await response.json()
        return stats


def check(
    stack: Stack, turns: list[Turn], run: Run, spent: dict[str, Decimal], stats: dict[str, Any]
) -> tuple[list[tuple[str, str]], list[str]]:
    """(check, result) rows for the summary, and the violations."""
    violations: list[str] = []
    results: list[tuple[str, str]] = []

    def verdict(name: str, bad: list[str], good: str) -> None:
        results.append((name, "ok, " + good if not bad else f"FAIL ({len(bad)})"))
        violations.extend(f"{name}: {line}" for line in bad[:20])

    unfinished = stack.rows(
        "SELECT id, status FROM chat_message WHERE status IN ('pending', 'streaming')"
    )
    verdict(
        "nothing pending or streaming",
        [f"message {pk} is still {status}" for pk, status in unfinished],
        "0 rows",
    )
    ids = [turn.message_id for turn in turns if turn.message_id is not None]
    rows = {
        pk: (status, error_type)
        for pk, status, error_type in stack.rows(
            "SELECT id, status, error_type FROM chat_message WHERE id = ANY(%s)", ids
        )
    }
    split = stack.rows(
        "SELECT conversation_id, count(*) FILTER (WHERE role = 'assistant'),"
        " count(*) FILTER (WHERE role = 'user') FROM chat_message GROUP BY conversation_id"
        " HAVING count(*) FILTER (WHERE role = 'assistant') <> 1"
        " OR count(*) FILTER (WHERE role = 'user') <> 1"
    )
    [(all_turns,)] = stack.rows("SELECT count(*) FROM chat_message WHERE role = 'assistant'")
    bad = [f"turn {t.index}: no message id ({t.problem})" for t in turns if t.message_id is None]
    bad += [f"message {pk}: no row" for pk in ids if pk not in rows]
    bad += [f"conversation {c}: {a} replies to {u} messages" for c, a, u in split]
    verdict(
        "one final row per turn",
        bad,
        f"{len(ids)}/{len(turns)} turns, {all_turns} rows (POSTs cut off before an answer "
        "count too)",
    )
    bad = [
        f"turn {t.index} ({t.mode}): {t.problem or 'no final event'}" for t in turns if not t.final
    ]
    bad += [
        f"turn {t.index}: reader got {t.final} {t.status}, row is {rows[t.message_id][0]}"
        for t in turns
        if t.final and t.message_id in rows and rows[t.message_id][0] != t.status
    ]
    verdict("every reader ended with end/error", bad, "its row's status")
    ledger = subprocess.run(
        [sys.executable, "manage.py", "chat_ledger", "--verify"],
        env=stack.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    verdict(
        "chat_ledger --verify",
        [] if ledger.returncode == 0 else (ledger.stdout + ledger.stderr).splitlines(),
        "equal",
    )
    costs = {
        name: Decimal(cost or 0)
        for name, cost in stack.rows(
            "SELECT u.username, sum(m.cost) FROM chat_message m"
            " JOIN chat_conversation c ON c.id = m.conversation_id"
            " JOIN auth_user u ON u.id = c.owner_id WHERE m.role = 'assistant'"
            " GROUP BY u.username"
        )
    }
    verdict(
        "budgets equal the rows",
        [
            f"{name}: budget says {spent[name]}, rows cost {costs.get(name, Decimal(0))}"
            for name in spent
            if spent[name] != costs.get(name, Decimal(0))
        ],
        f"{len(spent)} people, ${sum(spent.values()):.6f}",
    )
    [(claimed,)] = stack.rows(
        "SELECT count(*) FROM chat_message WHERE role = 'assistant' AND claimed_at IS NOT NULL"
    )
    verdict(
        "never a second upstream call",
        [f"{stats['calls']} upstream calls for {claimed} claimed turns"]
        if stats["calls"] > claimed
        else [],
        f"{stats['calls']} calls for {claimed} claimed turns",
    )
    bad = []
    for error in run.errors:
        if _during(error, run) == "nothing":
            bad.append(f"{error.status} at {error.at:.1f} s ({error.what}) with nothing down")
        if not error.json_body:
            bad.append(f"{error.status} at {error.at:.1f} s ({error.what}) is not JSON")
    verdict(
        "5xx only while something was down, JSON",
        bad,
        f"{len(run.errors)} 5xx, all JSON, all in an outage",
    )
    return results, violations


def summary(
    turns: list[Turn],
    run: Run,
    notes: list[str],
    stats: dict[str, Any],
    stack: Stack,
    elapsed: float,
) -> list[str]:
    modes = Counter(turn.mode for turn in turns)
    lines = [
        f"chaos: {len(turns)} turns ({', '.join(f'{m} {modes[m]}' for m in MODES)}) in "
        f"{elapsed:.0f} s; 2 workers behind nginx, PostgreSQL and Redis of its own; "
        f"load {os.getloadavg()[0]:.2f}",
    ]
    for disruption, note in zip(run.disruptions, notes, strict=False):
        lines.append(
            f"  {disruption.name:<20} at {disruption.began:5.1f} s, back at "
            f"{disruption.ended:5.1f} s ({note})"
        )
    faults = ", ".join(f"{k} {v}" for k, v in sorted(stats.get("faults", {}).items()))
    lines.append(f"  upstream: {stats['calls']} calls, faults injected: {faults or 'none'}")
    outcomes = Counter(
        (status, error or "-")
        for status, error in stack.rows(
            "SELECT status, coalesce(error_type, '') FROM chat_message WHERE role = 'assistant'"
        )
    )
    [(estimated,)] = stack.rows(
        "SELECT count(*) FROM chat_message WHERE role = 'assistant' AND usage_estimated"
    )
    lines.append(
        "  rows: "
        + ", ".join(f"{s}/{e} {n}" for (s, e), n in sorted(outcomes.items()))
        + f"; usage estimated on {estimated}"
    )
    finals = Counter(turn.final or "none" for turn in turns)
    lines.append(
        f"  readers: {', '.join(f'{k} {v}' for k, v in sorted(finals.items()))}; "
        f"reconnects {sum(t.reconnects for t in turns)}, POSTs sent again "
        f"{sum(t.posts - 1 for t in turns)}; 5xx {Counter(e.status for e in run.errors)}"
    )
    for (status, what, during), n in sorted(
        Counter((error.status, error.what, _during(error, run)) for error in run.errors).items()
    ):
        lines.append(f"  {n} x {status} on {what}, during: {during}")
    return lines


def _during(error: ServerError, run: Run) -> str:
    names = [
        d.name for d in run.disruptions if d.began <= error.at <= d.ended + OUTAGE_SLACK_SECONDS
    ]
    return ", ".join(names) or "nothing"


async def chaos(args: argparse.Namespace, workdir: Path) -> int:
    stack = Stack(
        workdir,
        people=args.people,
        upstream_args=[
            "--fault-rate",
            str(args.fault_rate),
            "--hang-seconds",
            "30",
            "--tokens",
            str(args.tokens),
            "--delay-ms",
            "20",
        ],
        env_overrides={
            # Faults surface as failed turns, not as the SDK's retries.
            "CHAT_MAX_RETRIES": "0",
            "CHAT_TIMEOUT": "20",
            # A hung upstream ends the turn after this long without a byte.
            "CHAT_UPSTREAM_IDLE_SECONDS": "3",
        },
    )
    try:
        print(f"starting the stack in {workdir} …", file=sys.stderr, flush=True)
        await asyncio.to_thread(stack.start)
        began = time.monotonic()
        turns, run, notes = await drive(stack, args.turns, args.concurrency)
        elapsed = time.monotonic() - began
        lease = float(stack.env.get("CHAT_LEASE_SECONDS", "6"))
        await asyncio.to_thread(settle, stack, lease * 3 + 10)
        spent = await budgets(stack)
        stats = await upstream_stats(stack)
        results, violations = check(stack, turns, run, spent, stats)
        for line in summary(turns, run, notes, stats, stack, elapsed):
            print(line)
        width = max(len(name) for name, _ in results)
        print(f"  {'check':<{width}}  result")
        for name, result in results:
            print(f"  {name:<{width}}  {result}")
        if violations:
            print(f"\n{len(violations)} violation(s):")
            for line in violations:
                print(f"  - {line}")
            print(f"logs: {workdir}")
            return 1
        return 0
    finally:
        await asyncio.to_thread(stack.stop)


def main() -> None:
    parser = stack_arguments(__doc__.splitlines()[0], concurrency=24)
    parser.add_argument("--turns", type=int, default=500)
    parser.add_argument("--tokens", type=int, default=60, help="tokens per reply")
    parser.add_argument("--fault-rate", type=float, default=0.1)
    args = parser.parse_args()
    run_in_workdir("chat-chaos-", lambda workdir: chaos(args, workdir), keep=args.keep)


if __name__ == "__main__":
    main()
