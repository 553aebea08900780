"""`make soak`: the mixed load for half an hour, watching each worker for leaks.

    .venv/bin/python -m bench.soak [--minutes 30] [--concurrency 8]

Starts the stack `make chaos` uses (`bench.stack`: PostgreSQL and Redis of its own, the
fake upstream without faults, `uvicorn --workers 2` behind nginx; finished turns' logs
are kept 60 s instead of 600, so their memory settles within the warm-up) and runs,
through nginx, a mix of direct SSE chats, deferred turns whose reader hangs up and
resumes with Last-Event-ID, conversation searches, and a staff member loading the
admin's message list and usage dashboard. After a warm-up (a third of the run, at most 3
minutes), and again at the end, the load pauses while each worker's resident memory,
open file descriptors (and what they are; its Redis connections also by pool, as named in
Redis's `CLIENT LIST`), PostgreSQL connections (its sockets to the server) and asyncio
tasks (`chat_event_loop_tasks` on /metrics) are read. Exits 1 if any grew by more than
10 % (and by more than one, for the small counts), or if more than 1 % of the operations
failed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import redis
from prometheus_client.parser import text_string_to_metric_families

from bench.chaos import Driver, Run, Turn
from bench.run import HOST, PAGE_SIZE, admin_session
from bench.stack import Stack, run_in_workdir, stack_arguments

KINDS = {"chat": 4, "resume": 3, "search": 2, "admin": 1}  # weights of the mix
ADMIN_PAGES = ("/admin/chat/message/", "/admin/chat/message/usage/?period=30d")
PAUSE_SECONDS = 12.0  # the load pauses this long before a reading (workers sample every 5)
GROWTH_LIMIT = 0.10
SMALL_SLACK = 1  # a count may also grow by this much (4 → 5 is not a leak)
WARMUP_SECONDS = 180.0  # at most; a third of a shorter run
RESUME_TTL_SECONDS = 60


@dataclass
class Reading:
    rss_mib: float
    fds: int
    db_connections: int
    tasks: int
    fds_by_peer: dict[str, int]  # what the descriptors are: sockets by their peer, the rest
    redis_by_pool: dict[str, int]  # its connections in Redis's CLIENT LIST, by pool name


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _tcp_sockets() -> dict[str, tuple[int, int, str]]:
    """Every TCP socket of the machine by inode: (local port, remote port, state)."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            found[inode] = (
                int(local.rsplit(":", 1)[1], 16),
                int(remote.rsplit(":", 1)[1], 16),
                state,
            )
    return found


def _connections_to(port: int) -> set[str]:
    """Inodes of established TCP sockets whose remote port is `port`."""
    return {
        inode
        for inode, (_, remote, state) in _tcp_sockets().items()
        if state == "01" and remote == port
    }


def _fds_by_peer(stack: Stack, pid: int) -> dict[str, int]:
    peers = {
        stack.pg_port: "postgres",
        stack.redis_port: "redis",
        stack.upstream_port: "upstream",
    }
    sockets = _tcp_sockets()
    counts: Counter[str] = Counter()
    mine = _socket_inodes(pid)
    for inode in mine:
        if inode not in sockets:
            counts["other sockets"] += 1
            continue
        local, remote, state = sockets[inode]
        kind = "nginx" if local == stack.worker_port else peers.get(remote, "tcp other")
        counts[kind if state == "01" else f"{kind} ({state})"] += 1
    counts["files, pipes"] = len(os.listdir(f"/proc/{pid}/fd")) - len(mine)
    return dict(counts)


