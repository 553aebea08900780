"""chat/llm/wire.py: what it writes, our parsers read back as the same text and usage,
and it is shaped as OpenAI sends it."""

import json

import pytest

from chat.llm import Finished, ProviderError, TextDelta, Usage, wire
from chat.llm.parsers import ChatParser, ResponsesParser, sse_data, sse_lines

pytestmark = pytest.mark.asyncio

PARTS = ["Hi", " there\n", "line two\r\n", '"quoted" \\ ', "a\u2028b\u2029c", " 🚀✨", " 日本語"]
TEXT = "".join(PARTS)
USAGE = Usage(12, 30, 42, cached_tokens=8, reasoning_tokens=16)
RESPONSES_USAGE = wire.responses_usage(
    input_tokens=12, output_tokens=30, cached_tokens=8, reasoning_tokens=16
)
CHAT_USAGE = wire.chat_usage(
    prompt_tokens=12, completion_tokens=30, cached_tokens=8, reasoning_tokens=16
)


async def read_back(
    payloads: list[wire.Payload], parser: ResponsesParser | ChatParser, piece: int = 0
) -> tuple[str, Finished]:
    """Frames the payloads, sends the bytes whole or in `piece`-byte pieces (cutting
    lines, CRLFs and UTF-8 sequences anywhere), and parses them back."""
    body = b"".join(map(wire.sse_frame, payloads))

    async def chunks():
        step = piece or len(body)
        for start in range(0, len(body), step):
            yield body[start : start + step]

    events = []
    async for data in sse_data(sse_lines(chunks())):
        events += parser(data)
    assert all(isinstance(event, TextDelta) for event in events)
    return "".join(event.text for event in events), parser.end()


def responses(**options) -> wire.Stream:
    return wire.responses_stream(PARTS, response_id="resp_abc", model="gpt-4.1", **options)


def chat(**options) -> wire.Stream:
    return wire.chat_stream(PARTS, completion_id="chatcmpl-abc", model="gpt-4.1", **options)


# --- Written, then read back ----------------------------------------------------------


@pytest.mark.parametrize("piece", [0, 1, 5])
async def test_responses_stream_reads_back_as_its_text_and_usage(piece):
    text, finished = await read_back(
        list(responses(usage=RESPONSES_USAGE)), ResponsesParser(), piece
    )
    assert text == TEXT
    assert finished == Finished("completed", "stop", USAGE, response_id="resp_abc")


async def test_responses_incomplete_reads_back_with_its_reason():
    stream = responses(
        usage=RESPONSES_USAGE, status="incomplete", incomplete_reason="max_output_tokens"
    )
    text, finished = await read_back(list(stream), ResponsesParser())
    assert text == TEXT
    assert finished == Finished("incomplete", "max_output_tokens", USAGE, response_id="resp_abc")


@pytest.mark.parametrize("piece", [0, 1, 5])
@pytest.mark.parametrize("on_finish_chunk", [False, True])
async def test_chat_stream_reads_back_as_its_text_and_usage(piece, on_finish_chunk):
    stream = chat(usage=CHAT_USAGE, usage_on_finish_chunk=on_finish_chunk)
    text, finished = await read_back(list(stream), ChatParser(), piece)
    assert text == TEXT
    assert finished == Finished("completed", "stop", USAGE, response_id="chatcmpl-abc")


async def test_chat_stream_without_usage_reads_back_without_it():
    text, finished = await read_back(list(chat(finish_reason="length")), ChatParser())
    assert text == TEXT
    assert finished == Finished("incomplete", "length", None, response_id="chatcmpl-abc")


@pytest.mark.parametrize(
    ("parser", "failure"),
    [
        (ResponsesParser, wire.responses_error("boom", sequence_number=9)),
        (
            ResponsesParser,
            wire.responses_failed("boom", sequence_number=9, response_id="resp_abc", model="m"),
        ),
        (ChatParser, wire.api_error("boom")),
    ],
)
async def test_failures_read_back_as_provider_errors_with_their_message(parser, failure):
    with pytest.raises(ProviderError) as caught:
        await read_back([failure], parser())
    assert caught.value.message == "boom" and caught.value.kind == "upstream"


