"""The SDK client, one per event loop, and the one call everything else makes: stream a
reply through the Responses API or Chat Completions as our events."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from fnmatch import fnmatchcase
from typing import Any

import httpx2
import openai
from django.conf import settings

from chat.llm import bodies
from chat.llm.backends import Api, Backend, backend
from chat.llm.content import ContextMessage, chat_messages, responses_input
from chat.llm.context import ToolSpec, tool_definitions
from chat.llm.demo import DemoTransport
from chat.llm.errors import ProviderError, translate_error
from chat.llm.events import ProviderEvent
from chat.llm.parsers import ChatParser, ResponsesParser, sse_data, sse_lines
from chat.runtime import PerLoop

UPSTREAM_MAX_CONNECTIONS = 10_000


_clients: PerLoop[openai.AsyncOpenAI] = PerLoop(lambda: _build_client(backend()))
_transport_override: httpx2.AsyncBaseTransport | None = None


def reset() -> None:
    """Forget the resolved backend and clients (settings changed)."""
    backend.cache_clear()
    _clients.clear()


def use_transport(transport: httpx2.AsyncBaseTransport | None) -> None:
    """Send every upstream request through `transport` (a fake upstream for tests/benchmarks)."""
    global _transport_override
    _transport_override = transport
    reset()


def sdk_client() -> openai.AsyncOpenAI:
    """The SDK client for the running event loop (an httpx pool cannot cross loops)."""
    return _clients.get()


class FileBodies(httpx2.AsyncClient):
    """The SDK's HTTP client: a request with files is sent with each file's encoded JSON
    string where the request has its placeholder (`chat.llm.bodies`)."""

    async def send(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:
        encoded = bodies.pending()
        if encoded:
            chunks = bodies.spliced(request.content, encoded)
            headers = request.headers.copy()
            headers["Content-Length"] = str(sum(map(len, chunks)))
            request = httpx2.Request(
                request.method,
                request.url,
                headers=headers,
                content=_Chunks(chunks),
                extensions=request.extensions,
            )
        return await super().send(request, **kwargs)


class _Chunks:
    """A body sent as its chunks, as often as asked (a retry sends it again)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


class AioHttpFileBodies(FileBodies, openai.DefaultAioHttpClient):
    """The same over aiohttp (`CHAT_HTTP_CLIENT`)."""


def _build_client(config: Backend) -> openai.AsyncOpenAI:
    transport = _transport_override
    if transport is None and config.is_demo:
        transport = DemoTransport(delay=settings.CHAT_DEMO_DELAY)
    http_client = FileBodies(transport=transport) if transport is not None else _http_client()
    common: dict[str, Any] = {
        "timeout": settings.CHAT_TIMEOUT,
        "max_retries": settings.CHAT_MAX_RETRIES,
        "http_client": http_client,
    }
    if config.name == "azure":
        return openai.AsyncAzureOpenAI(
            azure_endpoint=config.base_url,
            api_key=settings.AZURE_OPENAI_API_KEY or None,
            api_version=settings.AZURE_OPENAI_API_VERSION,
            **common,
        )
    # Local servers (Ollama, vLLM, llama.cpp) ignore the key but the SDK requires one.
    api_key = "demo" if config.is_demo else (settings.OPENAI_API_KEY or "not-needed")
    return openai.AsyncOpenAI(api_key=api_key, base_url=config.base_url, **common)


def _http_client() -> httpx2.AsyncClient:
    """aiohttp under the SDK: httpx's pool does work per open connection on every request,
    which many concurrent streams turn into most of the CPU. Otherwise httpx with the
    SDK's own defaults (`openai.DefaultAsyncHttpxClient`'s)."""
    if settings.CHAT_HTTP_CLIENT != "aiohttp":
        return FileBodies(
            timeout=openai.DEFAULT_TIMEOUT,
            limits=openai.DEFAULT_CONNECTION_LIMITS,
            follow_redirects=True,
        )
    limits = httpx2.Limits(
        max_connections=UPSTREAM_MAX_CONNECTIONS,
        keepalive_expiry=settings.CHAT_UPSTREAM_KEEPALIVE_SECONDS,
    )
    return AioHttpFileBodies(limits=limits)


def is_reasoning_model(model: str) -> bool:
    """Whether `model` is one that reasons before it answers (`CHAT_REASONING_MODELS`)."""
    return any(fnmatchcase(model, pattern) for pattern in settings.CHAT_REASONING_MODELS)


