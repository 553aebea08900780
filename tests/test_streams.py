import json
from decimal import Decimal

import pytest

from chat.streams import (
    IDLE,
    SSE_PING,
    StreamEvent,
    decode_sse,
    encode_ndjson,
    encode_sse,
    fold,
    money_json,
    ndjson_line,
    sse_event,
    sse_retry,
)
from tests.asgi import parse_ndjson, parse_sse

AWKWARD_TEXTS = [
    "line one\nline two",
    "windows\r\nline\r\n",
    "a lone\rcarriage return",
    "quotes \" and ' and \\ backslash",
    "emoji 🚀👩‍💻 and 日本語 and naïve",
    "data: not a field\n\nevent: fake",
    "\n\n\n",
    " leading and trailing spaces ",
    "\u2028 line separator \u2029",
]


@pytest.mark.parametrize("text", AWKWARD_TEXTS)
def test_sse_delta_round_trips_through_an_sse_parser(text):
    frame = sse_event("delta", {"text": text}, id=7)
    assert frame.startswith(b"id: 7\nevent: delta\ndata: ")
    assert frame.endswith(b"\n\n")
    # exactly one frame, whatever the text holds
    assert frame.count(b"\n\n") == 1
    assert parse_sse(frame) == [("delta", {"text": text})]


@pytest.mark.parametrize("text", AWKWARD_TEXTS)
def test_ndjson_delta_round_trips_one_line_per_event(text):
    line = ndjson_line("delta", {"text": text})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert parse_ndjson(line) == [{"type": "delta", "text": text}]


def test_sse_is_utf8_not_ascii_escaped():
    assert "🚀".encode() in sse_event("delta", {"text": "🚀"})


def test_sse_without_id_and_retry_and_ping():
    assert sse_event("end", {"status": "completed"}) == (
        b'event: end\ndata: {"status":"completed"}\n\n'
    )
    assert sse_retry(3000) == b"retry: 3000\n\n"
    # Idleness is a ping in SSE only, whatever id the writer would give it.
    assert encode_sse(IDLE) == encode_sse(IDLE, id=4) == SSE_PING == b": ping\n\n"
    assert encode_ndjson(IDLE) == b""


def test_a_stored_frame_reads_back_as_its_event():
    for event in [
        StreamEvent("delta", {"text": "line\nbreak \u2028 🚀"}),
        StreamEvent("end", {"status": "completed", "usage": None}),
    ]:
        assert decode_sse(encode_sse(event, id=12)) == event


def test_many_deltas_concatenate_to_the_original_text():
    text = "".join(AWKWARD_TEXTS)
    pieces = [text[i : i + 3] for i in range(0, len(text), 3)]
    body = b"".join(sse_event("delta", {"text": p}, id=i) for i, p in enumerate(pieces))
    assert "".join(data["text"] for _, data in parse_sse(body)) == text
    lines = b"".join(ndjson_line("delta", {"text": p}) for p in pieces)
    assert "".join(obj["text"] for obj in parse_ndjson(lines)) == text


def test_fold_gives_the_json_reply():
    events = [
        StreamEvent("start", {"conversation": "c", "message": 2, "model": "m"}),
        StreamEvent("delta", {"text": "a\n"}),
        IDLE,
        StreamEvent("delta", {"text": "b"}),
        StreamEvent("end", {"status": "completed", "usage": {"input_tokens": 1}, "cost": "0.1"}),
    ]
    reply = fold(events)
    assert reply["reply"] == "a\nb"
    assert reply["conversation"] == "c" and reply["message"] == 2
    assert reply["status"] == "completed" and reply["cost"] == "0.1"
    json.dumps(reply)  # serialisable as is


def test_fold_keeps_partial_text_and_error():
    events = [
        StreamEvent("start", {"conversation": "c", "message": 2, "model": "m"}),
        StreamEvent("delta", {"text": "part"}),
        StreamEvent("error", {"status": "failed", "error": {"type": "t", "message": "m"}}),
    ]
    reply = fold(events)
    assert reply["reply"] == "part"
    assert reply["error"] == {"type": "t", "message": "m"}
    assert reply["status"] == "failed"


@pytest.mark.parametrize("separator", ["\x85", "\u2028", "\u2029", "\x0b", "\x0c", "\x1c", "\x1e"])
def test_every_unicode_line_break_stays_inside_one_line(separator):
    text = f"a{separator}b"
    line = ndjson_line("delta", {"text": text}).decode()
    assert len(line.splitlines()) == 1
    assert json.loads(line)["text"] == text
    frame = sse_event("delta", {"text": text}).decode()
    assert len(frame.strip().splitlines()) == 2  # event:, data:


def test_money_is_a_decimal_string_with_every_stored_digit():
    assert money_json(Decimal("0.00001200")) == "0.00001200"
    assert money_json(Decimal("1E-8")) == "0.00000001"  # never in exponent notation
    assert money_json(None) is None
