"""The offline demo model, through the real SDK, both APIs, streamed and not."""

import httpx2
import openai
import pytest

from chat import llm
from chat.llm import Finished, TextDelta
from chat.llm.backends import DEMO_BASE_URL
from chat.llm.demo import DEMO_MODEL, DemoTransport, demo_reply, tokenize

pytestmark = pytest.mark.asyncio


def sdk() -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key="demo",
        base_url=DEMO_BASE_URL,
        http_client=httpx2.AsyncClient(transport=DemoTransport(delay=0)),
    )


async def test_reply_is_labelled_multiline_markdown_and_unicode():
    reply = demo_reply("Write a haiku")
    assert reply.startswith("**Offline demo model**")
    assert reply.count("\n") >= 5
    assert "```" in reply and "1. " in reply
    assert "日本語" in reply and "🚀" in reply
    assert "Write a haiku" in reply


async def test_tokens_join_back_to_the_text():
    text = demo_reply("a\n\nb  c")
    assert "".join(tokenize(text)) == text
    assert len(tokenize(text)) > 20


async def test_chat_completions_streamed_through_the_sdk():
    stream = await sdk().chat.completions.create(
        model=DEMO_MODEL,
        messages=[{"role": "user", "content": "hello there"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = [], None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage
    assert "".join(text) == demo_reply("hello there")
    assert usage.completion_tokens == len(tokenize(demo_reply("hello there")))
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_chat_completions_whole_through_the_sdk():
    completion = await sdk().chat.completions.create(
        model=DEMO_MODEL, messages=[{"role": "user", "content": "hi"}]
    )
    assert completion.choices[0].message.content == demo_reply("hi")
    assert completion.usage.completion_tokens > 0


async def test_responses_streamed_through_the_sdk():
    stream = await sdk().responses.create(model=DEMO_MODEL, input="hi", stream=True)
    text, final = [], None
    async for event in stream:
        if event.type == "response.output_text.delta":
            text.append(event.delta)
        elif event.type == "response.completed":
            final = event.response
    assert "".join(text) == demo_reply("hi")
    assert final.usage.output_tokens == len(tokenize(demo_reply("hi")))
    assert final.output_text == demo_reply("hi")


async def test_responses_whole_through_the_sdk():
    response = await sdk().responses.create(
        model=DEMO_MODEL, input=[{"role": "user", "content": "hi"}]
    )
    assert response.output_text == demo_reply("hi")
    assert response.usage.input_tokens > 0


async def test_models_list_and_unknown_endpoint():
    models = await sdk().models.list()
    assert [m.id for m in models.data] == [DEMO_MODEL]
    with pytest.raises(openai.NotFoundError):
        await sdk().embeddings.create(model=DEMO_MODEL, input="x")


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_demo_is_the_default_backend_and_streams_with_usage(settings, api):
    settings.CHAT_PROVIDER = "auto"
    settings.OPENAI_API_KEY = ""
    settings.OPENAI_BASE_URL = ""
    assert llm.backend().is_demo
    events = [
        e
        async for e in llm.stream_reply(
            messages=[{"role": "user", "content": "ping"}], model=DEMO_MODEL, api=api
        )
    ]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == demo_reply("ping")
    assert isinstance(events[-1], Finished) and events[-1].usage.output_tokens > 0
    assert not events[-1].usage.estimated
