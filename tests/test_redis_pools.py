"""Every Redis connection pool of a worker is bounded: many tails, publishers and request
contexts at once never open more connections than the pool's cap, and the work past the
cap waits for a connection instead of failing. Counted at the server, by client name."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator

import pytest
import redis
from asgiref.sync import sync_to_async
from django.core.cache import caches

from chat.ops import cache as cache_module
from chat.streams import StreamEvent
from chat.turns.log import TurnLog, redis_streams
from tests.conftest import REDIS_URL, redis_reachable

pytestmark = pytest.mark.asyncio
CAP = 2
LOGS = 8  # several times the cap, so that tails and publishers wait for connections
DELTAS = 5


@pytest.fixture
def names(settings) -> Iterator[dict[str, str]]:
    """This test's own client names and key prefix on the shared test Redis."""
    if not redis_reachable():
        if os.environ.get("CI"):
            pytest.fail(f"Redis at {REDIS_URL} is not reachable (CI must test it).")
        pytest.skip(f"Redis at {REDIS_URL} is not reachable.")
    tag = uuid.uuid4().hex[:12]
    prefix = f"test-pools-{tag}"
    settings.REDIS_URL = REDIS_URL
    settings.CACHES = {
        "default": {
            "BACKEND": "chat.ops.cache.ResilientRedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": prefix,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 2},
        }
    }
    yield {"tag": tag, "prefix": prefix}
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)


class Connections:
    """The ids of the server's connections under each client name, over several looks
    (a connection that was closed and replaced by another counts twice)."""

    def __init__(self) -> None:
        self.admin = redis.Redis.from_url(REDIS_URL)
        self.seen: dict[str, set[int]] = {}

    def look(self) -> None:
        for client in self.admin.client_list():
            self.seen.setdefault(client["name"], set()).add(int(client["id"]))

    def of(self, name: str) -> int:
        return len(self.seen.get(f"{name}:{os.getpid()}", set()))


@pytest.fixture
def turnlog_pools(names, monkeypatch) -> Iterator[dict[str, str]]:
    monkeypatch.setattr(redis_streams, "REDIS_CONNECTIONS", CAP)
    monkeypatch.setattr(redis_streams, "TAIL_CONNECTIONS", CAP)
    monkeypatch.setattr(redis_streams, "CLIENT_NAME", f"test-commands-{names['tag']}")
    monkeypatch.setattr(redis_streams, "TAIL_CLIENT_NAME", f"test-tails-{names['tag']}")
    # Producers would refresh it as they stream; this test's are idle between frames.
    monkeypatch.setattr(redis_streams, "ALIVE_SECONDS", 600)
    # The pools are made on first use in the test's own event loop, with these.
    yield names


async def test_many_tails_and_publishers_share_capped_pools_and_lose_nothing(turnlog_pools):
    connections = Connections()
    keys = [f"chat:turn:pools:{n}" for n in range(LOGS)]
    await redis_streams.alive_refresh(keys)
    copies = [
        redis_streams.tail_start(TurnLog(key), interrupted=lambda log: asyncio.sleep(0))
        for key in keys
    ]

    async def read(copy: TurnLog) -> str:
        text = ""
        async for event in copy.events_after(0):
            connections.look()
            text += event.data.get("text", "") if event.type == "delta" else f"<{event.type}>"
        return text

    readers = [asyncio.create_task(read(copy)) for copy in copies]
    # Every tail is blocked in its XREAD, or waiting for a connection to do it, before
    # anything is written: more tails than connections, all at once.
    while sum(copy.readers for copy in copies) < LOGS:
        await asyncio.sleep(0)
    producers = [TurnLog(key, publisher=redis_streams.Publisher(key)) for key in keys]
    for step in range(DELTAS):
        for producer in producers:
            producer.append(StreamEvent("delta", {"text": f"{step}."}))
        await asyncio.sleep(0)
        connections.look()
    for producer in producers:
        producer.append(StreamEvent("end", {"status": "completed"}))

    texts = await asyncio.gather(*readers)
    connections.look()

    assert texts == ["0.1.2.3.4.<end>"] * LOGS
    assert 1 <= connections.of(redis_streams.TAIL_CLIENT_NAME) <= CAP
    assert 1 <= connections.of(redis_streams.CLIENT_NAME) <= CAP


@pytest.fixture
def cache_pool(names, monkeypatch) -> Iterator[dict[str, str]]:
    monkeypatch.setattr(cache_module, "CACHE_CONNECTIONS", CAP)
    monkeypatch.setattr(cache_module, "CLIENT_NAME", f"test-cache-{names['tag']}")
    # A pool of its own: the process's pools are keyed by their options, the name among them.
    yield names


async def test_cache_objects_of_every_request_context_share_one_capped_pool(cache_pool):
    """Django makes a cache object per request context; they all share the process's pool."""
    connections = Connections()
    made = []

    def request(n: int) -> int:
        shared = caches["default"]
        made.append(shared)  # kept, so that no two contexts' objects share an id
        shared.set(f"k{n}", n)
        connections.look()
        return shared.get(f"k{n}")

    contexts = 4 * CAP
    values = await asyncio.gather(
        *(sync_to_async(request, thread_sensitive=False)(n) for n in range(contexts))
    )
    connections.look()

    assert values == list(range(contexts))
    assert len({id(shared) for shared in made}) == contexts
    assert not caches["default"].degraded
    assert 1 <= connections.of(cache_module.CLIENT_NAME) <= CAP
