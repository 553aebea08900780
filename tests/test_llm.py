"""chat.llm against the real SDK with a scripted upstream at its HTTP boundary."""

import httpx2
import pytest

from chat import llm
from chat.llm import Finished, ProviderError, TextDelta, wire
from chat.llm.client import sdk_client
from tests.upstream import Reply, chat_script, responses_broken_script, responses_script

pytestmark = pytest.mark.asyncio

RESPONSES_USAGE = {
    "input_tokens": 12,
    "output_tokens": 30,
    "total_tokens": 42,
    "input_tokens_details": {"cached_tokens": 8},
    "output_tokens_details": {"reasoning_tokens": 16},
}
CHAT_USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 30,
    "total_tokens": 42,
    "prompt_tokens_details": {"cached_tokens": 8},
    "completion_tokens_details": {"reasoning_tokens": 16},
}
PARTS = ["Hi", " there\n", "line two\r\n", '"quoted"', " 🚀"]


async def collect(api, messages=None, system=""):
    events = []
    async for event in llm.stream_reply(
        messages=messages or [{"role": "user", "content": "hello"}],
        model="gpt-4.1-mini",
        api=api,
        system=system,
    ):
        events.append(event)
    return events


async def collect_until_error(api):
    """The events streamed before the `ProviderError` that ended the stream, and it."""
    events = []
    with pytest.raises(ProviderError) as caught:
        async for event in llm.stream_reply(
            messages=[{"role": "user", "content": "x"}], model="m", api=api
        ):
            events.append(event)
    return events, caught.value


def text_of(events):
    return "".join(e.text for e in events if isinstance(e, TextDelta))


async def test_responses_api_text_and_full_usage(upstream):
    upstream.queue(Reply(script=responses_script(PARTS, usage=RESPONSES_USAGE)))
    events = await collect("responses", system="be brief")
    assert text_of(events) == "".join(PARTS)
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert finished.status == "completed" and finished.finish_reason == "stop"
    assert finished.response_id == "resp_1" and finished.request_id == "req_test"
    assert finished.usage == llm.Usage(12, 30, 42, cached_tokens=8, reasoning_tokens=16)
    request = upstream.requests[0]
    assert request.url.path == "/v1/responses"
    assert request.headers["authorization"] == "Bearer sk-test-secret-key-123456"
    assert upstream.bodies[0]["instructions"] == "be brief"
    assert upstream.bodies[0]["input"] == [{"role": "user", "content": "hello"}]
    assert upstream.bodies[0]["stream"] is True


async def test_responses_usage_details_may_be_absent(upstream):
    usage = {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}
    upstream.queue(Reply(script=responses_script(["x"], usage=usage)))
    finished = (await collect("responses"))[-1]
    assert finished.usage == llm.Usage(3, 4, 7, 0, 0)


async def test_responses_incomplete_is_not_an_error(upstream):
    upstream.queue(
        Reply(
            script=responses_script(
                ["cut"], status="incomplete", incomplete_reason="max_output_tokens"
            )
        )
    )
    finished = (await collect("responses"))[-1]
    assert finished.status == "incomplete"
    assert finished.finish_reason == "max_output_tokens"
    assert finished.usage is None


@pytest.mark.parametrize("on_finish_chunk", [False, True])
async def test_chat_completions_text_and_usage_wherever_it_arrives(upstream, on_finish_chunk):
    upstream.queue(
        Reply(script=chat_script(PARTS, usage=CHAT_USAGE, usage_on_finish_chunk=on_finish_chunk))
    )
    events = await collect("chat", system="sys")
    assert text_of(events) == "".join(PARTS)
    finished = events[-1]
    assert finished.usage == llm.Usage(12, 30, 42, cached_tokens=8, reasoning_tokens=16)
    assert finished.status == "completed" and finished.response_id == "chatcmpl-1"
    body = upstream.bodies[0]
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"][0] == {"role": "system", "content": "sys"}
    assert upstream.requests[0].url.path == "/v1/chat/completions"


async def test_chat_without_usage_reports_none(upstream):
    upstream.queue(Reply(script=chat_script(["a", "b"])))
    finished = (await collect("chat"))[-1]
    assert finished.usage is None and finished.status == "completed"


async def test_chat_length_finish_is_incomplete(upstream):
    upstream.queue(Reply(script=chat_script(["a"], finish_reason="length")))
    finished = (await collect("chat"))[-1]
    assert finished.status == "incomplete" and finished.finish_reason == "length"


