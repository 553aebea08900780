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
from tests.conftest import REDIS_URL, redis_reachable

pytestmark = pytest.mark.asyncio
CAP = 2


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
def cache_pool(names, monkeypatch) -> Iterator[dict[str, str]]:
    monkeypatch.setattr(cache_module, "CACHE_CONNECTIONS", CAP)
    monkeypatch.setattr(cache_module, "CLIENT_NAME", f"test-cache-{names['tag']}")
    monkeypatch.setattr(cache_module, "_pools", {})
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
