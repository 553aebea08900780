"""chat/spend/limits.py: rate limit, daily token quota and concurrent-stream cap, checked
against the local-memory cache and against the local Redis (what production workers
share). Over a limit: 429, Retry-After, a JSON error, and no row written."""

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis

from chat.errors import LimitExceeded
from chat.models import Conversation, Message
from chat.spend import limits
from chat.spend.limits import Rate, parse_rate
from tests.asgi import AsgiClient, asgi_request, parse_sse
from tests.conftest import REDIS_URL, redis_reachable
from tests.upstream import Reply, chat_script

BASE_DIR = Path(__file__).resolve().parent.parent
SSE = {"accept": "text/event-stream"}
USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


@pytest.fixture
def user_client():
    return AsgiClient.logged_in


async def row_counts() -> tuple[int, int]:
    return await Conversation.objects.acount(), await Message.objects.acount()


def assert_429(response, error_type: str, max_retry_after: int) -> None:
    assert response.status == 429, response.body
    assert response.json()["error"]["type"] == error_type
    assert response.json()["error"]["message"]
    assert 1 <= int(response.headers["retry-after"]) <= max_retry_after


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("20/min", Rate(20, 60)),
        ("20/m", Rate(20, 60)),
        ("300 / hour", Rate(300, 3600)),
        ("5/10s", Rate(5, 10)),
        ("1000/day", Rate(1000, 86400)),
        ("2/minutes", Rate(2, 60)),
        ("", None),
        ("0/min", None),
    ],
)
def test_parse_rate(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["20", "twenty/min", "5/fortnight", "-1/min"])
def test_parse_rate_refuses_nonsense(text):
    with pytest.raises(ValueError):
        parse_rate(text)


@pytest.mark.asyncio
async def test_rate_counter_is_atomic_under_concurrency(shared_cache, settings):
    settings.CHAT_RATE_LIMIT = "10/hour"
    results = await asyncio.gather(
        *(limits.rate_hit("user:1") for _ in range(50)), return_exceptions=True
    )
    assert sum(r is None for r in results) == 10
    assert all(isinstance(r, LimitExceeded) for r in results if r is not None)


@pytest.mark.asyncio
async def test_stream_slots_are_atomic_under_concurrency(shared_cache, settings):
    settings.CHAT_MAX_CONCURRENT_STREAMS = 3
    results = await asyncio.gather(
        *(limits.stream_acquire("user:1") for _ in range(20)), return_exceptions=True
    )
    assert results.count(True) == 3
    for _ in range(3):
        await limits.stream_release("user:1")
    assert await limits.stream_acquire("user:1") is True


