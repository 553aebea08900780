"""Outages survived: the database failing the final write (it is retried with backoff and
recorded once), Redis unreachable (chat goes on per worker, /readyz says so, and it
recovers by itself), and an upstream that stops sending (a clear, billed failure)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess

import httpx2
import pytest
from asgiref.sync import sync_to_async
from django.core.cache import caches
from django.core.cache.backends import locmem
from django.db import connection

from chat.models import DailyUsage, Message
from chat.spend.ledger import ledger_verify
from tests.asgi import asgi_request, parse_sse
from tests.servers import HOST, fake_model_env, free_port, start, start_worker, stop
from tests.test_scale import anonymous_visitor
from tests.upstream import Reply, chat_script

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]
SSE = {"accept": "text/event-stream"}
USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}

# The database refuses the first write that finishes a turn, as a server restarting
# mid-write would (SQLSTATE 08006, connection failure); a sequence counts the attempts,
# since a sequence is not rolled back with the transaction it was used in.
FAIL_FIRST_FINISH = [
    "CREATE SEQUENCE test_finish_attempts",
    """CREATE FUNCTION test_fail_first_finish() RETURNS trigger AS $$
    BEGIN
        IF nextval('test_finish_attempts') = 1 THEN
            RAISE EXCEPTION 'the database went away' USING ERRCODE = '08006';
        END IF;
        RETURN NEW;
    END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER test_fail_first_finish BEFORE UPDATE OF status ON chat_message
    FOR EACH ROW WHEN (OLD.status = 'streaming' AND NEW.status <> 'streaming')
    EXECUTE FUNCTION test_fail_first_finish()""",
]
UNDO = [
    "DROP TRIGGER IF EXISTS test_fail_first_finish ON chat_message",
    "DROP FUNCTION IF EXISTS test_fail_first_finish()",
    "DROP SEQUENCE IF EXISTS test_finish_attempts",
]


def execute(statements: list[str]) -> None:
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def attempts() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT last_value FROM test_finish_attempts")
        return int(cursor.fetchone()[0])


@pytest.fixture
def first_finish_fails():
    if connection.vendor != "postgresql":
        pytest.skip("injects the fault with a PostgreSQL trigger and sequence")
    execute(FAIL_FIRST_FINISH)
    yield
    execute(UNDO)


async def test_a_final_write_that_fails_once_is_retried_once_and_recorded_once(
    upstream, first_finish_fails, caplog
):
    upstream.queue(Reply(script=chat_script(["all ", "there"], usage=USAGE)))
    with caplog.at_level(logging.WARNING, logger="chat"):
        response = await asgi_request("POST", "/api/chat", body={"message": "hi"}, headers=SSE)

    events = parse_sse(response.body)
    assert events[-1][0] == "end" and events[-1][1]["status"] == "completed"
    [row] = [m async for m in Message.objects.filter(role="assistant")]
    assert (row.status, row.content, row.output_tokens) == ("completed", "all there", 5)
    assert await sync_to_async(attempts)() == 2  # the failed write, and one retry
    retries = [r for r in caplog.records if "could not record turn" in r.getMessage()]
    assert len(retries) == 1
    ledger = [r async for r in DailyUsage.objects.all()]
    assert [(r.requests, r.completed, r.output_tokens) for r in ledger] == [(1, 1, 5)]
    assert await sync_to_async(ledger_verify)() == []


async def ready(base: str) -> dict:
    async with httpx2.AsyncClient(timeout=30) as client:
        response = await client.get(f"{base}/readyz")
    assert response.status_code == 200, response.text
    return response.json()


async def a_turn(base: str, cookie: str) -> list:
    """A deferred turn, streamed on `base`: what the page does."""
    headers = {"Cookie": cookie, "Content-Type": "application/json"}
    async with httpx2.AsyncClient(timeout=60) as client:
        started = await client.post(
            f"{base}/api/chat?stream=defer", json={"message": "hi"}, headers=headers
        )
        assert started.status_code == 201, started.text
        streamed = await client.get(
            base + started.json()["stream_url"],
            headers={"Cookie": cookie, "Accept": "text/event-stream"},
        )
    assert streamed.status_code == 200, streamed.text
    return parse_sse(streamed.content)


async def test_with_redis_down_chat_goes_on_degraded_and_recovers_by_itself(fake_upstream):
    if shutil.which("redis-server") is None:
        pytest.skip("starts a Redis server of its own (redis-server)")
    await asyncio.to_thread(
        httpx2.post, f"{fake_upstream}/_config", json={"ttft_ms": 10, "delay_ms": 1, "tokens": 5}
    )
    redis_port, port = free_port(), free_port()
    env = fake_model_env(
        fake_upstream,
        CHAT_ALLOW_ANONYMOUS="true",
        REDIS_URL=f"redis://{HOST}:{redis_port}/0",  # nothing listens there yet
    )
    worker = start_worker(env, port, "--log-level", "warning")
    base = f"http://{HOST}:{port}"
    redis_server: subprocess.Popen[bytes] | None = None
    try:
        cookie, _ = anonymous_visitor()
        events = await a_turn(base, cookie)
        assert events[-1][0] == "end" and events[-1][1]["status"] == "completed"
        state = await ready(base)
        assert state["status"] == "degraded" and state["checks"]["cache"] == "degraded"

        command = ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"]
        redis_server = start(command, env, redis_port)
        for _ in range(200):  # Redis is tried again every few seconds
            if (await ready(base))["status"] == "ok":
                break
            await asyncio.sleep(0.1)
        assert (await ready(base))["checks"]["cache"] == "ok"
        events = await a_turn(base, cookie)
        assert events[-1][0] == "end" and events[-1][1]["status"] == "completed"

        # Gone again mid-run, noticed first by a turn's own counters (not the cache):
        # the turn is admitted in degraded mode, not refused with a 500.
        stop(redis_server)
        redis_server = None
        events = await a_turn(base, cookie)
        assert events[-1][0] == "end" and events[-1][1]["status"] == "completed"
        assert (await ready(base))["checks"]["cache"] == "degraded"
    finally:
        stop(worker)
        if redis_server is not None:
            stop(redis_server)


async def test_while_redis_is_down_every_request_counts_in_the_same_worker_memory(settings):
    """Django makes a cache object per request context. While Redis is unreachable they all
    fall back to one memory of the worker, so a limit counted there counts across requests,
    and they know at once that it is degraded (no request waits on Redis first); making
    them leaves nothing behind in Django's registry of local-memory caches."""
    settings.CACHES = {
        "default": {
            "BACKEND": "chat.ops.cache.ResilientRedisCache",
            "LOCATION": f"redis://{HOST}:{free_port()}/0",  # nothing listens there
            "KEY_PREFIX": f"test-degraded-{free_port()}",
        }
    }

    def request(n: int) -> tuple[bool, int]:
        shared = caches["default"]
        made.append(shared)  # kept, so that no two contexts' objects share an id
        was_degraded = shared.degraded
        if n == 0:
            shared.set("turns", 0)
        return was_degraded, shared.incr("turns")

    def in_a_request_context(n: int) -> asyncio.Task[tuple[bool, int]]:
        return asyncio.create_task(sync_to_async(request, thread_sensitive=False)(n))

    made = []
    first = await in_a_request_context(0)
    registered = len(locmem._caches)
    later = [await in_a_request_context(n) for n in range(1, 21)]

    assert first == (False, 1)  # this one found Redis gone
    assert later == [(True, n + 1) for n in range(1, 21)]
    assert len(locmem._caches) == registered
    assert len({id(shared) for shared in made}) == 21  # a cache object per context


