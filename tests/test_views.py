"""The HTTP API end to end through the ASGI application, with a fake upstream."""

import asyncio
from decimal import Decimal

import pytest

from chat.llm import wire
from chat.models import Conversation, Message
from chat.streams import SSE_PING
from tests.asgi import AsgiClient, asgi_request, parse_ndjson, parse_sse
from tests.upstream import Reply, chat_script

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

PARTS = ["Hello", ",\nworld", "\r\n", ' "quoted"', " 👋🏽 日本"]
TEXT = "".join(PARTS)
USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
SSE = {"accept": "text/event-stream"}


@pytest.fixture
def client():
    return AsgiClient()


async def assistant_rows():
    return [m async for m in Message.objects.filter(role="assistant").order_by("pk")]


async def test_json_reply_is_stored_with_usage_and_cost(client, upstream, mini_price):
    upstream.queue(Reply(script=chat_script(PARTS, usage=USAGE)))
    response = await client.post("/api/chat", {"message": "hi"})
    assert response.status == 200
    body = response.json()
    assert body["reply"] == TEXT
    assert body["status"] == "completed"
    assert body["usage"]["input_tokens"] == 10 and body["usage"]["output_tokens"] == 5
    assert body["cost"] == "0.00001200"  # 10 × 0.40 + 5 × 1.60 per million
    assert body["ttft_ms"] is not None and body["duration_ms"] >= body["ttft_ms"]
    [row] = await assistant_rows()
    assert row.pk == body["message"] and str(row.conversation_id) == body["conversation"]
    assert row.content == TEXT and row.status == "completed"
    assert (row.input_tokens, row.output_tokens, row.total_tokens) == (10, 5, 15)
    assert row.cost == Decimal("0.000012") and not row.usage_estimated
    assert row.provider == "compatible" and row.api == "chat" and row.model == "gpt-4.1-mini"
    assert row.finished_at is not None and row.response_id == "chatcmpl-1"
    user = await Message.objects.aget(role="user")
    assert user.content == "hi" and user.conversation_id == row.conversation_id


async def test_sse_stream_frames_and_headers(client, upstream):
    upstream.queue(Reply(script=chat_script(PARTS, usage=USAGE)))
    response = await client.post("/api/chat", {"message": "hi"}, headers=SSE)
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert "content-encoding" not in response.headers
    assert response.body.startswith(b"retry: 3000\n\n")
    events = parse_sse(response.body)
    assert [name for name, _ in events][0] == "start" and events[-1][0] == "end"
    assert "".join(d["text"] for name, d in events if name == "delta") == TEXT
    frames = response.body.split(b"\n\n")[1:-1]
    assert all(frame.startswith(b"id: ") for frame in frames)
    assert [int(f.split(b"\n")[0][4:]) for f in frames] == list(range(1, len(frames) + 1))
    end = events[-1][1]
    assert end["status"] == "completed" and end["usage"]["total_tokens"] == 15
    [row] = await assistant_rows()
    assert row.content == TEXT and events[0][1]["message"] == row.pk


async def test_ndjson_stream(client, upstream):
    upstream.queue(Reply(script=chat_script(PARTS, usage=USAGE)))
    response = await client.post(
        "/api/chat", {"message": "hi"}, headers={"accept": "application/x-ndjson"}
    )
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = parse_ndjson(response.body)
    assert lines[0]["type"] == "start" and lines[-1]["type"] == "end"
    assert "".join(line["text"] for line in lines if line["type"] == "delta") == TEXT


async def test_usage_missing_is_estimated_and_flagged(client, upstream):
    upstream.queue(Reply(script=chat_script(PARTS)))
    body = (await client.post("/api/chat", {"message": "hi"})).json()
    assert body["usage_estimated"] is True and body["usage"]["output_tokens"] > 0
    [row] = await assistant_rows()
    assert row.usage_estimated and row.output_tokens == body["usage"]["output_tokens"]


async def test_deferred_turn_streams_once_and_replays_after(client, upstream):
    upstream.queue(Reply(script=chat_script(PARTS, usage=USAGE)))
    created = await client.post("/api/chat?stream=defer", {"message": "hi"})
    assert created.status == 201
    info = created.json()
    assert info["stream_url"] == f"/api/messages/{info['message']}/stream"
    assert upstream.calls == 0
    [row] = await assistant_rows()
    assert row.status == "pending"
    prompt = await Message.objects.aget(pk=info["user_message"])
    assert (prompt.role, prompt.content, prompt.conversation_id) == (
        "user",
        "hi",
        row.conversation_id,
    )

    first = await client.get(info["stream_url"], headers=SSE)
    assert "".join(d["text"] for n, d in parse_sse(first.body) if n == "delta") == TEXT
    assert upstream.calls == 1
    await row.arefresh_from_db()
    finished_at = row.finished_at
    assert row.status == "completed"

    again = await client.get(info["stream_url"], headers=SSE)
    events = parse_sse(again.body)
    assert upstream.calls == 1  # a reconnect never reaches the model again
    assert "".join(d["text"] for n, d in events if n == "delta") == TEXT
    assert events[-1][0] == "end" and events[-1][1]["usage"]["total_tokens"] == 15
    await row.arefresh_from_db()
    assert row.finished_at == finished_at and row.total_tokens == 15


