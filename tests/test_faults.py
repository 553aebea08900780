"""Upstream faults are survived and recorded; nothing is lost: content filters, failures
mid-stream, retries before the first token only, logs without secrets, stale turns, the
context cap, concurrent turns on one conversation, and 200 streams under random faults."""

import asyncio
import io
import json
import logging
import random
from datetime import timedelta

import httpx2
import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.utils import timezone

from chat import llm
from chat.llm import wire
from chat.models import Conversation, DailyUsage, Message
from chat.spend.ledger import ledger_verify
from chat.turns import turns_expire_stale
from chatsite.asgi import application
from tests.asgi import AsgiClient, asgi_request, parse_ndjson, parse_sse
from tests.upstream import Reply, ScriptedUpstream, TrackedStream, chat_script, responses_script

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

SSE = {"accept": "text/event-stream"}
USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
FINAL = {"completed", "incomplete", "failed", "cancelled"}


async def only_reply() -> Message:
    [row] = [m async for m in Message.objects.filter(role="assistant")]
    return row


# --- Content filter -------------------------------------------------------------------


async def test_chat_completions_content_filter_ends_incomplete_and_is_stored(upstream):
    upstream.queue(
        Reply(script=chat_script(["I can't"], usage=USAGE, finish_reason="content_filter"))
    )
    response = await asgi_request("POST", "/api/chat", body={"message": "hi"}, headers=SSE)
    name, end = parse_sse(response.body)[-1]
    assert name == "end" and end["status"] == "incomplete"
    assert end["finish_reason"] == "content_filter"
    row = await only_reply()
    assert (row.status, row.finish_reason, row.content) == (
        "incomplete",
        "content_filter",
        "I can't",
    )
    assert row.total_tokens == 15 and row.finished_at is not None


async def test_responses_content_filter_ends_incomplete_and_is_stored(upstream, settings):
    settings.CHAT_API = "responses"
    llm.reset()
    usage = {"input_tokens": 4, "output_tokens": 2, "total_tokens": 6}
    upstream.queue(
        Reply(
            script=responses_script(
                ["Partly"],
                usage=usage,
                status="incomplete",
                incomplete_reason="content_filter",
            )
        )
    )
    body = (await asgi_request("POST", "/api/chat", body={"message": "hi"})).json()
    assert body["status"] == "incomplete" and body["finish_reason"] == "content_filter"
    row = await only_reply()
    assert (row.status, row.finish_reason, row.content) == (
        "incomplete",
        "content_filter",
        "Partly",
    )
    assert row.api == "responses" and row.total_tokens == 6


# --- Failures mid-stream --------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error_type"),
    [
        (httpx2.RemoteProtocolError("peer closed connection"), "upstream_unreachable"),
        (httpx2.ReadTimeout("stalled"), "upstream_timeout"),
        (wire.api_error("overloaded"), "upstream_error"),
    ],
)
@pytest.mark.parametrize("accept", ["text/event-stream", "application/x-ndjson"])
async def test_failure_after_some_text_keeps_it_and_ends_with_an_error_event(
    upstream, settings, fault, error_type, accept
):
    settings.CHAT_MAX_RETRIES = 2  # the SDK never retries once the body is streaming
    llm.reset()
    upstream.queue(Reply(script=[*chat_script(["partial ", "text"])[:3], 0.05, fault]))
    response = await asgi_request(
        "POST", "/api/chat", body={"message": "hi"}, headers={"accept": accept}
    )
    if accept == "text/event-stream":
        events = [{"type": name, **data} for name, data in parse_sse(response.body)]
    else:
        events = parse_ndjson(response.body)
    assert [e["type"] for e in events] == ["start", "delta", "delta", "error"] or [
        e["type"] for e in events
    ] == ["start", "delta", "error"]
    assert events[-1]["status"] == "failed" and events[-1]["error"]["type"] == error_type
    row = await only_reply()
    assert (row.status, row.content, row.error_type) == ("failed", "partial text", error_type)
    assert upstream.calls == 1


async def test_a_500_then_success_is_retried_into_one_turn(upstream, settings):
    settings.CHAT_MAX_RETRIES = 1
    llm.reset()
    upstream.queue(Reply(status=500, json_body={"error": {"message": "boom"}}))
    upstream.queue(Reply(script=chat_script(["second ", "try"], usage=USAGE)))
    body = (await asgi_request("POST", "/api/chat", body={"message": "hi"})).json()
    assert body["status"] == "completed" and body["reply"] == "second try"
    assert upstream.calls == 2
    assert await Message.objects.filter(role="assistant").acount() == 1
    assert (await only_reply()).content == "second try"


