"""chat/turns/lease.py and recover.py: a producer killed with `kill -9` mid-turn (a real
uvicorn worker) leaves nothing `streaming`: its restart at once, or another worker once
the lease lapses, finishes the turn `incomplete` (`interrupted`) with its text, an
estimated and flagged usage and its cost, counted once in the usage ledger; readers get
the final `interrupted` event. Without Redis the text comes from the row's checkpoint."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx2
import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from chat.models import DailyUsage, Message, ModelPrice
from chat.spend.ledger import ledger_verify
from chat.turns import turn_start
from chat.turns.workers import worker_gone, worker_id
from tests.servers import HOST, fake_model_env, free_port, start_worker
from tests.test_scale import (
    MODEL,
    anonymous_visitor,
    read_stream,
    text_of,
    upstream_control,
    wait_streaming,
)

pytestmark = pytest.mark.django_db(transaction=True)
REPLY = "".join(f" word{i}" for i in range(100))
LEASE_SECONDS = "1.5"


class Workers:
    """Real worker processes of this project on the test database, started on demand."""

    def __init__(self, fake_upstream: str) -> None:
        self.env = fake_model_env(
            fake_upstream, CHAT_ALLOW_ANONYMOUS="true", CHAT_LEASE_SECONDS=LEASE_SECONDS
        )
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, *args: str, **env: str) -> str:
        port = free_port()
        base = f"http://{HOST}:{port}"
        environment = {**self.env, **env}
        self.procs[base] = start_worker(environment, port, "--log-level", "warning", *args)
        return base

    def terminate(self, base: str) -> None:
        """SIGTERM, as systemd or a deploy sends it; returns once the process has exited."""
        proc = self.procs[base]
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down, then raises the signal it caught again: exit by SIGTERM.
        assert proc.wait(60) in (0, -signal.SIGTERM)

    def kill(self, base: str) -> None:
        """`kill -9`: no `finally`, no shutdown; reaped, so its pid is gone."""
        proc = self.procs[base]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)


@pytest.fixture
def workers(fake_upstream, settings) -> Iterator[Workers]:
    # Turns started here are the workers' model's.
    settings.CHAT_PROVIDER = "openai"
    settings.OPENAI_BASE_URL = f"{fake_upstream}/v1"
    settings.CHAT_MODEL = MODEL
    settings.CHAT_API = "chat"
    running = Workers(fake_upstream)
    yield running
    for proc in running.procs.values():
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


async def priced() -> None:
    await ModelPrice.objects.acreate(
        model=MODEL,
        input_per_million=Decimal("1"),
        cached_input_per_million=Decimal("0.5"),
        output_per_million=Decimal("2"),
        valid_from=timezone.now() - timedelta(days=1),
    )


async def claim_and_read(base: str, message_id: int, cookie: str, deltas: int) -> asyncio.Task:
    """Open the turn's stream on `base` (which claims it) and return once `deltas` have
    arrived; the reading goes on in the returned task."""
    arrived = asyncio.Event()

    async def read() -> None:
        headers = {"Accept": "text/event-stream", "Cookie": cookie}
        url = f"{base}/api/messages/{message_id}/stream"
        async with (
            httpx2.AsyncClient(timeout=60) as client,
            client.stream("GET", url, headers=headers) as response,
        ):
            seen = b""
            async for chunk in response.aiter_bytes():
                seen += chunk
                if seen.count(b"event: delta") >= deltas:
                    arrived.set()

    task = asyncio.create_task(read())
    await asyncio.wait_for(arrived.wait(), 20)
    return task


async def checkpointed(message_id: int) -> None:
    """Wait until the row holds some text the producer checkpointed; with Redis, the
    turn's log there holds it instead (the reader got it from there)."""
    if os.environ.get("REDIS_URL"):
        return
    for _ in range(400):
        row = await Message.objects.aget(pk=message_id)
        if row.content:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no text was checkpointed")


async def finished(message_id: int) -> Message:
    for _ in range(400):
        row = await Message.objects.aget(pk=message_id)
        if row.status in Message.FINAL_STATUSES:
            return row
        await asyncio.sleep(0.05)
    raise AssertionError("the turn was never finished")


async def assert_recorded_once(row: Message, owner: Any) -> None:
    assert row.status == Message.Status.INCOMPLETE
    assert (row.error_type, row.finish_reason) == ("interrupted", "interrupted")
    assert row.content and REPLY.startswith(row.content)
    # The upstream billed the prompt and what it sent: estimated, flagged, priced.
    assert row.usage_estimated and row.input_tokens and row.output_tokens
    assert row.cost is not None and row.cost > 0
    ledger = [r async for r in DailyUsage.objects.filter(anonymous_key=owner.anonymous_key)]
    assert [(r.requests, r.incomplete, r.estimated) for r in ledger] == [(1, 1, 1)]
    assert ledger[0].output_tokens == row.output_tokens
    assert await sync_to_async(ledger_verify)() == []