async def task_counts(stack: Stack) -> dict[int, int]:
    """`chat_event_loop_tasks` by worker pid, from one scrape of the workers' socket."""
    headers = {"Authorization": f"Bearer {stack.env['CHAT_METRICS_TOKEN']}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{stack.direct}/metrics", headers=headers) as response,
    ):
        text = await response.text()
    return {
        int(sample.labels["pid"]): int(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "chat_event_loop_tasks"
    }


def redis_pools(stack: Stack) -> dict[int, Counter[str]]:
    """Each worker's connections to Redis by pool: the workers name them `<pool>:<pid>`."""
    client = redis.Redis(host=HOST, port=stack.redis_port)
    try:
        clients = client.client_list()
    finally:
        client.close()
    pools: dict[int, Counter[str]] = {}
    for entry in clients:
        pool, _, pid = entry["name"].rpartition(":")
        if pool and pid.isdigit():
            pools.setdefault(int(pid), Counter())[pool] += 1
    return pools


async def readings(stack: Stack) -> dict[int, Reading]:
    tasks = await task_counts(stack)
    pools = await asyncio.to_thread(redis_pools, stack)
    database = _connections_to(stack.pg_port)
    found = {}
    for pid in stack.worker_pids():
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        found[pid] = Reading(
            rss_mib=pages * PAGE_SIZE / 2**20,
            fds=len(os.listdir(f"/proc/{pid}/fd")),
            db_connections=len(_socket_inodes(pid) & database),
            tasks=tasks.get(pid, -1),
            fds_by_peer=_fds_by_peer(stack, pid),
            redis_by_pool=dict(pools.get(pid, {})),
        )
    return found


class Load:
    """The mix, run by `concurrency` clients until stopped; `paused` holds them between
    operations."""

    def __init__(self, stack: Stack, cookies: dict[str, str]) -> None:
        self.stack = stack
        self.admin_cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
        self.run = Run()
        self.done: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.first_errors: list[str] = []
        self.stop = asyncio.Event()
        self.go = asyncio.Event()
        self.go.set()
        self.index = 0

    async def client(self, session: aiohttp.ClientSession) -> None:
        driver = Driver(session, self.stack.base, self.run)
        kinds, weights = list(KINDS), list(KINDS.values())
        while not self.stop.is_set():
            await self.go.wait()
            kind = random.choices(kinds, weights)[0]
            self.index += 1
            token = self.stack.tokens[self.index % len(self.stack.tokens)]
            ok, why = True, ""
            if kind in ("chat", "resume"):
                turn = Turn(self.index, "direct" if kind == "chat" else "resumed", token)
                await driver.turn(turn)
                ok, why = turn.final == "end", turn.problem or f"{turn.final} {turn.error_type}"
            else:
                if kind == "search":
                    path = f"/api/conversations?q=turn+{random.randrange(100)}"
                    headers = {"Authorization": f"Bearer {token}"}
                else:
                    path, headers = random.choice(ADMIN_PAGES), {"Cookie": self.admin_cookie}
                try:
                    async with session.get(self.stack.base + path, headers=headers) as response:
                        body = await response.read()
                        ok = response.status == 200 and b"Log in" not in body[:3000]
                        why = f"{path}: HTTP {response.status}"
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    ok, why = False, f"{path}: {exc!r}"[:200]
            self.done[kind] += 1
            if not ok:
                self.failed[kind] += 1
                if len(self.first_errors) < 5:
                    self.first_errors.append(f"{kind}: {why}")


def growth(before: float, after: float) -> float:
    return (after - before) / before if before else 0.0


async def soak(args: argparse.Namespace, workdir: Path) -> int:
    stack = Stack(
        workdir,
        people=args.people,
        upstream_args=["--tokens", "60", "--delay-ms", "20"],
        env_overrides={
            # The staff member's admin pages come through nginx, over TLS.
            "SESSION_COOKIE_SECURE": "false",
            "CSRF_COOKIE_SECURE": "false",
            # Finished turns' logs are kept this long for resuming readers (600 s by
            # default): shorter, so their memory reaches its steady state in the warm-up.
            "CHAT_RESUME_TTL_SECONDS": str(RESUME_TTL_SECONDS),
        },
    )
    try:
        print(f"starting the stack in {workdir} …", file=sys.stderr, flush=True)
        await asyncio.to_thread(stack.start)
        cookies = await admin_session(stack.direct, stack.env)
        load = Load(stack, cookies)
        connector = aiohttp.TCPConnector(limit=0, ssl=False)
        timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            clients = [asyncio.create_task(load.client(session)) for _ in range(args.concurrency)]
            total = args.minutes * 60
            warmup = min(WARMUP_SECONDS, total / 3)
            began = time.monotonic()
            await asyncio.sleep(warmup)
            load.go.clear()
            await asyncio.sleep(PAUSE_SECONDS)
            start = await readings(stack)
            load.go.set()
            print(f"warmed up after {warmup:.0f} s; soaking …", file=sys.stderr, flush=True)
            await asyncio.sleep(max(0.0, total - (time.monotonic() - began)))
            load.go.clear()
            await asyncio.sleep(PAUSE_SECONDS)
            end = await readings(stack)
            load.stop.set()
            load.go.set()
            await asyncio.gather(*clients)
            elapsed = time.monotonic() - began
        return report(args, load, start, end, elapsed)
    finally:
        await asyncio.to_thread(stack.stop)


def _before_after(before: dict[str, int], after: dict[str, int]) -> str:
    """`kind start→end` for every kind either reading has."""
    kinds = sorted(set(before) | set(after))
    return ", ".join(f"{k} {before.get(k, 0)}→{after.get(k, 0)}" for k in kinds)


def report(
    args: argparse.Namespace,
    load: Load,
    start: dict[int, Reading],
    end: dict[int, Reading],
    elapsed: float,
) -> int:
    operations = sum(load.done.values())
    failed = sum(load.failed.values())
    print(
        f"soak: {elapsed / 60:.1f} min, {args.concurrency} clients through nginx, "
        f"{operations} operations ("
        + ", ".join(f"{kind} {load.done[kind]}" for kind in KINDS)
        + f"), {failed} failed; load {os.getloadavg()[0]:.2f}"
    )
    for line in load.first_errors:
        print(f"  error: {line}")
    violations = []
    head = f"  {'worker':>8} {'':<14} {'start':>9} {'end':>9} {'growth':>8}"
    print(head)
    for pid in sorted(set(start) | set(end)):
        if pid not in start or pid not in end:
            violations.append(f"worker {pid} was not there at both readings")
            continue
        for name, unit in (
            ("rss_mib", "RSS MiB"),
            ("fds", "open fds"),
            ("db_connections", "DB conns"),
            ("tasks", "asyncio tasks"),
        ):
            before, after = getattr(start[pid], name), getattr(end[pid], name)
            grew = growth(before, after)
            slack = 0 if name == "rss_mib" else SMALL_SLACK
            bad = grew > GROWTH_LIMIT and after - before > slack
            print(
                f"  {pid:>8} {unit:<14} {before:>9.1f} {after:>9.1f} {grew:>+8.1%}"
                + ("  FAIL" if bad else "")
            )
            if bad:
                violations.append(f"worker {pid}: {unit} grew {grew:+.1%}")
        print(
            f"  {pid:>8} fds by peer: "
            + _before_after(start[pid].fds_by_peer, end[pid].fds_by_peer)
        )
        print(
            f"  {pid:>8} redis by pool: "
            + _before_after(start[pid].redis_by_pool, end[pid].redis_by_pool)
        )
    if failed > operations / 100:
        violations.append(f"{failed} of {operations} operations failed")
    for line in violations:
        print(f"  - {line}")
    print("soak: " + ("FAIL" if violations else "ok, every figure within 10 %"))
    return 1 if violations else 0


def main() -> None:
    parser = stack_arguments(__doc__.splitlines()[0], concurrency=8)
    parser.add_argument("--minutes", type=float, default=30.0)
    args = parser.parse_args()
    run_in_workdir("chat-soak-", lambda workdir: soak(args, workdir), keep=args.keep)


if __name__ == "__main__":
    main()