# --- Shaped as OpenAI sends it -------------------------------------------------------


async def test_a_frame_is_one_data_line_with_raw_utf8_and_responses_events_are_named():
    delta = responses().deltas[4]  # the part holding U+2028 and U+2029
    frame = wire.sse_frame(delta)
    event_line, data_line, blank, end = frame.split(b"\n")
    assert event_line == b"event: response.output_text.delta"
    assert data_line.startswith(b"data: ") and blank == end == b""
    assert "a\u2028b\u2029c".encode() in data_line
    assert json.loads(data_line[6:]) == delta
    chunk = wire.sse_frame(chat().deltas[5])
    assert chunk.startswith(b"data: {") and chunk.endswith(b"}\n\n") and chunk.count(b"\n") == 2
    assert " 🚀✨".encode() in chunk


async def test_done_is_framed_as_it_is():
    assert wire.sse_frame(wire.DONE) == b"data: [DONE]\n\n"


async def test_chat_usage_comes_alone_after_the_finish_chunk_and_done_last():
    *chunks, usage_chunk, done = list(chat(usage=CHAT_USAGE))
    assert done == wire.DONE
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == CHAT_USAGE
    assert usage_chunk["id"] == "chatcmpl-abc"
    role, *contents, finish = chunks
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert [c["choices"][0]["delta"]["content"] for c in contents] == PARTS
    assert finish["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    # With include_usage, OpenAI sends "usage": null on every chunk before the last.
    assert all(c["usage"] is None for c in chunks)
    assert {c["object"] for c in [*chunks, usage_chunk]} == {"chat.completion.chunk"}


async def test_chat_usage_on_the_finish_chunk_or_not_at_all():
    *chunks, finish, done = list(chat(usage=CHAT_USAGE, usage_on_finish_chunk=True))
    assert done == wire.DONE and finish["usage"] == CHAT_USAGE
    assert all("usage" not in c for c in chunks)
    *chunks, finish, done = list(chat())
    assert done == wire.DONE and finish["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c for c in [*chunks, finish])


async def test_usage_objects_carry_the_details_of_each_api():
    assert RESPONSES_USAGE == {
        "input_tokens": 12,
        "input_tokens_details": {"cached_tokens": 8},
        "output_tokens": 30,
        "output_tokens_details": {"reasoning_tokens": 16},
        "total_tokens": 42,
    }
    assert CHAT_USAGE == {
        "prompt_tokens": 12,
        "completion_tokens": 30,
        "total_tokens": 42,
        "prompt_tokens_details": {"cached_tokens": 8},
        "completion_tokens_details": {"reasoning_tokens": 16},
    }


async def test_responses_events_in_order_numbered_from_zero_and_ending_in_the_body():
    events = list(responses(usage=RESPONSES_USAGE))
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * len(PARTS),
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["response"]["status"] == "in_progress"
    assert events[0]["response"]["output"] == [] and events[0]["response"]["usage"] is None
    for delta in events[4:-4]:
        assert (delta["item_id"], delta["output_index"], delta["content_index"]) == (
            "msg_abc",
            0,
            0,
        )
    assert events[-4]["text"] == TEXT
    # The last event carries the response a request without `stream` gets as its body.
    body = wire.responses_body(TEXT, response_id="resp_abc", model="gpt-4.1", usage=RESPONSES_USAGE)
    assert events[-1]["response"] == body
    assert body["output"][0]["content"][0]["text"] == TEXT
    assert events[-2]["item"] == body["output"][0]


async def test_chat_body_is_a_whole_completion():
    body = wire.chat_body(TEXT, completion_id="chatcmpl-abc", model="gpt-4.1", usage=CHAT_USAGE)
    assert body["object"] == "chat.completion" and body["usage"] == CHAT_USAGE
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": TEXT, "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