async def a_long_turn(fake_upstream: str) -> tuple[str, Any, Any]:
    """A priced, deferred turn whose reply takes ten seconds: (cookie, owner, turn)."""
    await priced()
    await upstream_control(fake_upstream, "/_config", {"ttft_ms": 50, "delay_ms": 100})
    cookie, owner = anonymous_visitor()
    return cookie, owner, await turn_start(owner=owner, message="hi", defer=True)


@pytest.mark.asyncio
async def test_a_killed_workers_restart_finishes_its_turn_at_start_up(workers, fake_upstream):
    cookie, owner, turn = await a_long_turn(fake_upstream)
    first = workers.start()
    reader = await claim_and_read(first, turn.message_id, cookie, deltas=5)
    await checkpointed(turn.message_id)

    workers.kill(first)
    reader.cancel()
    restarted = workers.start()  # listens only once its start-up work is done

    row = await Message.objects.aget(pk=turn.message_id)
    await assert_recorded_once(row, owner)
    # A reader coming back is told what happened, from the row.
    events = await read_stream(f"{restarted}/api/messages/{turn.message_id}/stream", cookie)
    assert events[-1][0] == "error" and events[-1][1]["error"]["type"] == "interrupted"
    assert events[-1][1]["usage_estimated"] and text_of(events) == row.content


@pytest.mark.asyncio
async def test_another_worker_finishes_a_killed_workers_turn_once_its_lease_lapses(
    workers, fake_upstream
):
    cookie, owner, turn = await a_long_turn(fake_upstream)
    producer, other = workers.start(), workers.start()
    reader = await claim_and_read(producer, turn.message_id, cookie, deltas=5)
    await wait_streaming(turn.message_id)
    follower = asyncio.create_task(
        read_stream(f"{other}/api/messages/{turn.message_id}/stream", cookie)
    )
    await checkpointed(turn.message_id)

    workers.kill(producer)
    reader.cancel()
    row = await finished(turn.message_id)  # the whole reply would take 10 s more

    await assert_recorded_once(row, owner)
    events = await asyncio.wait_for(follower, 20)
    assert events[-1][0] == "error" and events[-1][1]["error"]["type"] == "interrupted"
    assert REPLY.startswith(text_of(events))


def test_a_worker_is_gone_when_its_process_is_gone_or_is_a_new_life_of_this_one():
    host = socket.gethostname()
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert worker_gone(f"{host}:{dead.pid}:abcd")
    assert worker_gone(f"{host}:{os.getpid()}:previous")  # same pid, another boot
    assert not worker_gone(worker_id())  # this very process
    assert not worker_gone(f"{host}:{os.getppid()}:abcd")  # alive
    assert not worker_gone(f"elsewhere:{dead.pid}:abcd")  # another host: its lease says


@pytest.mark.asyncio
async def test_sigterm_lets_a_running_turn_finish_before_the_worker_exits(workers, fake_upstream):
    await upstream_control(fake_upstream, "/_config", {"ttft_ms": 50, "delay_ms": 50, "tokens": 40})
    cookie, owner = anonymous_visitor()
    turn = await turn_start(owner=owner, message="hi", defer=True)
    worker = workers.start(CHAT_SHUTDOWN_SECONDS="60")
    reader = await claim_and_read(worker, turn.message_id, cookie, deltas=3)

    await asyncio.to_thread(workers.terminate, worker)  # drained, then exited

    row = await Message.objects.aget(pk=turn.message_id)
    assert (row.status, row.output_tokens, row.usage_estimated) == ("completed", 40, False)
    assert row.content == "".join(f" word{i}" for i in range(40))
    await asyncio.wait_for(reader, 10)


@pytest.mark.asyncio
async def test_sigterm_records_a_turn_past_the_deadline_as_interrupted(workers, fake_upstream):
    cookie, owner, turn = await a_long_turn(fake_upstream)
    worker = workers.start("--timeout-graceful-shutdown", "1", CHAT_SHUTDOWN_SECONDS="0.5")
    reader = await claim_and_read(worker, turn.message_id, cookie, deltas=3)

    await asyncio.to_thread(workers.terminate, worker)  # the reply would take 10 s more

    row = await Message.objects.aget(pk=turn.message_id)
    await assert_recorded_once(row, owner)
    reader.cancel()
