"""CHAT_LOG_FORMAT=json (chat.ops.logs): one JSON object per line, with the request id."""

from __future__ import annotations

import io
import json
import logging
import sys
from decimal import Decimal

import pytest

from chat.models import Message
from chat.ops import request_ids
from chat.ops.logs import JsonFormatter
from tests.asgi import AsgiClient
from tests.upstream import Reply, chat_script


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    logger = logging.getLogger("chat.test")
    return logger.makeRecord("chat.test", logging.WARNING, __file__, 1, message, args, None,
                             extra=extra)  # fmt: skip


def test_one_object_per_line_with_extra_fields_as_keys():
    line = JsonFormatter().format(
        record("turn %s\nfinished", 7, message_id=7, cost=Decimal("0.10"), model="m")
    )
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "turn 7\nfinished" and entry["level"] == "WARNING"
    assert entry["logger"] == "chat.test" and entry["time"].endswith("+00:00")
    assert entry["message_id"] == 7 and entry["model"] == "m" and entry["cost"] == "0.10"
    assert entry["request_id"] == ""  # outside a request
    assert "args" not in entry and "msg" not in entry and "pathname" not in entry


def test_a_traceback_is_one_field_of_the_same_line():
    try:
        raise ValueError("boom")
    except ValueError:
        failed = record("failed")
        failed.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(failed))
    assert entry["message"] == "failed" and "ValueError: boom" in entry["exc"]


def test_the_request_id_of_the_current_context():
    token = request_ids.current.set("req-42")
    try:
        assert json.loads(JsonFormatter().format(record("hi")))["request_id"] == "req-42"
    finally:
        request_ids.current.reset(token)


@pytest.fixture
def json_log():
    """The "chat" logger's lines as CHAT_LOG_FORMAT=json writes them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("chat")
    logger.addHandler(handler)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_turn_finished_carries_the_request_and_the_turn(upstream, mini_price, json_log):
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    upstream.queue(Reply(script=chat_script(["Hi", " there"], usage=usage)))
    response = await AsgiClient().post(
        "/api/chat",
        {"message": "secret prompt"},
        headers={"accept": "text/event-stream", "X-Request-ID": "edge-7f3a"},
    )
    assert response.headers["x-request-id"] == "edge-7f3a"
    [finished] = [e for e in json_log() if e["message"].startswith("turn finished")]
    row = await Message.objects.aget(role="assistant")
    assert finished["request_id"] == "edge-7f3a"  # logged while the body was streaming
    assert finished["message_id"] == row.pk and finished["status"] == "completed"
    assert finished["model"] == "gpt-4.1-mini" and finished["upstream_request_id"] == "req_test"
    assert (finished["input_tokens"], finished["output_tokens"]) == (10, 5)
    assert finished["ttft_ms"] == row.ttft_ms and finished["duration_ms"] == row.duration_ms
    everything = json.dumps(json_log())
    assert "secret prompt" not in everything and "sk-test-secret" not in everything