async def test_retries_exhausted_fail_the_turn_once(upstream, settings):
    settings.CHAT_MAX_RETRIES = 1
    llm.reset()
    for _ in range(2):
        upstream.queue(Reply(status=503, json_body={"error": {"message": "down"}}))
    response = await asgi_request("POST", "/api/chat", body={"message": "hi"})
    assert response.status == 502 and response.json()["error"]["type"] == "upstream_error"
    assert upstream.calls == 2
    row = await only_reply()
    assert row.status == "failed" and row.content == ""


async def test_info_logs_carry_the_request_id_but_no_key_and_no_prompt(upstream, caplog):
    prompt = "my very private medical question about zebras"
    upstream.queue(Reply(script=chat_script(["fine"], usage=USAGE)))
    upstream.queue(
        Reply(status=401, json_body={"error": {"message": "bad sk-test-secret-key-123456"}})
    )
    with caplog.at_level(logging.INFO):
        await asgi_request("POST", "/api/chat", body={"message": prompt})
        await asgi_request("POST", "/api/chat", body={"message": prompt}, headers=SSE)
    info = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    assert "request_id=req_test" in info
    assert "status=failed" in info and "status=completed" in info
    assert "sk-test-secret-key-123456" not in info and "sk-test" not in info
    assert "zebras" not in info and "fine" not in info


# --- Nothing is lost ------------------------------------------------------------------


async def stale_rows(age: timedelta) -> list[int]:
    conversation = await Conversation.objects.acreate(anonymous_key="k", model="m")
    ids = []
    for status in ["pending", "streaming", "completed", "streaming"]:
        message = await Message.objects.acreate(
            conversation=conversation, role="assistant", status=status, content="half a"
        )
        ids.append(message.pk)
    old = timezone.now() - age
    await Message.objects.filter(pk__in=ids[:3]).aupdate(created_at=old)
    return ids


async def statuses(ids: list[int]) -> list[str]:
    return [
        s
        async for s in Message.objects.filter(pk__in=ids)
        .order_by("pk")
        .values_list("status", flat=True)
    ]


async def test_stale_turns_become_incomplete_and_keep_their_text():
    ids = await stale_rows(timedelta(hours=2))
    count = await sync_to_async(turns_expire_stale)(older_than=timedelta(hours=1))
    assert count == 2
    # Old pending and streaming rows expire; a finished row and a young one are left alone.
    assert await statuses(ids) == ["incomplete", "incomplete", "completed", "streaming"]
    expired = await Message.objects.aget(pk=ids[1])
    assert expired.content == "half a" and expired.finished_at is not None
    assert expired.error_type == "stale" and expired.finish_reason == "stale"
    assert await sync_to_async(turns_expire_stale)(older_than=timedelta(hours=1)) == 0


async def test_the_command_expires_stale_turns(settings):
    settings.CHAT_STALE_TURN_SECONDS = 60
    ids = await stale_rows(timedelta(minutes=5))
    out = io.StringIO()
    await sync_to_async(call_command)("chat_expire_stale", stdout=out)
    assert "Marked 2 stale replies incomplete" in out.getvalue()
    assert await statuses(ids) == ["incomplete", "incomplete", "completed", "streaming"]
    await sync_to_async(call_command)("chat_expire_stale", "--older-than", "0", stdout=out)
    assert await statuses(ids) == ["incomplete"] * 2 + ["completed", "incomplete"]


async def test_asgi_startup_expires_stale_turns(settings):
    settings.CHAT_STALE_TURN_SECONDS = 60
    ids = await stale_rows(timedelta(minutes=5))
    sent = await lifespan("startup", "shutdown")
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
    assert await statuses(ids) == ["incomplete", "incomplete", "completed", "streaming"]