async def test_a_reader_on_another_worker_gets_its_final_event_across_a_redis_restart(
    fake_upstream,
):
    """The reader follows the producer's log in Redis; Redis restarts (empty) mid-reply:
    the reader still ends with the turn's final event, never waits forever."""
    if shutil.which("redis-server") is None:
        pytest.skip("starts a Redis server of its own (redis-server)")
    await asyncio.to_thread(
        httpx2.post, f"{fake_upstream}/_config", json={"ttft_ms": 10, "delay_ms": 60, "tokens": 80}
    )
    redis_port = free_port()
    command = ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"]
    env = fake_model_env(
        fake_upstream, CHAT_ALLOW_ANONYMOUS="true", REDIS_URL=f"redis://{HOST}:{redis_port}/0"
    )
    redis_server: subprocess.Popen[bytes] | None = start(command, env, redis_port)
    producer_port, reader_port = free_port(), free_port()
    workers = [
        start_worker(env, port, "--log-level", "warning") for port in (producer_port, reader_port)
    ]
    producer, reader = (f"http://{HOST}:{port}" for port in (producer_port, reader_port))
    try:
        cookie, _ = anonymous_visitor()
        headers = {"Cookie": cookie, "Content-Type": "application/json"}
        async with httpx2.AsyncClient(timeout=60) as client:
            started = await client.post(
                f"{producer}/api/chat?stream=defer", json={"message": "hi"}, headers=headers
            )
        stream_url = started.json()["stream_url"]
        sse = {"Cookie": cookie, "Accept": "text/event-stream"}
        claimed = asyncio.Event()

        async def read(base: str, first: asyncio.Event | None = None) -> list:
            body = b""
            async with (
                httpx2.AsyncClient(timeout=60) as client,
                client.stream("GET", base + stream_url, headers=sse) as response,
            ):
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if first is not None and b"event: delta" in body:
                        first.set()
            return parse_sse(body)

        producing = asyncio.create_task(read(producer, claimed))
        await asyncio.wait_for(claimed.wait(), 20)
        following = asyncio.create_task(read(reader))
        await asyncio.sleep(1)  # the follower is tailing the log in Redis

        stop(redis_server)
        redis_server = None
        await asyncio.sleep(1)
        redis_server = start(command, env, redis_port)

        events = await asyncio.wait_for(following, 60)
        assert events[-1][0] in ("end", "error")
        own = await asyncio.wait_for(producing, 60)
        assert own[-1][0] == "end" and own[-1][1]["status"] == "completed"
    finally:
        for worker in workers:
            stop(worker)
        if redis_server is not None:
            stop(redis_server)