@pytest.mark.parametrize(
    ("status", "kind", "http_status"),
    [
        (401, "auth", 502),
        (403, "auth", 502),
        (429, "rate_limit", 429),
        (400, "bad_request", 400),
        (500, "upstream", 502),
        (503, "upstream", 502),
    ],
)
async def test_upstream_http_errors_are_translated(upstream, status, kind, http_status):
    upstream.queue(
        Reply(
            status=status,
            json_body={"error": {"message": "Incorrect API key sk-test-secret-key-123456 given"}},
            headers={"retry-after": "7"},
        )
    )
    with pytest.raises(ProviderError) as caught:
        await collect("chat")
    error = caught.value
    assert error.kind == kind and error.status == http_status
    assert "sk-test-secret-key-123456" not in error.message
    if kind == "rate_limit":
        assert error.retry_after == "7"
    if kind == "bad_request":
        assert "[redacted]" in error.message


async def test_timeout_and_connection_errors(upstream):
    upstream.queue(Reply(raise_exc=httpx2.ReadTimeout("slow")))
    with pytest.raises(ProviderError) as caught:
        await collect("chat")
    assert caught.value.kind == "timeout" and caught.value.status == 504
    upstream.queue(Reply(raise_exc=httpx2.ConnectError("refused")))
    with pytest.raises(ProviderError) as caught:
        await collect("responses")
    assert caught.value.kind == "connection" and caught.value.status == 502


async def test_timeout_mid_stream(upstream):
    upstream.queue(Reply(script=[*chat_script(["a"])[:2], httpx2.ReadTimeout("stalled")]))
    events, error = await collect_until_error("chat")
    assert text_of(events) == "a"
    assert error.kind == "timeout"


@pytest.mark.parametrize("then", ["error", "response.failed"])
async def test_responses_mid_stream_error_event(upstream, then):
    upstream.queue(Reply(script=responses_broken_script(["par"], then=then, message="boom")))
    events, error = await collect_until_error("responses")
    assert text_of(events) == "par"
    assert error.message == "boom" and error.status == 502


async def test_chat_mid_stream_error_chunk(upstream):
    upstream.queue(Reply(script=[*chat_script(["par"])[:2], wire.api_error("overloaded")]))
    with pytest.raises(ProviderError) as caught:
        await collect("chat")
    assert caught.value.message == "overloaded"


async def test_stream_that_stops_without_finishing_is_an_error(upstream):
    upstream.queue(Reply(script=responses_broken_script(["x"], then=None)))
    with pytest.raises(ProviderError, match="ended before it finished"):
        await collect("responses")


async def test_upstream_response_is_closed_when_consumer_stops_early(upstream):
    upstream.queue(Reply(script=chat_script(["a", "b", "c"] * 10)))
    stream = llm.stream_reply(messages=[{"role": "user", "content": "x"}], model="m", api="chat")
    first = await anext(stream)
    assert first == TextDelta("a")
    await stream.aclose()
    assert upstream.streams[0].closed


async def test_one_client_per_event_loop(upstream):
    assert sdk_client() is sdk_client()


async def test_backend_resolution(settings):
    settings.CHAT_PROVIDER = "auto"
    settings.OPENAI_API_KEY = ""
    settings.OPENAI_BASE_URL = ""
    settings.AZURE_OPENAI_ENDPOINT = ""
    assert llm.backend().name == "demo" and llm.backend().api == "chat"
    assert "offline demo" in llm.backend().label
    settings.OPENAI_API_KEY = "sk-abc"
    assert llm.backend().name == "openai" and llm.backend().api == "responses"
    assert "sk-abc" not in llm.backend().label
    settings.OPENAI_BASE_URL = "http://127.0.0.1:11434/v1"
    settings.CHAT_MODEL = "llama3.2"
    assert llm.backend().name == "compatible" and llm.backend().api == "chat"
    assert llm.backend().default_model == "llama3.2"
    settings.AZURE_OPENAI_ENDPOINT = "https://x.openai.azure.com"
    assert llm.backend().name == "azure"


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85"])
async def test_unicode_line_separators_in_raw_json_do_not_split_events(upstream, separator):
    """Servers that send JSON as raw UTF-8 leave these unescaped; they are not SSE line ends."""
    raw = '{"choices":[{"index":0,"delta":{"content":"a%sb"},"finish_reason":null}]}'
    upstream.queue(Reply(script=[raw % separator, *chat_script([], usage=CHAT_USAGE)[1:]]))
    events = await collect("chat")
    assert text_of(events) == f"a{separator}b"