def _reasoning(model: str, api: Api) -> dict[str, Any]:
    """The request's reasoning options: a summary of the reasoning (Responses), and the
    effort when one is set; nothing for a model that does not reason."""
    if not is_reasoning_model(model):
        return {}
    effort = settings.CHAT_REASONING_EFFORT
    if api == "chat":
        return {"reasoning_effort": effort} if effort else {}
    options = (
        {"summary": settings.CHAT_REASONING_SUMMARY} if settings.CHAT_REASONING_SUMMARY else {}
    )
    if effort:
        options["effort"] = effort
    return {"reasoning": options} if options else {}


async def stream_reply(
    *,
    messages: list[ContextMessage],
    model: str,
    api: Api,
    system: str = "",
    tools: Sequence[ToolSpec] = (),
    web_search: bool = False,
) -> AsyncGenerator[ProviderEvent, None]:
    """Stream one reply: `TextDelta`s, `ReasoningDelta`s, `ReasoningItem`s and `ToolCall`s
    in the order the model sent them, then exactly one `Finished`, or a `ProviderError`.
    `messages` are the conversation: messages, with the files attached to them
    (`chat.llm.content`), and earlier replies' tool calls and results as input items in
    `api`'s shape (`chat.llm.context`); `tools` are offered, and with `web_search`
    (Responses only) the provider's hosted web search.

    The upstream response is closed on every exit, including cancellation of the consumer.
    """
    extra: dict[str, Any] = _reasoning(model, api)
    offered = tool_definitions(api, tools)
    if web_search and api == "responses":
        offered.append({"type": "web_search"})
    if offered:
        extra["tools"] = offered
    sdk = sdk_client()
    pieces = bodies.Pieces()
    # The conversation goes in `extra_body`, which the SDK merges into the JSON as it is:
    # passed as `messages`/`input`, the SDK first walks it against its typed params, on
    # the event loop, every turn, at a cost that grows with the conversation. It is plain
    # JSON already; the rest of the request still goes through the SDK's own arguments.
    request: Any  # either API's streaming response, read the same way below
    parse: ResponsesParser | ChatParser
    if api == "responses":
        request = sdk.responses.with_streaming_response.create(
            model=model,
            instructions=system or openai.omit,
            stream=True,
            extra_body={"input": responses_input(messages, model=model, pieces=pieces), **extra},
        )
        parse = ResponsesParser()
    else:
        system_message = [{"role": "system", "content": system}] if system else []
        request = sdk.chat.completions.with_streaming_response.create(
            model=model,
            messages=[],
            stream=True,
            stream_options={"include_usage": True},
            extra_body={
                "messages": [
                    *system_message,
                    *chat_messages(messages, model=model, pieces=pieces),
                ],
                **extra,
            },
        )
        parse = ChatParser()
    request_id = ""
    try:
        async with _sent(request, pieces) as response:
            request_id = response.headers.get("x-request-id", "")
            async for data in sse_data(sse_lines(response.iter_bytes())):
                for event in parse(data):
                    yield event
            for event in parse.flush():
                yield event
            finished = parse.end()
            yield dataclasses.replace(finished, request_id=request_id)
    except ProviderError as exc:
        exc.request_id = exc.request_id or request_id
        raise
    except openai.APIError as exc:
        raise translate_error(exc) from None
    except httpx2.TimeoutException:
        raise ProviderError(
            "timeout", "The model stopped responding.", request_id=request_id
        ) from None
    except httpx2.TransportError:
        raise ProviderError(
            "connection", "Lost the connection to the model.", request_id=request_id
        ) from None


@asynccontextmanager
async def _sent(request: Any, pieces: bodies.Pieces) -> AsyncIterator[Any]:
    """`async with request as response`, with `pieces` spliced in while it is sent (and
    only then: never across this generator's yields, so never into another request)."""
    with bodies.sending(pieces):
        response = await request.__aenter__()
    try:
        yield response
    finally:
        await request.__aexit__(None, None, None)


async def list_models() -> list[str]:
    """Model ids the upstream offers (for diagnostics)."""
    try:
        page = await sdk_client().models.list()
    except openai.APIError as exc:
        raise translate_error(exc) from None
    return sorted(model.id for model in page.data)
