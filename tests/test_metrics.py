"""chat.ops.metrics and /metrics: the counters add up to the stored rows; who may scrape."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import urllib.request
import uuid
from decimal import Decimal

import pytest
from django.db.models import Sum
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from chat.models import Message
from tests.asgi import AsgiClient, asgi_request
from tests.servers import HOST, ROOT, free_port, start_worker, stop
from tests.upstream import Reply, chat_script

MODEL = "gpt-4.1-mini"
# With cached and reasoning tokens, so every `kind` is counted.
USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 30,
    "total_tokens": 42,
    "prompt_tokens_details": {"cached_tokens": 8},
    "completion_tokens_details": {"reasoning_tokens": 16},
}
DB = pytest.mark.django_db(transaction=True)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scraped: dict, name: str, **labels: str) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


async def scrape() -> dict:
    response = await asgi_request("GET", "/metrics")
    assert response.status == 200, response.body
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.body.decode())


@pytest.mark.asyncio
@DB
async def test_counters_add_up_to_the_stored_rows(upstream, mini_price):
    before = await scrape()
    client = AsgiClient()
    for _ in range(2):
        upstream.queue(Reply(script=chat_script(["Hel", "lo"], usage=USAGE)))
        assert (await client.post("/api/chat", {"message": "hi"})).status == 200
    upstream.queue(Reply(script=chat_script(["Hi"], usage=USAGE)))
    sse = await client.post("/api/chat", {"message": "hi"}, headers={"accept": "text/event-stream"})
    assert sse.status == 200
    upstream.queue(Reply(status=401, json_body={"error": {"message": "bad key"}}))
    assert (await client.post("/api/chat", {"message": "hi"})).status == 502
    after = await scrape()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    rows = Message.objects.filter(role="assistant", model=MODEL)
    assert await rows.acount() == 4
    for status in ("completed", "failed"):
        assert (
            delta("chat_turns_total", model=MODEL, status=status)
            == await rows.filter(status=status).acount()
        )
    sums = await rows.aaggregate(
        input=Sum("input_tokens"),
        output=Sum("output_tokens"),
        cached=Sum("cached_tokens"),
        reasoning=Sum("reasoning_tokens"),
        cost=Sum("cost"),
    )
    for kind in ("input", "output", "cached", "reasoning"):
        assert delta("chat_tokens_total", model=MODEL, kind=kind) == sums[kind]
    assert sums["cost"] > 0
    assert delta("chat_cost_usd_total", model=MODEL) == pytest.approx(float(sums["cost"]))
    assert delta("chat_upstream_errors_total", type="upstream_auth") == 1
    # Every turn that reached the model has a duration; the failed one has no first token.
    assert delta("chat_turn_duration_seconds_count", model=MODEL) == 4
    assert delta("chat_time_to_first_token_seconds_count", model=MODEL) == 3
    ttft_sum = await rows.filter(ttft_ms__isnull=False).aaggregate(total=Sum("ttft_ms"))
    assert delta("chat_time_to_first_token_seconds_sum", model=MODEL) == pytest.approx(
        ttft_sum["total"] / 1000
    )


@pytest.mark.asyncio
@DB
async def test_limit_refusals_are_counted_by_type(upstream, settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": f"metrics-{uuid.uuid4().hex}",
        }
    }
    settings.CHAT_RATE_LIMIT = "1/min"
    before = REGISTRY.get_sample_value("chat_limit_refusals_total", {"type": "rate_limited"}) or 0
    assert (await asgi_request("POST", "/api/chat", body={"message": "hi"})).status == 200
    refused = await asgi_request("POST", "/api/chat", body={"message": "hi"})
    assert refused.status == 429 and refused.json()["error"]["type"] == "rate_limited"
    after = REGISTRY.get_sample_value("chat_limit_refusals_total", {"type": "rate_limited"})
    assert after == before + 1


@pytest.mark.asyncio
@DB
async def test_streams_open_counts_a_body_while_it_is_sent(upstream):
    # The upstream pauses mid-reply, so the stream is still open when we look.
    script = chat_script(["Hel", "lo"])
    script.insert(2, 0.5)  # after the role and the first text chunk
    upstream.queue(Reply(script=script))
    gauge = "chat_streams_open"
    before = REGISTRY.get_sample_value(gauge)
    request = asyncio.create_task(
        asgi_request(
            "POST", "/api/chat", body={"message": "hi"}, headers={"accept": "text/event-stream"}
        )
    )
    seen = before
    for _ in range(100):
        seen = REGISTRY.get_sample_value(gauge)
        if seen != before or request.done():
            break
        await asyncio.sleep(0.01)
    assert seen == before + 1
    assert (await request).status == 200
    assert REGISTRY.get_sample_value(gauge) == before


@pytest.mark.asyncio
@DB
async def test_without_a_token_only_direct_loopback_requests_may_scrape(settings):
    settings.CHAT_METRICS_TOKEN = ""
    assert (await asgi_request("GET", "/metrics")).status == 200
    assert (await asgi_request("GET", "/metrics", client="::1")).status == 200
    elsewhere = await asgi_request("GET", "/metrics", client="10.0.0.5")
    assert elsewhere.status == 403 and elsewhere.json()["error"]["type"] == "forbidden"
    # Through a proxy on this machine: the proxy's address is loopback, the client's is not.
    proxied = await asgi_request("GET", "/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert proxied.status == 403


@pytest.mark.asyncio
@DB
async def test_with_a_token_the_bearer_token_is_required(settings):
    settings.CHAT_METRICS_TOKEN = "s3cret-metrics-token"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
        refused = await asgi_request("GET", "/metrics", headers=headers)
        assert refused.status == 401 and refused.headers["www-authenticate"].startswith("Bearer")
        assert b"s3cret" not in refused.body
    allowed = await asgi_request(
        "GET",
        "/metrics",
        client="10.0.0.5",
        headers={"Authorization": "Bearer s3cret-metrics-token"},
    )
    assert allowed.status == 200 and b"chat_turns_total" in allowed.body


WORKER = textwrap.dedent(
    """
    import json, sys
    from chat.ops import metrics
    outcome = json.loads(sys.argv[1])
    metrics.turn_recorded(model="m", outcome=outcome)
    metrics.streams_open.inc()
    if sys.argv[2] == "clean":
        metrics.worker_exited()  # what the ASGI lifespan shutdown calls
    """
)
SCRAPE = "from chat.ops import metrics; print(metrics.exposition()[0].decode())"


def test_multiprocess_mode_sums_every_worker(tmp_path):
    """Two worker processes record turns; a third process's scrape sees both."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    outcomes = [
        {"status": "completed", "usage": {"input_tokens": 10, "output_tokens": 4},
         "cost": "0.000100", "ttft_ms": 50, "duration_ms": 900},
        {"status": "failed", "usage": None, "cost": None, "ttft_ms": None, "duration_ms": 20,
         "error": {"type": "upstream_timeout", "message": "slow"}},
    ]  # fmt: skip
    for outcome, exit in zip(outcomes, ["clean", "crash"], strict=True):
        subprocess.run(
            [sys.executable, "-c", WORKER, json.dumps(outcome), exit], env=env, cwd=ROOT, check=True
        )
    text = subprocess.run(
        [sys.executable, "-c", SCRAPE], env=env, cwd=ROOT, check=True, capture_output=True
    ).stdout.decode()
    scraped = samples(text)
    assert value(scraped, "chat_turns_total", model="m", status="completed") == 1
    assert value(scraped, "chat_turns_total", model="m", status="failed") == 1
    assert value(scraped, "chat_tokens_total", model="m", kind="input") == 10
    assert value(scraped, "chat_cost_usd_total", model="m") == pytest.approx(
        float(Decimal("0.0001"))
    )
    assert value(scraped, "chat_turn_duration_seconds_count", model="m") == 2
    assert value(scraped, "chat_upstream_errors_total", type="upstream_timeout") == 1
    # livesum: a worker that shut down cleanly no longer counts; one that died without
    # its shutdown still does, until the directory is emptied at the next start.
    assert value(scraped, "chat_streams_open") == 1


