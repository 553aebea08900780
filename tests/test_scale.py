"""Past one process: real uvicorn workers sharing the test database (PostgreSQL when
DATABASE_URL points at it, else the SQLite file), fed by the benchmark's fake upstream,
which counts the model calls it answers."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from chat.access.identity import ANONYMOUS_COOKIE, anonymous_cookie
from chat.access.owners import Owner
from chat.models import DailyUsage, Message
from chat.spend.ledger import ledger_verify
from chat.turns import turn_start
from tests.asgi import parse_sse
from tests.servers import HOST, fake_model_env, free_port, start_worker, stop

WORKER_APP_NAME = "chat-scale-test-worker"
MODEL = "fake-model"
POOL_SIZE = 2  # per worker, on PostgreSQL: fewer than the streams opened at once

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def workers(django_db_setup, django_db_blocker, fake_upstream) -> Iterator[list[str]]:
    """Two separate server processes on one database, as `uvicorn --workers 2` runs."""
    with django_db_blocker.unblock():
        env = fake_model_env(
            fake_upstream,
            CHAT_ALLOW_ANONYMOUS="true",
            PGAPPNAME=WORKER_APP_NAME,  # libpq names the workers' connections
            DATABASE_POOL_SIZE=str(POOL_SIZE),
        )
    ports = [free_port(), free_port()]
    procs = [start_worker(env, port, "--log-level", "warning") for port in ports]
    yield [f"http://{HOST}:{port}" for port in ports]
    for proc in procs:
        stop(proc)


async def upstream_control(base: str, path: str, body: dict[str, Any] | None = None) -> Any:
    async with httpx2.AsyncClient() as client:
        response = await client.post(f"{base}{path}", json=body or {})
        return response.json()


async def upstream_calls(base: str) -> int:
    async with httpx2.AsyncClient() as client:
        return (await client.get(f"{base}/_stats")).json()["calls"]


def anonymous_visitor() -> tuple[str, Owner]:
    """The `Cookie` header of an anonymous visitor, and the owner it makes them."""
    owner = Owner(anonymous_key=os.urandom(12).hex())
    return f"{ANONYMOUS_COOKIE}={anonymous_cookie(owner.anonymous_key)}", owner


async def read_stream(url: str, cookie: str) -> list[tuple[str, Any]]:
    headers = {"Accept": "text/event-stream", "Cookie": cookie}
    async with httpx2.AsyncClient(timeout=60) as client:
        response = await client.get(url, headers=headers)
    assert response.status_code == 200, response.text
    return parse_sse(response.content)


def text_of(events: list[tuple[str, Any]]) -> str:
    return "".join(data["text"] for name, data in events if name == "delta")


@pytest.mark.asyncio
async def test_two_workers_racing_for_one_turn_make_one_upstream_call(
    workers, fake_upstream, settings
):
    settings.CHAT_PROVIDER = "openai"
    settings.OPENAI_BASE_URL = f"{fake_upstream}/v1"
    settings.CHAT_MODEL = MODEL
    settings.CHAT_API = "chat"
    await upstream_control(fake_upstream, "/_config", {"ttft_ms": 200, "delay_ms": 20, "tokens": 8})
    for _ in range(3):
        await upstream_control(fake_upstream, "/_reset")
        cookie, owner = anonymous_visitor()
        turn = await turn_start(owner=owner, message="hi", defer=True)
        path = f"/api/messages/{turn.message_id}/stream"

        first, second = await asyncio.gather(
            read_stream(workers[0] + path, cookie),
            read_stream(workers[1] + path, cookie),
        )

        assert await upstream_calls(fake_upstream) == 1
        row = await Message.objects.aget(pk=turn.message_id)
        assert row.status == Message.Status.COMPLETED
        assert row.output_tokens == 8 and not row.usage_estimated
        assert row.content == "".join(f" word{i}" for i in range(8))
        # The loser never called the model: it waited for the stored reply and replayed it.
        assert [name for name, _ in first][-1] == "end"
        assert [name for name, _ in second][-1] == "end"
        assert text_of(first) == text_of(second) == row.content


@pytest.mark.asyncio
async def test_two_workers_count_one_persons_turns_in_one_ledger_row_exactly(
    workers, fake_upstream
):
    """Both processes add to the same ledger key at once (on PostgreSQL, concurrent
    upserts of one row): every turn counted once, no deadlock, no lost update."""
    await upstream_control(fake_upstream, "/_config", {"ttft_ms": 20, "delay_ms": 2, "tokens": 5})
    cookie, owner = anonymous_visitor()
    headers = {"Accept": "text/event-stream", "Cookie": cookie}

    async def chat(base: str) -> None:
        async with httpx2.AsyncClient(timeout=60) as client:
            response = await client.post(
                f"{base}/api/chat", json={"message": "hi"}, headers=headers
            )
        assert response.status_code == 200 and b"event: end" in response.content

    await asyncio.gather(*(chat(workers[n % 2]) for n in range(40)))
    rows = [row async for row in DailyUsage.objects.filter(anonymous_key=owner.anonymous_key)]
    assert [(row.requests, row.completed) for row in rows] == [(40, 40)]
    assert await sync_to_async(ledger_verify)() == []


@pytest.mark.asyncio
async def test_open_streams_hold_no_database_connection(workers, fake_upstream):
    if connection.vendor != "postgresql":
        pytest.skip("counts server connections in pg_stat_activity (PostgreSQL only)")
    await upstream_control(
        fake_upstream, "/_config", {"ttft_ms": 50, "delay_ms": 1000, "tokens": 15}
    )
    streams = 3 * POOL_SIZE
    first_deltas = asyncio.Semaphore(0)

    async def chat() -> list[tuple[str, Any]]:
        # No cookie: each request is a new anonymous visitor.
        headers = {"Accept": "text/event-stream", "Content-Type": "application/json"}
        body = bytearray()
        async with (
            httpx2.AsyncClient(timeout=60) as client,
            client.stream(
                "POST",
                f"{workers[0]}/api/chat",
                content=json.dumps({"message": "hi"}),
                headers=headers,
            ) as response,
        ):
            seen = False
            async for chunk in response.aiter_bytes():
                body += chunk
                if not seen and b"event: delta" in body:
                    seen = True
                    first_deltas.release()
        return parse_sse(bytes(body))

    tasks = [asyncio.create_task(chat()) for _ in range(streams)]
    # Were a connection held through each 15 s stream, the pool would run dry and the
    # later streams would wait for one (up to the pool's 30 s) instead of all streaming.
    for _ in range(streams):
        await asyncio.wait_for(first_deltas.acquire(), 8)
    held = await sync_to_async(worker_connections)()
    results = await asyncio.gather(*tasks)

    assert len(held) <= 2 * POOL_SIZE, f"{streams} open streams, connections: {held}"
    assert all(state == "idle" for state, _ in held), held  # none inside a transaction
    assert all(events[-1][0] == "end" for events in results)
    ids = [events[0][1]["message"] for events in results]
    completed = Message.objects.filter(pk__in=ids, status=Message.Status.COMPLETED)
    assert await completed.acount() == streams


def worker_connections() -> list[tuple[str, str]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT state, left(query, 120) FROM pg_stat_activity WHERE application_name = %s",
            [WORKER_APP_NAME],
        )
        return cursor.fetchall()


@pytest.mark.asyncio
async def test_a_stop_asked_at_one_worker_ends_the_stream_on_the_other(workers, fake_upstream):
    if not os.environ.get("REDIS_URL"):
        pytest.skip("workers share stop requests through Redis (REDIS_URL)")
    await upstream_control(
        fake_upstream, "/_config", {"ttft_ms": 50, "delay_ms": 200, "tokens": 100}
    )
    cookie, owner = anonymous_visitor()
    turn = await turn_start(owner=owner, message="hi", defer=True)
    first_token = asyncio.Event()

    async def read() -> list[tuple[str, Any]]:
        # Stop is asked once text has arrived (on a loaded machine the first token can
        # come after a stop sent at the claim, and a reply stopped before it has none).
        headers = {"Accept": "text/event-stream", "Cookie": cookie}
        body = bytearray()
        url = f"{workers[0]}/api/messages/{turn.message_id}/stream"
        async with (
            httpx2.AsyncClient(timeout=60) as client,
            client.stream("GET", url, headers=headers) as response,
        ):
            async for chunk in response.aiter_bytes():
                body += chunk
                if b"event: delta" in body:
                    first_token.set()
        return parse_sse(bytes(body))

    stream = asyncio.create_task(read())
    await asyncio.wait_for(first_token.wait(), 10)
    async with httpx2.AsyncClient() as client:
        response = await client.post(
            f"{workers[1]}/api/messages/{turn.message_id}/cancel",
            headers={"Cookie": cookie, "Content-Type": "application/json"},
        )
    assert response.status_code == 202

    events = await asyncio.wait_for(stream, 10)  # the whole reply would take 20 s

    assert events[-1][0] == "end" and events[-1][1]["status"] == "cancelled"
    row = await Message.objects.aget(pk=turn.message_id)
    assert row.status == Message.Status.CANCELLED
    assert 0 < row.output_tokens < 100  # the partial reply is kept and counted


def needs_redis() -> None:
    if not os.environ.get("REDIS_URL"):
        pytest.skip("workers share turn logs through Redis (REDIS_URL)")


def turn_frames(body: bytes) -> bytes:
    """An SSE body without its `retry:` line and pings: the turn's own frames."""
    return body.replace(b"retry: 3000\n\n", b"").replace(b": ping\n\n", b"")