@pytest.mark.asyncio
async def test_a_burst_of_turns_is_admitted_exactly_to_its_limits(shared_cache, settings):
    """More turns at once than the Redis client has connections (they wait for one): the
    rate and the stream cap each admit exactly their number, and slots come back."""
    settings.CHAT_RATE_LIMIT = "400/hour"
    settings.CHAT_MAX_CONCURRENT_STREAMS = 300
    results = await asyncio.gather(
        *(limits.turn_admit(key="user:1", streaming=True) for _ in range(500)),
        return_exceptions=True,
    )
    assert results.count(True) == 300
    refused = [r.type for r in results if isinstance(r, LimitExceeded)]
    assert sorted(set(refused)) == ["rate_limited", "too_many_streams"]
    assert refused.count("rate_limited") == 100 and len(refused) == 200
    await asyncio.gather(*(limits.stream_release("user:1") for _ in range(300)))
    settings.CHAT_RATE_LIMIT = ""
    assert await limits.turn_admit(key="user:1", streaming=True) is True


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_rate_limit_is_429_before_any_row(shared_cache, settings, upstream, user_client):
    settings.CHAT_RATE_LIMIT = "3/min"
    ada, bob = await user_client("ada"), await user_client("bob")
    for _ in range(3):
        assert (await ada.post("/api/chat", {"message": "hi"})).status == 200
    before = await row_counts()
    refused = await ada.post("/api/chat", {"message": "one too many"})
    assert_429(refused, "rate_limited", 60)
    deferred = await ada.post("/api/chat?stream=defer", {"message": "one too many"})
    assert_429(deferred, "rate_limited", 60)
    assert await row_counts() == before and upstream.calls == 3
    # Another user has their own budget.
    assert (await bob.post("/api/chat", {"message": "hi"})).status == 200


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_anonymous_callers_are_limited_by_address_not_cookie(
    shared_cache, settings, upstream
):
    settings.CHAT_RATE_LIMIT = "2/min"
    for _ in range(2):
        assert (await asgi_request("POST", "/api/chat", body={"message": "hi"})).status == 200
    # A fresh cookie jar (no session) does not reset the limit.
    fresh = await asgi_request("POST", "/api/chat", body={"message": "hi"})
    assert_429(fresh, "rate_limited", 60)

    settings.CHAT_CLIENT_IP_HEADER = "X-Forwarded-For"
    # The proxy appends the real address last; what the client put before it is ignored.
    for forwarded, status in [("10.0.0.1", 200), ("10.0.0.1", 200), ("6.6.6.6, 10.0.0.1", 429)]:
        response = await asgi_request(
            "POST", "/api/chat", body={"message": "hi"}, headers={"x-forwarded-for": forwarded}
        )
        assert response.status == status
    other = await asgi_request(
        "POST", "/api/chat", body={"message": "hi"}, headers={"x-forwarded-for": "10.0.0.2"}
    )
    assert other.status == 200


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_daily_token_quota_counts_recorded_usage(
    shared_cache, settings, upstream, user_client
):
    settings.CHAT_DAILY_TOKEN_QUOTA = 20
    upstream.default = Reply(script=chat_script(["ok"], usage=USAGE))
    ada, bob = await user_client("ada"), await user_client("bob")
    assert (await ada.post("/api/chat", {"message": "one"})).status == 200  # 15 used
    sse = await ada.post("/api/chat", {"message": "two"}, headers=SSE)  # 30 used
    assert parse_sse(sse.body)[-1][0] == "end"
    before = await row_counts()
    refused = await ada.post("/api/chat", {"message": "three"})
    assert_429(refused, "quota_exceeded", 86400)
    assert await row_counts() == before and upstream.calls == 2
    assert (await bob.post("/api/chat", {"message": "one"})).status == 200


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_quota_counts_a_turn_the_client_walked_away_from(shared_cache, settings, upstream):
    settings.CHAT_DAILY_TOKEN_QUOTA = 5
    script = chat_script(["a long partial reply ", "that never ends"], usage=USAGE)
    script.insert(2, 5.0)
    upstream.queue(Reply(script=script))
    await asgi_request(
        "POST", "/api/chat", body={"message": "hi"}, headers=SSE, disconnect_after_chunks=3
    )
    row = await Message.objects.aget(role="assistant")
    assert row.status == "cancelled" and row.total_tokens >= 5
    refused = await asgi_request("POST", "/api/chat", body={"message": "again"})
    assert_429(refused, "quota_exceeded", 86400)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_concurrent_streams_are_capped_and_released(
    shared_cache, settings, upstream, user_client
):
    settings.CHAT_MAX_CONCURRENT_STREAMS = 1
    ada = await user_client("ada")
    slow = chat_script(["first ", "reply"], usage=USAGE)
    slow.insert(2, 0.5)
    upstream.queue(Reply(script=slow))
    first = asyncio.create_task(ada.post("/api/chat", {"message": "one"}, headers=SSE))
    while not upstream.streams:
        await asyncio.sleep(0.01)
    before = await row_counts()
    for path in ("/api/chat", "/api/chat?stream=defer"):
        assert_429(await ada.post(path, {"message": "two"}), "too_many_streams", 60)
    assert await row_counts() == before
    assert parse_sse((await first).body)[-1][0] == "end"
    # The slot came back when the stream ended.
    assert (await ada.post("/api/chat", {"message": "three"})).status == 200


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_stream_slot_is_released_on_disconnect_and_on_refusal(
    shared_cache, settings, upstream
):
    settings.CHAT_MAX_CONCURRENT_STREAMS = 1
    script = chat_script(["one ", "two"], usage=USAGE)
    script.insert(2, 5.0)
    upstream.queue(Reply(script=script))
    client = AsgiClient()
    await client.post("/api/chat", {"message": "hi"}, headers=SSE, disconnect_after_chunks=3)
    # A turn that is refused after the slot was taken (foreign conversation) gives it back.
    foreign = await client.post(
        "/api/chat", {"message": "hi", "conversation": str(uuid.uuid4())}, headers=SSE
    )
    assert foreign.status == 404
    assert (await client.post("/api/chat", {"message": "hi"})).status == 200


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_deferred_stream_over_the_cap_stays_pending(shared_cache, settings, upstream):
    settings.CHAT_MAX_CONCURRENT_STREAMS = 1
    client = AsgiClient()
    deferred = (await client.post("/api/chat?stream=defer", {"message": "hi"})).json()
    assert await limits.stream_acquire("ip:127.0.0.1") is True  # another tab is streaming
    refused = await client.get(deferred["stream_url"], headers=SSE)
    assert_429(refused, "too_many_streams", 60)
    row = await Message.objects.aget(pk=deferred["message"])
    assert row.status == "pending" and upstream.calls == 0
    await limits.stream_release("ip:127.0.0.1")
    events = parse_sse((await client.get(deferred["stream_url"], headers=SSE)).body)
    assert events[-1][0] == "end" and upstream.calls == 1
    # A replay of a finished turn takes no slot for long.
    assert (await client.get(deferred["stream_url"], headers=SSE)).status == 200
    assert await limits.stream_acquire("ip:127.0.0.1") is True


def test_limits_hold_across_processes(settings):
    """Two workers are two processes sharing Redis: the counts add up."""
    if not redis_reachable():
        if os.environ.get("CI"):
            pytest.fail(f"Redis at {REDIS_URL} is not reachable (CI must test it).")
        pytest.skip(f"Redis at {REDIS_URL} is not reachable.")
    key = f"user:cross-process-{uuid.uuid4().hex}"
    prefix = f"test-limits-{uuid.uuid4().hex}"
    env = {
        **os.environ,
        "REDIS_URL": REDIS_URL,
        "CHAT_CACHE_PREFIX": prefix,
        "CHAT_RATE_LIMIT": "3/hour",
    }
    code = f"import asyncio; from chat.spend import limits; asyncio.run(limits.rate_hit({key!r}))"
    for _ in range(2):  # two "workers" take two of the three
        worker = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", code],
            cwd=BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert worker.returncode == 0, worker.stderr
    settings.CHAT_RATE_LIMIT = "3/hour"
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": prefix,  # what chatsite/settings.py makes of CHAT_CACHE_PREFIX
        }
    }
    asyncio.run(limits.rate_hit(key))  # the third, in this process
    with pytest.raises(LimitExceeded) as refused:
        asyncio.run(limits.rate_hit(key))
    assert refused.value.status == 429 and refused.value.retry_after <= 3600
    server = redis.Redis.from_url(REDIS_URL)
    server.delete(*server.scan_iter(match=f"{prefix}:*"))