async def test_second_reader_waits_for_the_stored_result(client, upstream, settings):
    settings.CHAT_STREAM_WAIT_SECONDS = 10
    info = (await client.post("/api/chat?stream=defer", {"message": "hi"})).json()
    # Another worker claimed it and is streaming.
    await Message.objects.filter(pk=info["message"]).aupdate(status="streaming")
    reader = asyncio.create_task(client.get(info["stream_url"], headers=SSE))
    await asyncio.sleep(0.3)
    assert not reader.done()
    await Message.objects.filter(pk=info["message"]).aupdate(
        status="completed", content="done elsewhere", input_tokens=1, output_tokens=2
    )
    events = parse_sse((await asyncio.wait_for(reader, 5)).body)
    assert [n for n, _ in events] == ["start", "delta", "end"]
    assert events[1][1]["text"] == "done elsewhere"
    assert upstream.calls == 0


async def test_client_disconnect_cancels_and_keeps_partial_text(upstream):
    script = chat_script(["one ", "two ", "three ", "four"], usage=USAGE)
    # pause after the first delta, long enough for the client to leave
    script.insert(2, 5.0)
    upstream.queue(Reply(script=script))
    response = await asgi_request(
        "POST",
        "/api/chat",
        body={"message": "hi"},
        headers=SSE,
        disconnect_after_chunks=3,  # retry, start, first delta
    )
    assert response.status == 200
    [row] = await assistant_rows()
    assert row.status == "cancelled"
    assert row.content == "one "
    assert row.finished_at is not None and row.usage_estimated
    assert upstream.streams[0].closed


async def test_stop_request_ends_the_stream_as_cancelled(client, upstream):
    script = chat_script(["one ", "two ", "three"], usage=USAGE)
    script.insert(2, 30.0)
    upstream.queue(Reply(script=script))
    info = (await client.post("/api/chat?stream=defer", {"message": "hi"})).json()
    streaming = asyncio.create_task(client.get(info["stream_url"], headers=SSE))
    for _ in range(50):
        await asyncio.sleep(0.05)
        if upstream.streams and upstream.streams[0].sent >= 2:
            break
    cancel = await client.post(f"/api/messages/{info['message']}/cancel", {})
    assert cancel.status == 202
    events = parse_sse((await asyncio.wait_for(streaming, 5)).body)
    assert events[-1][0] == "end" and events[-1][1]["status"] == "cancelled"
    [row] = await assistant_rows()
    assert row.status == "cancelled" and row.content == "one "
    assert upstream.streams[0].closed


@pytest.mark.parametrize("accept", ["text/event-stream", "application/json"])
async def test_upstream_auth_failure_is_reported_without_the_key(client, upstream, accept):
    upstream.queue(
        Reply(status=401, json_body={"error": {"message": "bad key sk-test-secret-key-123456"}})
    )
    response = await client.post("/api/chat", {"message": "hi"}, headers={"accept": accept})
    assert b"sk-test" not in response.body
    assert b"Traceback" not in response.body
    if accept == "application/json":
        assert response.status == 502
        assert response.json()["error"]["type"] == "upstream_auth"
    else:
        name, data = parse_sse(response.body)[-1]
        assert name == "error" and data["error"]["type"] == "upstream_auth"
        assert data["status"] == "failed"
    [row] = await assistant_rows()
    assert row.status == "failed" and row.error_type == "upstream_auth"
    assert "sk-test" not in row.error_message


async def test_upstream_rate_limit_passes_retry_after(client, upstream):
    upstream.queue(
        Reply(status=429, json_body={"error": {"message": "slow"}}, headers={"retry-after": "12"})
    )
    response = await client.post("/api/chat", {"message": "hi"})
    assert response.status == 429 and response.headers["retry-after"] == "12"
    assert response.json()["error"]["type"] == "upstream_rate_limit"


async def test_mid_stream_failure_keeps_partial_text(client, upstream):
    script = [*chat_script(["partial ", "text"])[:3], wire.api_error("overloaded")]
    upstream.queue(Reply(script=script))
    events = parse_sse((await client.post("/api/chat", {"message": "hi"}, headers=SSE)).body)
    assert events[-1][0] == "error"
    [row] = await assistant_rows()
    assert row.status == "failed" and row.content == "partial text"
    assert row.error_type == "upstream_error" and row.error_message == "overloaded"