async def test_a_running_worker_sweeps_for_stale_turns_now_and_then(settings):
    settings.CHAT_STALE_TURN_SECONDS = 60
    settings.CHAT_STALE_SWEEP_SECONDS = 0.05
    inbox: asyncio.Queue = asyncio.Queue()
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    inbox.put_nowait({"type": "lifespan.startup"})
    server = asyncio.create_task(
        application({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, send)
    )
    while not sent:
        await asyncio.sleep(0.01)
    # A worker died after this one started: its rows go stale while this one runs.
    ids = await stale_rows(timedelta(minutes=5))
    for _ in range(200):
        if (await statuses(ids))[:2] == ["incomplete", "incomplete"]:
            break
        await asyncio.sleep(0.02)
    assert await statuses(ids) == ["incomplete", "incomplete", "completed", "streaming"]
    inbox.put_nowait({"type": "lifespan.shutdown"})
    await asyncio.wait_for(server, 5)
    assert sent[-1] == {"type": "lifespan.shutdown.complete"}


async def lifespan(*messages: str) -> list[dict]:
    inbox: asyncio.Queue = asyncio.Queue()
    for message in messages:
        inbox.put_nowait({"type": f"lifespan.{message}"})
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    await application({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, send)
    return sent


async def shutdown_while_streaming(upstream, *, pause: float) -> tuple[Message, list]:
    """A direct stream whose upstream pauses for `pause` s after its first text, and the
    worker shut down meanwhile: the row and the events the client got."""
    script = chat_script(["before shutdown ", "and after"], usage=USAGE)
    script.insert(2, pause)
    upstream.queue(Reply(script=script))
    # uvicorn cancels its own task after --timeout-graceful-shutdown; Django's streaming
    # task keeps running, as here, where nobody cancels it.
    request = asyncio.create_task(
        asgi_request("POST", "/api/chat", body={"message": "hi"}, headers=SSE)
    )
    while not (upstream.streams and upstream.streams[0].sent >= 2):
        await asyncio.sleep(0.01)
    sent = await lifespan("startup", "shutdown")
    assert sent[-1] == {"type": "lifespan.shutdown.complete"}
    return await only_reply(), parse_sse((await asyncio.wait_for(request, 5)).body)


async def test_asgi_shutdown_lets_running_turns_finish_within_the_deadline(upstream, settings):
    settings.CHAT_SHUTDOWN_SECONDS = 30
    row, events = await shutdown_while_streaming(upstream, pause=0.5)
    assert (row.status, row.content) == ("completed", "before shutdown and after")
    assert (row.output_tokens, row.usage_estimated) == (5, False)
    assert events[-1][0] == "end" and events[-1][1]["status"] == "completed"


async def test_asgi_shutdown_records_turns_past_the_deadline_as_interrupted(
    upstream, settings, mini_price
):
    settings.CHAT_SHUTDOWN_SECONDS = 0.2
    row, events = await shutdown_while_streaming(upstream, pause=3600.0)
    assert (row.status, row.content) == ("incomplete", "before shutdown ")
    assert (row.error_type, row.finish_reason) == ("interrupted", "interrupted")
    # The upstream was paid for what it sent: an estimate, flagged, with its cost.
    assert row.output_tokens == 4 and row.usage_estimated and row.cost is not None
    assert events[-1][0] == "error" and events[-1][1]["error"]["type"] == "interrupted"
    assert events[-1][1]["status"] == "incomplete"
    assert upstream.streams[0].closed
    assert await sync_to_async(ledger_verify)() == []


async def test_context_is_capped_to_the_newest_messages(upstream, settings):
    settings.CHAT_MAX_CONTEXT_MESSAGES = 3
    client = AsgiClient()
    first = (await client.post("/api/chat", {"message": "q1", "system": "be brief"})).json()
    for n in (2, 3):
        await client.post("/api/chat", {"message": f"q{n}", "conversation": first["conversation"]})
    sent = upstream.bodies[-1]["messages"]
    # The system prompt always goes; of the turns, only the newest three messages.
    assert sent == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "Hello world"},
        {"role": "user", "content": "q3"},
    ]


async def test_concurrent_turns_on_one_conversation_do_not_interleave(upstream):
    upstream.default = Reply(
        script=[*chat_script(["a", "b"])[:2], 0.01, *chat_script(["a", "b"])[2:]]
    )
    client = AsgiClient()
    first = (await client.post("/api/chat", {"message": "start"})).json()
    conversation = first["conversation"]
    responses = await asyncio.gather(
        *(
            client.post(
                "/api/chat",
                {"message": f"turn {n}", "conversation": conversation},
                headers=SSE if n % 2 else {},
            )
            for n in range(20)
        )
    )
    assert all(r.status == 200 for r in responses)
    rows = [m async for m in Message.objects.filter(conversation_id=conversation).order_by("pk")]
    assert len(rows) == 42
    # Each turn's two rows are adjacent: user, assistant, user, assistant…
    assert [m.role for m in rows] == ["user", "assistant"] * 21
    assert {m.content for m in rows if m.role == "user"} == {"start"} | {
        f"turn {n}" for n in range(20)
    }
    assert all(m.status == "completed" for m in rows if m.role == "assistant")


# --- Fault injection ------------------------------------------------------------------


class StallingStream(TrackedStream):
    """A body that honours the client's read timeout (MockTransport enforces none): a
    pause longer than it ends in `ReadTimeout`, as a real socket read would."""

    def __init__(self, frames: list, read_timeout: float) -> None:
        super().__init__(frames)
        self.read_timeout = read_timeout

    async def __aiter__(self):
        for frame in self.frames:
            if isinstance(frame, float) and frame > self.read_timeout:
                await asyncio.sleep(self.read_timeout)
                raise httpx2.ReadTimeout("no data within the read timeout")
            async for chunk in TrackedStream([frame]):
                self.sent += 1
                yield chunk