async def read_until(url: str, cookie: str, *, frames: int, last_event_id: int = 0) -> bytes:
    """Read a stream until `frames` frames with an `id:` have arrived, then hang up."""
    headers = {"Accept": "text/event-stream", "Cookie": cookie}
    if last_event_id:
        headers["Last-Event-ID"] = str(last_event_id)
    body = bytearray()
    async with (
        httpx2.AsyncClient(timeout=60) as client,
        client.stream("GET", url, headers=headers) as response,
    ):
        async for chunk in response.aiter_bytes():
            body += chunk
            if body.count(b"\nid: ") + body.startswith(b"id: ") >= frames:
                break
    return bytes(body)


async def wait_streaming(message_id: int) -> None:
    while (await Message.objects.aget(pk=message_id)).status != Message.Status.STREAMING:
        await asyncio.sleep(0.05)


@pytest.mark.asyncio
async def test_a_reader_on_another_worker_resumes_exactly_from_redis(workers, fake_upstream):
    needs_redis()
    await upstream_control(fake_upstream, "/_config", {"ttft_ms": 50, "delay_ms": 60, "tokens": 30})
    await upstream_control(fake_upstream, "/_reset")
    cookie, owner = anonymous_visitor()
    turn = await turn_start(owner=owner, message="hi", defer=True)
    path = f"/api/messages/{turn.message_id}/stream"
    producer = asyncio.create_task(
        read_stream(workers[0] + path, cookie)  # claims it: worker 0 produces
    )
    await wait_streaming(turn.message_id)

    left = await read_until(workers[1] + path, cookie, frames=5)  # then a phone blips
    left = left[: left.rindex(b"\n\n") + 2]  # what a reader has: whole frames
    seen = int(re.findall(rb"^id: (\d+)$", left, re.M)[-1])
    async with httpx2.AsyncClient(timeout=60) as client:
        resumed = await client.get(
            workers[1] + path,
            headers={"Accept": "text/event-stream", "Cookie": cookie, "Last-Event-ID": str(seen)},
        )
        reloaded = await client.get(
            workers[1] + path, headers={"Accept": "text/event-stream", "Cookie": cookie}
        )
    await producer
    async with httpx2.AsyncClient(timeout=60) as client:
        whole = await client.get(
            workers[0] + path, headers={"Accept": "text/event-stream", "Cookie": cookie}
        )

    expected = turn_frames(whole.content)
    assert parse_sse(expected)[-1][0] == "end"
    assert turn_frames(left) + turn_frames(resumed.content) == expected
    assert turn_frames(reloaded.content) == expected
    assert await upstream_calls(fake_upstream) == 1
    row = await Message.objects.aget(pk=turn.message_id)
    assert row.status == Message.Status.COMPLETED and row.output_tokens == 30