async def test_multi_turn_sends_earlier_messages_as_context(client, upstream):
    upstream.queue(Reply(script=chat_script(["first answer"], usage=USAGE)))
    first = (
        await client.post("/api/chat", {"message": "first question", "system": "be kind"})
    ).json()
    upstream.queue(Reply(script=chat_script(["second answer"], usage=USAGE)))
    second = (
        await client.post(
            "/api/chat", {"message": "second question", "conversation": first["conversation"]}
        )
    ).json()
    assert second["conversation"] == first["conversation"]
    # A new conversation's context is built without reading it back; same shape.
    assert upstream.bodies[0]["messages"] == [
        {"role": "system", "content": "be kind"},
        {"role": "user", "content": "first question"},
    ]
    assert upstream.bodies[1]["messages"] == [
        {"role": "system", "content": "be kind"},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
    ]


async def test_conversations_are_listed_for_their_owner_only(client, upstream):
    body = (await client.post("/api/chat", {"message": "mine"})).json()
    listing = (await client.get("/api/conversations")).json()["conversations"]
    assert [c["id"] for c in listing] == [body["conversation"]]
    assert listing[0]["title"] == "mine"
    detail = (await client.get(f"/api/conversations/{body['conversation']}")).json()
    assert [m["role"] for m in detail["messages"]] == ["user", "assistant"]
    assert detail["messages"][1]["usage"]["total_tokens"] > 0

    stranger = AsgiClient()
    assert (await stranger.get("/api/conversations")).json()["conversations"] == []
    foreign = await stranger.get(f"/api/conversations/{body['conversation']}")
    assert foreign.status == 404 and foreign.json()["error"]["type"] == "not_found"
    foreign_stream = await stranger.get(f"/api/messages/{body['message']}/stream", headers=SSE)
    assert foreign_stream.status == 404
    continue_foreign = await stranger.post(
        "/api/chat", {"message": "x", "conversation": body["conversation"]}
    )
    assert continue_foreign.status == 404
    assert await Message.objects.acount() == 2
    assert upstream.calls == 1


@pytest.mark.parametrize(
    ("body", "headers", "status", "error_type"),
    [
        (b"{not json", {"content-type": "application/json"}, 400, "invalid_json"),
        ({"message": ""}, {}, 400, "empty_message"),
        ({"message": "   \n"}, {}, 400, "empty_message"),
        ({"message": 5}, {}, 400, "invalid_request"),
        ({"message": "hi", "conversation": "nope"}, {}, 400, "invalid_request"),
        ({"message": "hi", "model": "gpt-nope"}, {}, 400, "invalid_model"),
        ({"message": "hi"}, {"accept": "image/png"}, 406, "not_acceptable"),
        (
            b"message=hi",
            {"content-type": "application/x-www-form-urlencoded"},
            415,
            "unsupported_media_type",
        ),
        ({"message": "hi"}, {"sec-fetch-site": "cross-site"}, 403, "cross_origin"),
        ({"message": "hi"}, {"origin": "https://evil.example"}, 403, "cross_origin"),
        ({"message": "x" * 40_000}, {}, 413, "message_too_long"),
    ],
)
async def test_bad_requests_get_json_errors_and_store_nothing(
    client, upstream, body, headers, status, error_type
):
    response = await client.post("/api/chat", body, headers=headers)
    assert response.status == status
    assert response.json()["error"]["type"] == error_type
    assert response.json()["error"]["message"]
    assert await Conversation.objects.acount() == 0
    assert await Message.objects.acount() == 0
    assert upstream.calls == 0


async def test_same_origin_browser_requests_are_allowed(client, upstream):
    headers = {"origin": "http://127.0.0.1", "sec-fetch-site": "same-origin"}
    assert (await client.post("/api/chat", {"message": "hi"}, headers=headers)).status == 200


async def test_wrong_method_and_unknown_paths_are_json(client):
    wrong = await client.get("/api/chat")
    assert wrong.status == 405 and wrong.headers["allow"] == "POST"
    assert wrong.json()["error"]["type"] == "method_not_allowed"
    missing = await client.get("/api/nothing/here")
    assert missing.status == 404 and missing.json()["error"]["type"] == "not_found"
    bad_uuid = await client.get("/api/conversations/not-a-uuid")
    assert bad_uuid.status == 404 and "error" in bad_uuid.json()


async def test_index_page_names_the_demo_backend(client):
    page = await client.get("/")
    assert page.status == 200 and b"Offline demo model" in page.body


