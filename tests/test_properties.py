"""Property-based tests: the stream encoders (chat/streams.py) and the request parser
(chat/payloads.py) hold for any input Hypothesis can think of."""

import json
import re
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from chat.errors import ChatError
from chat.payloads import ChatRequest, parse_chat_request
from chat.streams import StreamEvent, encode_ndjson, encode_sse
from tests.asgi import parse_ndjson, parse_sse

LIMITS = {"max_message_chars": 2000, "max_system_chars": 500}
# Any Unicode text, including surrogate code points JSON may carry as escapes.
any_text = st.text(st.characters(codec=None, exclude_categories=()))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
fields = st.sampled_from(["message", "conversation", "model", "system"])
near_valid = st.dictionaries(
    fields | st.text(max_size=6),
    st.none() | st.integers() | st.text(max_size=40) | st.just(str(uuid.uuid4())) | any_text,
    max_size=5,
)


def sse_fields(frame: bytes) -> list[tuple[str, str]]:
    """Lines as the SSE spec splits them (CRLF, LF and a lone CR all end a line)."""
    text = frame.decode("utf-8")
    assert text.endswith("\n\n") and "\n\n" not in text[:-2]
    lines = re.split(r"\r\n|\r|\n", text[:-2])
    return [tuple(line.split(": ", 1)) for line in lines]


@given(text=st.text(), n=st.integers(min_value=1, max_value=10**9))
def test_any_text_survives_sse_in_one_frame(text, n):
    frame = encode_sse(StreamEvent("delta", {"text": text}), id=n)
    [(id_field, id_value), (event_field, name), (data_field, data)] = sse_fields(frame)
    assert (id_field, id_value, event_field, name, data_field) == (
        "id",
        str(n),
        "event",
        "delta",
        "data",
    )
    assert json.loads(data) == {"text": text}
    assert parse_sse(frame) == [("delta", {"text": text})]


@given(text=st.text(), event=st.sampled_from(["start", "delta", "end", "error"]))
def test_any_text_survives_ndjson_in_one_line(text, event):
    line = encode_ndjson(StreamEvent(event, {"text": text}))
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and b"\r" not in line
    assert parse_ndjson(line) == [{"type": event, "text": text}]


@given(texts=st.lists(st.text(), max_size=8))
def test_a_stream_of_deltas_reassembles(texts):
    sse = b"".join(
        encode_sse(StreamEvent("delta", {"text": t}), id=i + 1) for i, t in enumerate(texts)
    )
    ndjson = b"".join(encode_ndjson(StreamEvent("delta", {"text": t})) for t in texts)
    assert [data["text"] for _, data in parse_sse(sse)] == texts
    assert [line["text"] for line in parse_ndjson(ndjson)] == texts


def parse(body: bytes) -> ChatRequest | ChatError:
    try:
        return parse_chat_request(body, **LIMITS)
    except ChatError as error:
        assert 400 <= error.status < 500 and error.type and error.message
        return error


@settings(max_examples=300)
@given(body=st.binary(max_size=200))
def test_parser_only_ever_raises_chat_error_on_bytes(body):
    parse(body)


@settings(max_examples=300)
@given(value=json_values | near_valid)
def test_parser_only_ever_raises_chat_error_on_json(value):
    parse(json.dumps(value).encode())


@given(text=any_text)
def test_parser_refuses_text_no_database_can_store(text):
    body = json.dumps({"message": "x" + text}).encode()  # escapes lone surrogates
    result = parse(body)
    storable = "\x00" not in text and not any(0xD800 <= ord(c) <= 0xDFFF for c in text)
    assert isinstance(result, ChatRequest) == (storable and len(text) < 2000)


valid_requests = st.builds(
    ChatRequest,
    message=st.text(min_size=1, max_size=2000).filter(lambda m: m.strip() and "\x00" not in m),
    conversation=st.none() | st.uuids(),
    model=st.none() | st.text(min_size=1, max_size=50).filter(str.strip),
    system=st.none() | st.text(max_size=500).filter(lambda s: "\x00" not in s),
)


@given(request=valid_requests, ascii_only=st.booleans())
def test_valid_requests_round_trip(request, ascii_only):
    data = {
        "message": request.message,
        "conversation": None if request.conversation is None else str(request.conversation),
        "model": request.model,
        "system": request.system,
    }
    body = json.dumps(data, ensure_ascii=ascii_only).encode()
    assert parse_chat_request(body, **LIMITS) == request