@pytest.fixture
def two_fresh_workers(django_db_blocker, fake_upstream) -> Iterator[list[Any]]:
    """Two workers of their own, for a test that kills one."""
    with django_db_blocker.unblock():
        env = fake_model_env(fake_upstream, CHAT_ALLOW_ANONYMOUS="true")
    ports = [free_port(), free_port()]
    procs = [start_worker(env, port, "--log-level", "warning") for port in ports]
    yield [(f"http://{HOST}:{port}", proc) for port, proc in zip(ports, procs, strict=True)]
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


@pytest.mark.asyncio
async def test_readers_of_a_killed_worker_get_interrupted(two_fresh_workers, fake_upstream):
    needs_redis()
    (first, producer_proc), (second, _) = two_fresh_workers
    await upstream_control(
        fake_upstream, "/_config", {"ttft_ms": 50, "delay_ms": 200, "tokens": 100}
    )
    cookie, owner = anonymous_visitor()
    turn = await turn_start(owner=owner, message="hi", defer=True)
    path = f"/api/messages/{turn.message_id}/stream"
    some_text = asyncio.Event()

    async def claim() -> None:
        headers = {"Accept": "text/event-stream", "Cookie": cookie}
        async with (
            httpx2.AsyncClient(timeout=60) as client,
            client.stream("GET", first + path, headers=headers) as response,
        ):
            seen = b""
            async for chunk in response.aiter_bytes():
                seen += chunk
                if seen.count(b"event: delta") >= 3:  # a few tokens in, however loaded
                    some_text.set()

    claimer = asyncio.create_task(claim())
    await wait_streaming(turn.message_id)
    follower = asyncio.create_task(read_stream(second + path, cookie))
    await asyncio.wait_for(some_text.wait(), 20)

    producer_proc.send_signal(signal.SIGKILL)  # no finally runs there
    producer_proc.wait(10)
    events = await asyncio.wait_for(follower, 20)  # the reply would take 20 s

    assert events[-1][0] == "error"
    assert events[-1][1]["error"]["type"] == "interrupted"
    assert any(name == "delta" for name, _ in events)
    row = await Message.objects.aget(pk=turn.message_id)
    assert row.status == Message.Status.INCOMPLETE
    assert row.content and row.content == text_of(events)
    claimer.cancel()