async def test_client_that_leaves_while_we_write_still_gets_its_row_finished(upstream):
    """The disconnect lands while Django awaits `send` (a slow client), not inside our
    generator: the turn must still be closed, its upstream closed and its row cancelled."""
    script = chat_script(["one ", "two ", "three"], usage=USAGE)
    script.insert(3, 5.0)
    upstream.queue(Reply(script=script))
    from tests.asgi import application

    disconnected = asyncio.Event()
    stuck = asyncio.Event()
    chunks = 0

    async def receive():
        if not hasattr(receive, "sent"):
            receive.sent = True
            return {"type": "http.request", "body": b'{"message":"hi"}', "more_body": False}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        nonlocal chunks
        if message["type"] == "http.response.body" and message.get("body"):
            chunks += 1
            if chunks == 3:  # retry, start, first delta: now the socket blocks
                disconnected.set()
                await stuck.wait()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/chat",
        "raw_path": b"/api/chat",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"content-type", b"application/json"),
            (b"accept", b"text/event-stream"),
            (b"host", b"127.0.0.1"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    await asyncio.wait_for(application(scope, receive, send), 5)
    for _ in range(50):
        [row] = await assistant_rows()
        if row.status != "streaming":
            break
        await asyncio.sleep(0.05)
    assert row.status == "cancelled" and row.content.startswith("one ")
    assert upstream.streams[0].closed


NDJSON = {"accept": "application/x-ndjson"}


def paused_reply(pause: float) -> Reply:
    """`one `, then nothing for `pause` seconds, then `two` and the end."""
    script = chat_script(["one ", "two"], usage=USAGE)
    script.insert(2, pause)
    return Reply(script=script)


def assert_pinged_while_idle(response, *, idle: float, every: float) -> None:
    """A `: ping` comment, a chunk of its own, every `every` seconds of an `idle` pause
    (scheduling may cost one or two), and the turn's events unchanged around them."""
    pings = response.chunks.count(SSE_PING)
    expected = int(idle / every)
    assert expected - 2 <= pings <= expected + 1, pings
    assert all(chunk == SSE_PING or SSE_PING not in chunk for chunk in response.chunks)
    events = parse_sse(response.body)
    assert "".join(d["text"] for n, d in events if n == "delta") == "one two"
    assert events[-1][0] == "end"


@pytest.mark.parametrize("path", ["/api/chat", "/api/chat?stream=resumable"])
async def test_an_idle_sse_stream_is_pinged_every_period(client, upstream, settings, path):
    settings.CHAT_SSE_PING_SECONDS = 0.2
    upstream.queue(paused_reply(1.0))
    response = await client.post(path, {"message": "hi"}, headers=SSE)
    assert_pinged_while_idle(response, idle=1.0, every=0.2)


async def test_an_idle_deferred_stream_is_pinged_every_period(client, upstream, settings):
    settings.CHAT_SSE_PING_SECONDS = 0.2
    upstream.queue(paused_reply(1.0))
    info = (await client.post("/api/chat?stream=defer", {"message": "hi"})).json()
    response = await client.get(info["stream_url"], headers=SSE)
    assert_pinged_while_idle(response, idle=1.0, every=0.2)


async def test_a_reader_waiting_for_the_stored_result_is_pinged(
    client, upstream, settings, monkeypatch
):
    settings.CHAT_SSE_PING_SECONDS = 0.2
    settings.CHAT_STREAM_WAIT_SECONDS = 10
    monkeypatch.setattr("chat.turns.detached.LOG_APPEARS_SECONDS", 0.1)
    info = (await client.post("/api/chat?stream=defer", {"message": "hi"})).json()
    # Another worker claimed it and streams it without a log here.
    await Message.objects.filter(pk=info["message"]).aupdate(status="streaming")
    reader = asyncio.create_task(client.get(info["stream_url"], headers=SSE))
    await asyncio.sleep(1.6)
    await Message.objects.filter(pk=info["message"]).aupdate(
        status="completed", content="one two", input_tokens=1, output_tokens=2
    )
    response = await asyncio.wait_for(reader, 5)
    # It looks at the row twice a second, so pings come at that pace at the most.
    assert_pinged_while_idle(response, idle=1.5, every=0.5)


@pytest.mark.parametrize("path", ["/api/chat", "/api/chat?stream=resumable"])
async def test_ndjson_and_json_carry_nothing_for_idleness(client, upstream, settings, path):
    settings.CHAT_SSE_PING_SECONDS = 0.1
    upstream.queue(paused_reply(0.5))
    lines = await client.post(path, {"message": "hi"}, headers=NDJSON)
    assert [line["type"] for line in parse_ndjson(lines.body)] == ["start", "delta", "delta", "end"]
    assert b"\n\n" not in lines.body and b"ping" not in lines.body
    upstream.queue(paused_reply(0.5))
    reply = (await client.post(path, {"message": "hi"})).json()
    assert reply["reply"] == "one two" and reply["status"] == "completed"
    assert "type" not in reply