def test_a_metrics_failure_does_not_fail_the_turn(tmp_path):
    """A real worker whose metrics directory disappears after it started (a tmp cleaner,
    a careless rm): its turns still complete and are recorded; the log says why the
    numbers are missing."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "CHAT_ALLOW_ANONYMOUS": "true",
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], env=env, cwd=ROOT, check=True
    )
    port = free_port()
    log = tmp_path / "worker.log"
    with open(log, "wb") as output:
        proc = start_worker(env, port, output=output)
    try:
        shutil.rmtree(metrics_dir)
        request = urllib.request.Request(
            f"http://{HOST}:{port}/api/chat",
            data=json.dumps({"message": "hi"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            reply = json.loads(response.read())
    finally:
        stop(proc)
    assert reply["status"] == "completed" and reply["reply"]
    with sqlite3.connect(tmp_path / "db.sqlite3") as db:
        stored = db.execute("SELECT status FROM chat_message WHERE id = ?", [reply["message"]])
        assert stored.fetchall() == [("completed",)]
    assert "could not update metrics (turn_recorded)" in log.read_text()


@pytest.mark.asyncio
@DB
async def test_a_worker_samples_its_event_loop_tasks_for_the_scrape():
    from chat.ops import metrics

    keep = asyncio.Event()
    waiting = [asyncio.create_task(keep.wait()) for _ in range(3)]
    try:
        await metrics.worker_sample()
        # This test's own task and the three waiting ones, at least.
        assert value(await scrape(), "chat_event_loop_tasks") >= 4
    finally:
        keep.set()
        await asyncio.gather(*waiting)
