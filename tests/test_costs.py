"""What a turn costs, counted, not timed: database queries, thread hops (`sync_to_async`)
and cache round trips per direct SSE turn, per deferred turn with its reader and per
resumed reader, each pinned to the exact number it is today, on SQLite (local-memory
cache) and on PostgreSQL + Redis.

Everything is driven through the real ASGI application, the real SDK talking to the
scripted upstream at its HTTP boundary, with the limits a deployment has on (a rate
limit and a stream cap). Each pin is a list of what is counted (a query's verb and
table, a hop's function, a cache or Redis command), compared as a multiset: a change that
adds one fails with what was added and what was removed. Raising a pin is a conscious
edit, with the reason in the commit message; lowering one follows a cut.

Periodic work of a worker (the stop-request poll, the detached turns' liveness tick) is
per second, not per turn: a warm-up turn of the same kind starts it, and its interval is
set long so that it never fires during the measured turn.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from asgiref.sync import SyncToAsync
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.db import connection
from django.db.backends import utils as db_utils
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Model
from django.forms import BaseForm, BaseFormSet
from django.http import HttpRequest

from chat import seams
from chat.models import Message
from chat.spend.counters import cache_is_shared
from chat.turns import detached, relay
from tests.asgi import AsgiClient, parse_sse
from tests.files import png, uploaded
from tests.upstream import Reply, chat_script

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

SSE = {"Accept": "text/event-stream"}
USAGE = {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}
PARTS = ["Hello", " there", "!"]
# Tokens arrive apart, as a model sends them, within one frame interval (`FRAME_MS`, far
# longer than the turn): the first goes out at once, the other two as one frame.
TOKEN_GAP_SECONDS = 0.03
FRAME_MS = 600_000.0
# Tasks of a worker that run per interval, for all its turns (not counted per turn).
PERIODIC = ("_poll_stops", "_tick_forever")


def paced_reply() -> Reply:
    script = chat_script(PARTS, usage=USAGE)
    frames: list[Any] = [script[0]]
    for frame in script[1:]:
        frames += [TOKEN_GAP_SECONDS, frame]
    return Reply(script=frames)


# --- counting -----------------------------------------------------------------------------


@dataclass
class Costs:
    queries: list[str] = field(default_factory=list)
    hops: list[str] = field(default_factory=list)
    cache: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, label: str) -> None:
        with self._lock:
            getattr(self, kind).append(label)


_SUBQUERY = re.compile(r"\([^()]*\)")
_TABLE = re.compile(r'\b(?:FROM|INTO|UPDATE)\s+"?(\w+)"?', re.I)


def query_label(sql: str) -> str:
    """A query as its verb and its table (outside subqueries): `SELECT chat_message`,
    `BEGIN`."""
    verb = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else "?"
    outer, inner = sql, ""
    while outer != inner:  # subqueries, innermost first, until none is left
        inner, outer = outer, _SUBQUERY.sub("", outer)
    table = _TABLE.search(outer)
    return f"{verb} {table.group(1)}" if table and verb not in ("SAVEPOINT", "RELEASE") else verb


def hop_label(func: Any) -> str:
    func = getattr(func, "func", func)  # functools.partial
    return getattr(func, "__qualname__", None) or type(func).__qualname__


@contextmanager
def counting(monkeypatch: pytest.MonkeyPatch) -> Iterator[Costs]:
    """Count, on every thread and connection, until the block ends."""
    costs = Costs()
    active = [True]

    def record(kind: str, label: str) -> None:
        if active[0]:
            costs.add(kind, label)

    # Queries: every ORM and raw cursor goes through Django's CursorWrapper (its debug
    # subclass included), on whatever thread and connection.
    for name in ("execute", "executemany"):
        original = getattr(db_utils.CursorWrapper, name)

        def wrapped(self: Any, sql: str, *args: Any, _original: Any = original) -> Any:
            record("queries", query_label(str(sql)))
            return _original(self, sql, *args)

        monkeypatch.setattr(db_utils.CursorWrapper, name, wrapped)

    # Thread hops: every `sync_to_async(...)(...)` call, Django's own and ours.
    hop = SyncToAsync.__call__

    async def hopping(self: SyncToAsync[Any, Any], *args: Any, **kwargs: Any) -> Any:
        record("hops", hop_label(self.func))
        return await hop(self, *args, **kwargs)

    monkeypatch.setattr(SyncToAsync, "__call__", hopping)

    # Cache: with Redis, every round trip (a command, or a pipeline), from Django's cache
    # backend (sync client) and the turn logs (asyncio client); in-process, every call of
    # the cache's API (no I/O, but counted all the same).
    if cache_is_shared():
        _count_redis(monkeypatch, record)
    else:
        _count_cache_calls(monkeypatch, record)
    try:
        yield costs
    finally:
        active[0] = False


def _count_redis(monkeypatch: pytest.MonkeyPatch, record: Callable[[str, str], None]) -> None:
    import redis.asyncio.client
    import redis.client

    sync_command = redis.client.Redis.execute_command
    sync_pipeline = redis.client.Pipeline.execute
    async_command = redis.asyncio.client.Redis.execute_command
    async_pipeline = redis.asyncio.client.Pipeline.execute

    def pipeline_labels(pipe: Any) -> list[str]:
        names = [str(args[0]).split()[0] for args, _ in pipe.command_stack]
        if "XADD" in names:
            # A turn log's frames, one label each: those queued while a write is under way
            # share the next round trip, so how many round trips they take depends on
            # timing; the frames written do not.
            return ["XADD"] * names.count("XADD")
        return [f"PIPELINE {'+'.join(sorted(set(names)))}"]

    def command(self: Any, *args: Any, **options: Any) -> Any:
        record("cache", str(args[0]).split()[0])
        return sync_command(self, *args, **options)

    def pipeline(self: Any, *args: Any, **kwargs: Any) -> Any:
        for label in pipeline_labels(self):
            record("cache", label)
        return sync_pipeline(self, *args, **kwargs)

    async def acommand(self: Any, *args: Any, **options: Any) -> Any:
        record("cache", str(args[0]).split()[0])
        return await async_command(self, *args, **options)

    async def apipeline(self: Any, *args: Any, **kwargs: Any) -> Any:
        for label in pipeline_labels(self):
            record("cache", label)
        return await async_pipeline(self, *args, **kwargs)

    monkeypatch.setattr(redis.client.Redis, "execute_command", command)
    monkeypatch.setattr(redis.client.Pipeline, "execute", pipeline)
    monkeypatch.setattr(redis.asyncio.client.Redis, "execute_command", acommand)
    monkeypatch.setattr(redis.asyncio.client.Pipeline, "execute", apipeline)


CACHE_API = (
    "get",
    "get_many",
    "set",
    "set_many",
    "add",
    "incr",
    "decr",
    "touch",
    "delete",
    "delete_many",
    "has_key",
    "get_or_set",
)


def _count_cache_calls(monkeypatch: pytest.MonkeyPatch, record: Callable[[str, str], None]) -> None:
    backend = type(caches[DEFAULT_CACHE_ALIAS])
    depth = threading.local()

    for name in CACHE_API:
        original = getattr(backend, name)

        def wrapped(
            self: Any, *args: Any, _original: Any = original, _name: str = name, **kwargs: Any
        ) -> Any:
            # Only the outermost call: `get_many` made of `get`s is one call of the API.
            outer = not getattr(depth, "n", 0)
            if outer:
                record("cache", _name)
            depth.n = getattr(depth, "n", 0) + 1
            try:
                return _original(self, *args, **kwargs)
            finally:
                depth.n -= 1

        monkeypatch.setattr(backend, name, wrapped)


async def settled() -> None:
    """Wait until the work a request left running (a detached turn's producer, its log's
    last write, a connection given back) is done; the periodic tasks sleep on."""
    current = asyncio.current_task()
    for _ in range(400):
        left = [
            task
            for task in asyncio.all_tasks()
            if task is not current and task.get_coro().__name__ not in PERIODIC
        ]
        if not left:
            return
        await asyncio.wait(left, timeout=0.05)
    raise AssertionError(f"still running: {left}")


# --- pins ---------------------------------------------------------------------------------

# Pins: what each scenario costs today, per backend, as the lists `counting` records.
# The local-memory cache (SQLite's default companion) counts calls of the cache API;
# Redis counts round trips (a pipeline is one), except a turn log's frames, counted as
# frames written (XADD): how many of them share a round trip depends on timing.
SQLITE_LIMITS = ["add", "incr", "add", "incr", "touch", "decr"]  # rate, stream slot
# Rate and stream slot in one MULTI/EXEC; the slot given back in another.
REDIS_LIMITS = ["PIPELINE EXPIRE+INCRBY+SET", "PIPELINE EVAL"]
FINISH = ["UPDATE chat_message", "SELECT chat_message", "INSERT chat_dailyusage"]
# The earlier messages, and whether any has files (those are read only then).
CONTEXT = ["SELECT chat_message"]

DIRECT_FIRST = {
    "sqlite": {
        "queries": ["BEGIN", "INSERT chat_conversation", "INSERT chat_message", "BEGIN", *FINISH],
        "hops": ["Batcher._write_all", "Batcher._write_all", "HttpResponseBase.close"],
        "cache": SQLITE_LIMITS,
    },
    "postgresql+redis": {
        "queries": ["INSERT chat_conversation", "INSERT chat_message", *FINISH],
        "hops": [
            "Batcher._write_all",
            "release_connection",
            "Batcher._write_all",
            "HttpResponseBase.close",
        ],
        "cache": REDIS_LIMITS,
    },
}
LATER_START = ["SELECT chat_conversation", "UPDATE chat_conversation", "INSERT chat_message"]
DIRECT_LATER = {
    "sqlite": {
        "queries": ["BEGIN", *LATER_START, *CONTEXT, "BEGIN", *FINISH],
        "hops": DIRECT_FIRST["sqlite"]["hops"],
        "cache": SQLITE_LIMITS,
    },
    "postgresql+redis": {
        "queries": [*LATER_START, *CONTEXT, *FINISH],
        "hops": DIRECT_FIRST["postgresql+redis"]["hops"],
        "cache": REDIS_LIMITS,
    },
}
CLAIM = ["SELECT chat_message", "UPDATE chat_message", *CONTEXT]
DEFERRED = {
    "sqlite": {
        "queries": ["BEGIN", "INSERT chat_conversation", "INSERT chat_message", *CLAIM, "BEGIN"]
        + FINISH,
        "hops": [
            "Batcher._write_all",
            "HttpResponseBase.close",
            "QuerySet.first",
            "_claim_and_read",
            "Batcher._write_all",
            "HttpResponseBase.close",
        ],
        # The POST: rate; the GET: the stream slot is free (`get`), then taken and given back.
        "cache": ["add", "incr", "get", "add", "incr", "touch", "decr"],
    },
    "postgresql+redis": {
        "queries": ["INSERT chat_conversation", "INSERT chat_message", *CLAIM, *FINISH],
        "hops": [
            "Batcher._write_all",
            "HttpResponseBase.close",
            "QuerySet.first",
            "_claim_and_read",
            "release_connection",
            "Batcher._write_all",
            "HttpResponseBase.close",
        ],
        # The POST's rate and slot check, the GET's rate-free slot taken and given back,
        # the producer's liveness set and cleared, and the log's four frames (start, the
        # first delta, the other two gathered into one, end) written.
        "cache": ["PIPELINE GET+INCRBY+SET", *REDIS_LIMITS, "PIPELINE SET", "DEL"] + ["XADD"] * 4,
    },
}
RESUMED = {
    "sqlite": {
        "queries": ["SELECT chat_message"],
        "hops": ["QuerySet.first", "HttpResponseBase.close"],
        "cache": ["add", "incr", "touch", "decr"],
    },
    "postgresql+redis": {
        "queries": ["SELECT chat_message"],
        "hops": ["QuerySet.first", "HttpResponseBase.close"],
        "cache": ["PIPELINE EXPIRE+INCRBY+SET", "PIPELINE EVAL"],
    },
}


def backend_name() -> str:
    shared = cache_is_shared() and bool(django_settings.REDIS_URL)
    return f"{connection.vendor}{'+redis' if shared else ''}"


def check(costs: Costs, pins: dict[str, dict[str, list[str]]], what: str) -> None:
    name = backend_name()
    if name not in pins:
        pytest.skip(f"no pinned costs for {name} (pinned: {', '.join(pins)})")
    pinned = pins[name]
    problems = []
    for kind in ("queries", "hops", "cache"):
        seen, expected = Counter(getattr(costs, kind)), Counter(pinned[kind])
        if seen == expected:
            continue
        added, removed = seen - expected, expected - seen
        problems.append(
            f"{kind}: {sum(seen.values())} where {sum(expected.values())} are pinned"
            f"\n  added:   {sorted(added.elements())}"
            f"\n  removed: {sorted(removed.elements())}"
            f"\n  all, in order: {getattr(costs, kind)}"
        )
    assert not problems, f"{what} on {name} costs what is not pinned:\n" + "\n".join(problems)


@pytest.fixture
def deployed(settings, upstream, monkeypatch):
    """Limits on as deployed (a rate limit, a stream cap); periodic work out of the way."""
    settings.CHAT_RATE_LIMIT = "1000/min"
    settings.CHAT_MAX_CONCURRENT_STREAMS = 3
    settings.CHAT_RESUME_GRACE_SECONDS = 60
    settings.CHAT_STREAM_FRAME_MS = FRAME_MS
    monkeypatch.setattr(relay, "CANCEL_POLL_SECONDS", 3600.0)
    monkeypatch.setattr(detached, "TICK_SECONDS", 3600.0)
    # As served: Django's test client, used by earlier tests of the run, connects the
    # connection check at request start again for every handler; it is WSGI's only.
    seams.check_connections_at_request_end_only()
    upstream.default = paced_reply()
    return upstream


async def direct_turn(client: AsgiClient, conversation: str | None = None) -> dict[str, Any]:
    reply = await client.post(
        "/api/chat", {"message": "hi", "conversation": conversation}, headers=SSE
    )
    events = parse_sse(reply.body)
    assert reply.status == 200 and events[-1][0] == "end", reply.body[-300:]
    return events[0][1]


async def deferred_turn(client: AsgiClient) -> tuple[str, bytes]:
    created = (await client.post("/api/chat?stream=defer", {"message": "hi"})).json()
    reply = await client.get(created["stream_url"], headers=SSE)
    assert parse_sse(reply.body)[-1][0] == "end", reply.body[-300:]
    await settled()
    return created["stream_url"], reply.body


# --- direct SSE turns ---------------------------------------------------------------------


async def test_a_direct_sse_turn_that_starts_a_conversation(deployed, monkeypatch):
    client = AsgiClient()
    await direct_turn(client)  # warm-up: the visitor's cookie, the price list, the tasks
    await settled()

    with counting(monkeypatch) as costs:
        start = await direct_turn(client)
        await settled()

    row = await Message.objects.aget(pk=start["message"])
    assert row.status == "completed" and row.content == "".join(PARTS)
    check(costs, DIRECT_FIRST, "a direct SSE turn starting a conversation")


async def test_a_direct_sse_turn_later_in_a_conversation(deployed, monkeypatch):
    client = AsgiClient()
    start = await direct_turn(client)
    await settled()

    with counting(monkeypatch) as costs:
        later = await direct_turn(client, start["conversation"])
        await settled()

    assert later["conversation"] == start["conversation"]
    assert deployed.bodies[-1]["messages"][-3:] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "".join(PARTS)},
        {"role": "user", "content": "hi"},
    ]
    check(costs, DIRECT_LATER, "a direct SSE turn later in a conversation")


# --- deferred turns and their readers -----------------------------------------------------


async def test_a_deferred_turn_with_its_reader(deployed, monkeypatch):
    client = AsgiClient()
    await deferred_turn(client)

    with counting(monkeypatch) as costs:
        _, body = await deferred_turn(client)

    assert deployed.calls == 2
    assert "".join(d["text"] for e, d in parse_sse(body) if e == "delta") == "".join(PARTS)
    check(costs, DEFERRED, "a deferred turn (its POST and its reader's GET)")


async def test_a_resumed_reader(deployed, monkeypatch):
    client = AsgiClient()
    url, whole = await deferred_turn(client)

    with counting(monkeypatch) as costs:
        resumed = await client.get(url, headers={**SSE, "Last-Event-ID": "2"})
        await settled()

    assert deployed.calls == 1
    assert whole.endswith(resumed.body.removeprefix(b"retry: 3000\n\n"))
    assert b"id: 3\n" in resumed.body and b"id: 2\n" not in resumed.body
    check(costs, RESUMED, "a reader resuming a deferred turn (Last-Event-ID)")


# --- turns with an image ------------------------------------------------------------------

# The files are looked up in the start's own transaction (one query for the batch) and
# linked in it; their bytes come from the worker's cache (the upload left the image
# there), so a turn with an image makes the hops of a text turn, no more.
IMAGE_START = ["SELECT chat_attachment", "INSERT chat_messageattachment"]
IMAGE_FIRST = {
    "sqlite": {
        "queries": [*DIRECT_FIRST["sqlite"]["queries"], *IMAGE_START],
        "hops": DIRECT_FIRST["sqlite"]["hops"],
        "cache": SQLITE_LIMITS,
    },
    "postgresql+redis": {
        "queries": [*DIRECT_FIRST["postgresql+redis"]["queries"], *IMAGE_START],
        "hops": DIRECT_FIRST["postgresql+redis"]["hops"],
        "cache": REDIS_LIMITS,
    },
}
# A later turn sends the earlier image again: the context says which message has files,
# and one more query reads them; the bytes again come from the cache.
IMAGE_LATER = {
    name: {
        "queries": [*pins["queries"], "SELECT chat_messageattachment"],
        "hops": pins["hops"],
        "cache": pins["cache"],
    }
    for name, pins in DIRECT_LATER.items()
}


async def test_a_direct_sse_turn_with_an_image_and_the_turn_after_it(
    deployed, monkeypatch, local_storage
):
    client = AsgiClient()
    await direct_turn(client)  # warm-up, and the visitor's cookie for the upload
    image = await uploaded(client, "shot.png", png(32, 16))
    await settled()

    with counting(monkeypatch) as costs:
        reply = await client.post(
            "/api/chat", {"message": "hi", "attachments": [image["id"]]}, headers=SSE
        )
        await settled()
    assert parse_sse(reply.body)[-1][0] == "end", reply.body[-300:]
    check(costs, IMAGE_FIRST, "a direct SSE turn with an image")

    conversation = parse_sse(reply.body)[0][1]["conversation"]
    with counting(monkeypatch) as costs:
        await direct_turn(client, conversation)
        await settled()
    first, _, later = deployed.bodies[-1]["messages"]
    assert (
        first["content"][1]["image_url"]
        == deployed.bodies[-2]["messages"][0]["content"][1]["image_url"]
    )
    check(costs, IMAGE_LATER, "a direct SSE turn after one with an image")


# --- what a turn leaves for the cyclic garbage collector ----------------------------------


@contextmanager
def garbage() -> Iterator[list[object]]:
    """The objects only the cyclic garbage collector would free, made within the block."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    left: list[object] = []
    try:
        yield left
        gc.collect()
        left.extend(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def reachable_within(roots: list[object], among: list[object]) -> set[int]:
    ids = {id(o) for o in among}
    seen = {id(o) for o in roots}
    todo = list(roots)
    while todo:
        for referent in gc.get_referents(todo.pop()):
            if id(referent) in ids and id(referent) not in seen:
                seen.add(id(referent))
                todo.append(referent)
    return seen


SQL_COMPILER_CYCLE = "SQLCompiler.get_select.<locals>.get_select_from_parent"


def sql_compiler_cycles(left: list[object]) -> list[object]:
    """Django's SQL compiler's nested function that calls itself, each a cycle of three."""
    return [o for o in left if getattr(o, "__qualname__", "") == SQL_COMPILER_CYCLE]


async def test_a_turn_leaves_the_garbage_collector_only_djangos_sql_compiler(deployed, settings):
    """Reference cycles are freed only by the cyclic collector, whose collections pause
    every stream of the worker, and the more a worker leaves, the more often they run; a
    turn makes none of its own (a timer re-arming itself through its closure, a connection
    object made per request on the event loop, a disconnect exception holding its frame,
    Django's `request.user` and `request.auser` closing over their request, and a deferred
    turn's log and its producer referring to each other did, each keeping a turn's
    objects; the log, with every frame, is let go here once its reader is done, as it is
    `CHAT_RESUME_TTL_SECONDS` later when served). What is left is Django's SQL compiler: a
    nested function that calls itself, with nothing else of the turn."""
    settings.CHAT_RESUME_TTL_SECONDS = 0
    client = AsgiClient()
    await direct_turn(client)
    await deferred_turn(client)
    await settled()

    with garbage() as left:
        await direct_turn(client)
        await settled()
        await deferred_turn(client)
        await asyncio.sleep(0.01)  # the log let go (`call_later`)

    functions = [o for o in left if inspect.isfunction(o) and o.__module__.startswith("django.")]
    assert {f.__qualname__ for f in functions} <= {SQL_COMPILER_CYCLE}
    djangos = sql_compiler_cycles(left)
    others = [o for o in left if id(o) not in reachable_within(djangos, left)]
    assert not others, Counter(type(o).__name__ for o in others).most_common(10)
    assert len(left) <= 3 * len(djangos), Counter(type(o).__name__ for o in left)


async def test_a_staff_page_leaves_the_garbage_collector_none_of_the_page(deployed):
    """A staff page's rows, template context and response go by reference counting once
    it is sent, not with the next collection on whichever thread crosses the collector's
    threshold (the event loop's too). Two things of Django's kept them before: the admin's
    candidate template names (`select_template` keeps each miss's exception, whose
    traceback holds the rendering frames; `chat.admin.pages`) and the template context
    referring to itself (`chat.seams`, seam 7). What is left is the request (its flash
    messages' storage refers back to it, with the user it holds), Django's forms (each
    caches its bound fields, which refer back to it) and the page thread's database
    connection object (Django makes one per request context; its parts refer back to it)
    and the form classes the admin makes per request (a class refers to itself), besides
    the SQL compiler's function as after a turn. The pages are those staff reload (lists,
    the dashboard, the indexes); a change form leaves more of Django's form machinery (its
    submit row's context, choice fields and their widgets refer to each other)."""
    client = AsgiClient()
    await direct_turn(client)
    await direct_turn(client)
    staff = await AsgiClient.logged_in("staff")
    await (
        get_user_model().objects.filter(username="staff").aupdate(is_staff=True, is_superuser=True)
    )
    pages = [
        "/admin/",
        "/admin/chat/",
        "/admin/chat/message/",
        "/admin/chat/message/?status__exact=completed",
        "/admin/chat/conversation/",
        "/admin/chat/message/usage/?period=30d",
        "/admin/auth/user/",
    ]
    for page in pages:
        assert (await staff.get(page)).status == 200, page  # templates compiled, caches filled
        with garbage() as left:
            response = await staff.get(page)
        assert response.status == 200, page
        page_objects = (HttpRequest, BaseForm, BaseFormSet, BaseDatabaseWrapper, type)
        roots = [o for o in left if isinstance(o, page_objects)] + sql_compiler_cycles(left)
        kept = [o for o in left if id(o) not in reachable_within(roots, left)]
        assert not kept, (page, Counter(type(o).__name__ for o in kept).most_common(10))
        rows = [o for o in left if isinstance(o, Model) and not isinstance(o, AbstractBaseUser)]
        assert not rows, (page, rows)