class FaultyUpstream(ScriptedUpstream):
    """Answers each turn by its plan (the prompt names the turn): fine, HTTP 500, stall
    past CHAT_TIMEOUT, or drop the connection mid-stream."""

    def __init__(self, plan: dict[str, str]) -> None:
        super().__init__()
        self.plan = plan

    async def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        prompt = json.loads(request.content)["messages"][-1]["content"]
        fault = self.plan[prompt]
        text = chat_script(["one ", "two ", "three"], usage=USAGE)
        if fault == "http_500":
            return httpx2.Response(500, json={"error": {"message": "boom"}})
        if fault == "stall":
            frames = [*text[:2], 3600.0, *text[2:]]
        elif fault == "drop":
            frames = [*text[:3], httpx2.RemoteProtocolError("gone")]
        else:  # a pause mid-reply gives a disconnecting client time to leave
            frames = [*text[:2], 0.3, *text[2:]]
        stream = StallingStream(frames, read_timeout=request.extensions["timeout"]["read"])
        self.streams.append(stream)
        headers = {"content-type": "text/event-stream", "x-request-id": "req_fault"}
        return httpx2.Response(200, headers=headers, stream=stream)


async def test_200_concurrent_streams_with_faults_and_disconnects(upstream, settings):
    rng = random.Random(7)
    turns = [f"turn {n}" for n in range(200)]
    plan = {t: rng.choices(["ok", "http_500", "stall", "drop"], [80, 7, 7, 6])[0] for t in turns}
    leaving = {t for t in turns if rng.random() < 0.2}
    deferred = {t for t in turns if rng.random() < 0.5}
    settings.CHAT_TIMEOUT = 0.3  # the "stall" turns go quiet for an hour
    # A deferred turn whose reader leaves stops at once, as a direct stream does.
    settings.CHAT_RESUME_GRACE_SECONDS = 0
    fake = FaultyUpstream(plan)
    llm.use_transport(httpx2.MockTransport(fake))
    gate = asyncio.Semaphore(100)

    async def one(turn: str) -> None:
        async with gate:
            client = AsgiClient()
            leave = 3 if turn in leaving else None  # retry:, start, first delta
            if turn in deferred:
                info = (await client.post("/api/chat?stream=defer", {"message": turn})).json()
                await client.get(info["stream_url"], headers=SSE, disconnect_after_chunks=leave)
            else:
                await client.post(
                    "/api/chat", {"message": turn}, headers=SSE, disconnect_after_chunks=leave
                )

    await asyncio.wait_for(asyncio.gather(*(one(t) for t in turns)), 60)
    # Detached turns whose reader left record themselves in their own tasks, just after.
    unfinished = Message.objects.filter(status__in=["pending", "streaming"])
    for _ in range(100):
        if not await unfinished.aexists():
            break
        await asyncio.sleep(0.05)

    assert not await unfinished.aexists()
    replies = {
        m.conversation.title: m
        async for m in Message.objects.filter(role="assistant").select_related("conversation")
    }
    assert await Message.objects.filter(role="assistant").acount() == 200
    assert await Message.objects.filter(role="user").acount() == 200
    assert sorted(replies) == sorted(turns)
    expected_error = {
        "http_500": "upstream_error",
        "stall": "upstream_timeout",
        "drop": "upstream_unreachable",
    }
    for turn, row in replies.items():
        assert row.status in FINAL and row.finished_at is not None, turn
        fault = plan[turn]
        if fault == "ok" and turn not in leaving:
            assert row.status == "completed" and row.content == "one two three", turn
        elif fault == "ok":
            # The client leaves after the first delta, while the upstream (in-process, no
            # delay) has already sent the rest: Django hears the disconnect in a task of
            # its own (a detached producer in its own task too), which on a loaded loop
            # may run after the reply's last token. Either way the row is what happened.
            done = row.status == "completed" and row.content == "one two three"
            assert done or (row.status == "cancelled" and row.content == "one "), turn
        elif turn not in leaving or fault == "http_500":
            assert row.status == "failed" and row.error_type == expected_error[fault], turn
        else:  # the client left around when the upstream failed: either is true
            assert row.status in ("failed", "cancelled"), turn
    seen = {row.status for row in replies.values()}
    assert seen == {"completed", "failed", "cancelled"}
    assert fake.calls == 200  # one upstream call per turn, none retried, none repeated
    assert all(stream.closed for stream in fake.streams)  # no upstream response leaked
    # Each of the 200 counted once in the usage ledger, with what its row holds.
    assert await sync_to_async(ledger_verify)() == []
    requests = DailyUsage.objects.values_list("requests", flat=True)
    assert sum([n async for n in requests]) == 200