@pytest.mark.parametrize(
    ("sent_before", "text"), [(1, ""), (2, "half ")], ids=["before-first-token", "mid-reply"]
)
async def test_an_upstream_gone_silent_ends_the_turn_as_a_billed_timeout(
    upstream, settings, mini_price, sent_before, text
):
    settings.CHAT_UPSTREAM_IDLE_SECONDS = 0.3
    script = chat_script(["half ", "never sent"], usage=USAGE)
    script.insert(sent_before, 3600.0)  # then not a byte
    upstream.queue(Reply(script=script))

    response = await asgi_request("POST", "/api/chat", body={"message": "hi"}, headers=SSE)

    events = parse_sse(response.body)
    assert events[-1][0] == "error"
    assert events[-1][1]["error"]["type"] == "upstream_timeout"
    assert "sent nothing for 0.3 seconds" in events[-1][1]["error"]["message"]
    [row] = [m async for m in Message.objects.filter(role="assistant")]
    assert (row.status, row.content, row.error_type) == ("failed", text, "upstream_timeout")
    # Billed: the prompt it was sent, and what it wrote, estimated and flagged.
    assert row.usage_estimated and row.input_tokens and row.cost is not None
    assert row.output_tokens == (2 if text else 0)
    assert upstream.streams[0].closed
    assert await sync_to_async(ledger_verify)() == []


async def test_readers_of_a_lost_producer_wait_out_a_failing_database_write(
    first_finish_fails, caplog, settings
):
    """A reader's copy of another worker's log finds its producer gone while the database
    is restarting: recording the turn is tried again, and readers get what was recorded
    (usage and all), not a bare `interrupted` that may contradict the row."""
    from chat.turns.detached import _interrupted  # what the log tail calls
    from chat.turns.log import TurnLog, log_key
    from chat.turns.start import turn_start

    settings.CHAT_PROVIDER, settings.CHAT_API = "demo", "chat"
    _, owner = anonymous_visitor()
    turn = await turn_start(owner=owner, message="hi", defer=True)
    await Message.objects.filter(pk=turn.message_id).aupdate(
        status="streaming", content="half a reply", worker="elsewhere:1:gone"
    )
    copy = TurnLog(log_key(turn.conversation_id, turn.message_id))

    with caplog.at_level(logging.WARNING, logger="chat"):
        await _interrupted(copy)

    row = await Message.objects.aget(pk=turn.message_id)
    assert (row.status, row.error_type, row.usage_estimated) == ("incomplete", "interrupted", True)
    assert await sync_to_async(attempts)() == 2  # the failed write, and one retry
    final = copy.events[-1]
    assert final.type == "error" and final.data["usage"]["output_tokens"] == row.output_tokens
    assert any("retrying" in r.getMessage() for r in caplog.records)
    assert await sync_to_async(ledger_verify)() == []


async def test_only_the_wait_for_the_upstream_counts_as_idle():
    """The idle timeout's one timer per round: a consumer slower than the timeout between
    events is not the upstream's silence, a gap longer than it is, and Stop during a wait
    stays a cancellation."""
    from chat.turns.rounds import UpstreamIdle, _never_idle

    async def upstream(gaps: list[float]):
        for number, gap in enumerate(gaps):
            await asyncio.sleep(gap)
            yield number

    slow_reader = []
    async for event in _never_idle(upstream([0, 0, 0]), 0.05):
        slow_reader.append(event)
        await asyncio.sleep(0.2)  # four timeouts' worth, spent by the consumer
    assert slow_reader == [0, 1, 2]

    silent = []
    with pytest.raises(UpstreamIdle):
        async for event in _never_idle(upstream([0, 0.5]), 0.05):
            silent.append(event)
    assert silent == [0]

    async def read_all() -> None:
        async for _ in _never_idle(upstream([0, 3600]), 0.3):
            pass

    reading = asyncio.create_task(read_all())
    await asyncio.sleep(0.05)
    reading.cancel()  # Stop, before the idle timer fires
    with pytest.raises(asyncio.CancelledError):
        await reading