async def test_sse_lines_split_on_cr_lf_and_crlf_even_across_chunks():
    async def chunks():
        for part in [b"data: 1\r", b"\ndata: 2\r\r", b"data: 3\n", b"\nda", b"ta: 4\n\n"]:
            yield part

    lines = [line async for line in llm.parsers.sse_lines(chunks())]
    assert lines == ["data: 1", "data: 2", "", "data: 3", "", "data: 4", ""]


async def test_a_non_object_event_is_an_upstream_error(upstream):
    upstream.queue(Reply(script=["[1, 2]"]))
    with pytest.raises(ProviderError, match="unreadable"):
        await collect("chat")


# --- Reasoning and tool calls ----------------------------------------------------------

CALLS = [
    wire.WireToolCall("call_a", "add", ['{"a"', ": 2,", ' "b": 3}']),
    wire.WireToolCall("call_b", "whoami", ["{", "}"]),
]


async def test_responses_reasoning_summary_and_function_calls_in_fragments(upstream):
    stream = wire.responses_stream(
        [],
        response_id="resp_1",
        model="gpt-5-mini",
        usage=wire.responses_usage(input_tokens=20, output_tokens=9, reasoning_tokens=6),
        reasoning=["Add ", "them."],
        tool_calls=CALLS,
    )
    upstream.queue(Reply(script=list(stream)))
    events = await collect("responses")
    reasoning_item = {
        "id": "rs_1",
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": "Add them."}],
    }
    assert events[:-1] == [
        llm.ReasoningDelta("Add "),
        llm.ReasoningDelta("them."),
        llm.ReasoningItem(reasoning_item),
        llm.ToolCall("call_a", "add", '{"a": 2, "b": 3}'),
        llm.ToolCall("call_b", "whoami", "{}"),
    ]
    assert events[-1].usage.reasoning_tokens == 6
    kinds = [frame["type"] for frame in stream]
    assert kinds.count("response.function_call_arguments.delta") == 5
    assert kinds.count("response.reasoning_summary_text.delta") == 2


async def test_chat_reasoning_content_and_parallel_tool_calls_in_fragments(upstream):
    stream = wire.chat_stream(
        [],
        completion_id="chatcmpl-1",
        model="m",
        usage=wire.chat_usage(prompt_tokens=20, completion_tokens=9),
        reasoning=["Add ", "them."],
        tool_calls=CALLS,
    )
    upstream.queue(Reply(script=list(stream)))
    events = await collect("chat")
    assert events[:-1] == [
        llm.ReasoningDelta("Add "),
        llm.ReasoningDelta("them."),
        llm.ToolCall("call_a", "add", '{"a": 2, "b": 3}'),
        llm.ToolCall("call_b", "whoami", "{}"),
    ]
    assert events[-1].finish_reason == "tool_calls"
    assert events[-1].status == "completed"


async def test_chat_reasoning_named_reasoning_as_ollama_sends_it(upstream):
    stream = wire.chat_stream(
        ["42"], completion_id="c", model="m", reasoning=["hmm"], reasoning_field="reasoning"
    )
    upstream.queue(Reply(script=list(stream)))
    events = await collect("chat")
    assert events[:2] == [llm.ReasoningDelta("hmm"), TextDelta("42")]


async def test_a_reasoning_model_is_asked_for_a_summary_and_tools_are_offered(upstream, settings):
    settings.CHAT_REASONING_EFFORT = "low"
    upstream.queue(Reply(script=responses_script(["ok"])))
    tool = {"name": "add", "description": "Add.", "parameters": {"type": "object"}}
    async for _ in llm.stream_reply(
        messages=[{"role": "user", "content": "x"}],
        model="gpt-5-mini",
        api="responses",
        tools=[tool],
    ):
        pass
    body = upstream.bodies[-1]
    assert body["reasoning"] == {"summary": "auto", "effort": "low"}
    assert body["tools"] == [{"type": "function", "strict": False, **tool}]
    upstream.queue(Reply(script=chat_script(["ok"])))
    await collect("chat")  # gpt-4.1-mini: not a reasoning model, no tools
    assert "reasoning_effort" not in upstream.bodies[-1] and "tools" not in upstream.bodies[-1]
