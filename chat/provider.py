"""The only module that knows the openai SDK.

It builds one client per event loop from settings, streams a reply through either the
Responses API or Chat Completions, and turns both into the same small events
(`TextDelta`, then one `Finished`) and one `Usage` type. Failures become `ProviderError`
with a message that is safe to show (never a key).

Streamed events are read as raw SSE lines through the SDK's streaming-response mode and
decoded with `json.loads`: building a typed SDK object per token costs more than all the
rest of the request path, and we only need three fields.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import weakref
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any, Literal

import httpx2
import openai
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from chat.demo import DEMO_MODEL, DemoTransport

Api = Literal["responses", "chat"]
APIS: tuple[Api, ...] = ("responses", "chat")
DEMO_BASE_URL = "http://offline-demo.invalid/v1"
UPSTREAM_MAX_CONNECTIONS = 10_000


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False

    def as_dict(self) -> dict[str, int]:
        data = asdict(self)
        del data["estimated"]
        return data


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class Finished:
    status: Literal["completed", "incomplete"]
    finish_reason: str
    usage: Usage | None
    response_id: str = ""
    request_id: str = ""


ProviderEvent = TextDelta | Finished


class ProviderError(Exception):
    """An upstream failure, already translated into what we answer our own client."""

    STATUS_BY_KIND = {
        "auth": 502,
        "rate_limit": 429,
        "timeout": 504,
        "connection": 502,
        "bad_request": 400,
        "upstream": 502,
    }

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        retry_after: str | None = None,
        request_id: str = "",
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after = retry_after
        self.request_id = request_id

    @property
    def status(self) -> int:
        return self.STATUS_BY_KIND.get(self.kind, 502)

    TYPE_BY_KIND = {
        "auth": "upstream_auth",
        "rate_limit": "upstream_rate_limit",
        "timeout": "upstream_timeout",
        "connection": "upstream_unreachable",
        "bad_request": "upstream_bad_request",
        "upstream": "upstream_error",
    }

    @property
    def error_type(self) -> str:
        return self.TYPE_BY_KIND.get(self.kind, "upstream_error")


def http_status_for(error_type: str) -> int:
    """The HTTP status we answer with for an `upstream_*` error type."""
    kinds = {error: kind for kind, error in ProviderError.TYPE_BY_KIND.items()}
    return ProviderError.STATUS_BY_KIND.get(kinds.get(error_type, "upstream"), 502)


@dataclass(frozen=True, slots=True)
class Backend:
    """What `CHAT_PROVIDER` resolved to, without any secret in it."""

    name: Literal["demo", "openai", "compatible", "azure"]
    api: Api
    default_model: str
    models: tuple[str, ...]
    base_url: str

    @property
    def is_demo(self) -> bool:
        return self.name == "demo"

    @property
    def label(self) -> str:
        if self.is_demo:
            return "offline demo model (no API key configured; replies are canned)"
        where = {"openai": "OpenAI", "azure": "Azure OpenAI"}.get(self.name, "OpenAI-compatible")
        return f"{where} at {self.base_url} ({self.api} API, model {self.default_model})"


@cache
def backend() -> Backend:
    choice = settings.CHAT_PROVIDER.lower()
    if choice == "auto":
        if settings.AZURE_OPENAI_ENDPOINT:
            choice = "azure"
        elif settings.OPENAI_API_KEY or settings.OPENAI_BASE_URL:
            choice = "openai"
        else:
            choice = "demo"
    if choice not in {"demo", "openai", "azure"}:
        raise ImproperlyConfigured("CHAT_PROVIDER must be auto, demo, openai or azure.")

    if choice == "demo":
        name, base_url, default_model = "demo", DEMO_BASE_URL, DEMO_MODEL
    elif choice == "azure":
        if not settings.AZURE_OPENAI_ENDPOINT:
            raise ImproperlyConfigured("CHAT_PROVIDER=azure needs AZURE_OPENAI_ENDPOINT.")
        name, base_url, default_model = "azure", settings.AZURE_OPENAI_ENDPOINT, "gpt-4.1-mini"
    else:
        base_url = settings.OPENAI_BASE_URL or "https://api.openai.com/v1"
        is_openai = "api.openai.com" in base_url
        if is_openai and not settings.OPENAI_API_KEY:
            raise ImproperlyConfigured("CHAT_PROVIDER=openai needs OPENAI_API_KEY.")
        name = "openai" if is_openai else "compatible"
        default_model = "gpt-4.1-mini"

    api = settings.CHAT_API or ("responses" if name == "openai" else "chat")
    if api not in APIS:
        raise ImproperlyConfigured("CHAT_API must be 'responses' or 'chat'.")
    model = settings.CHAT_MODEL or default_model
    models = tuple(dict.fromkeys([model, *settings.CHAT_MODELS]))
    return Backend(name=name, api=api, default_model=model, models=models, base_url=base_url)


_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, openai.AsyncOpenAI] = (
    weakref.WeakKeyDictionary()
)
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


def client() -> openai.AsyncOpenAI:
    """The SDK client for the running event loop (an httpx pool cannot cross loops)."""
    loop = asyncio.get_running_loop()
    existing = _clients.get(loop)
    if existing is None:
        existing = _clients[loop] = _build_client(backend())
    return existing


def _build_client(config: Backend) -> openai.AsyncOpenAI:
    transport = _transport_override
    if transport is None and config.is_demo:
        transport = DemoTransport(delay=settings.CHAT_DEMO_DELAY)
    http_client = (
        httpx2.AsyncClient(transport=transport) if transport is not None else _http_client()
    )
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


def _http_client() -> httpx2.AsyncClient | None:
    """aiohttp under the SDK: httpx's pool does work per open connection on every request,
    which a thousand concurrent streams turn into most of the CPU."""
    if settings.CHAT_HTTP_CLIENT != "aiohttp":
        return None
    limits = httpx2.Limits(
        max_connections=UPSTREAM_MAX_CONNECTIONS,
        keepalive_expiry=settings.CHAT_UPSTREAM_KEEPALIVE_SECONDS,
    )
    return openai.DefaultAioHttpClient(limits=limits)


async def stream_reply(
    *, messages: list[dict[str, str]], model: str, api: Api, system: str = ""
) -> AsyncIterator[ProviderEvent]:
    """Stream one reply: `TextDelta`s, then exactly one `Finished`, or a `ProviderError`.

    The upstream response is closed on every exit, including cancellation of the consumer.
    """
    sdk = client()
    # The conversation goes in `extra_body`, which the SDK merges into the JSON as it is:
    # passed as `messages`/`input`, the SDK first walks it against its typed params,
    # 0.3 ms for one message and 6 ms for 40 (on the event loop, every turn). It is plain
    # JSON already; the rest of the request still goes through the SDK's own arguments.
    if api == "responses":
        request = sdk.responses.with_streaming_response.create(
            model=model,
            instructions=system or openai.omit,
            stream=True,
            extra_body={"input": messages},
        )
        parse = _ResponsesParser()
    else:
        chat_messages = [{"role": "system", "content": system}] if system else []
        request = sdk.chat.completions.with_streaming_response.create(
            model=model,
            messages=[],
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"messages": [*chat_messages, *messages]},
        )
        parse = _ChatParser()
    request_id = ""
    try:
        async with request as response:
            request_id = response.headers.get("x-request-id", "")
            async for data in _sse_data(_sse_lines(response.iter_bytes())):
                for event in parse(data):
                    yield event
            finished = parse.end()
            yield Finished(
                finished.status,
                finished.finish_reason,
                finished.usage,
                finished.response_id,
                request_id,
            )
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


async def list_models() -> list[str]:
    """Model ids the upstream offers (for diagnostics)."""
    try:
        page = await client().models.list()
    except openai.APIError as exc:
        raise translate_error(exc) from None
    return sorted(model.id for model in page.data)


_SSE_EOL = re.compile(rb"\r\n|\r|\n")


async def _sse_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """Lines as SSE defines them: split on CR, LF or CRLF only. (httpx's `iter_lines`
    also splits on U+2028, U+2029 and U+0085, which JSON leaves unescaped, so model text
    holding one would cut an event in two.) These bytes never occur inside a multi-byte
    UTF-8 sequence, so every line decodes on its own."""
    pending = b""
    async for chunk in chunks:
        data = pending + chunk
        # A CR at the end may be the first half of a CRLF split across chunks: wait.
        held = b"\r" if data.endswith(b"\r") else b""
        *lines, pending = _SSE_EOL.split(data[: len(data) - len(held)])
        pending += held
        for line in lines:
            yield line.decode()
    if pending:
        yield pending.decode()


def _unreadable() -> ProviderError:
    return ProviderError("upstream", "The model sent an unreadable event.")


def _decode(payload: str) -> dict[str, Any]:
    try:
        data = json.loads(payload)
    except ValueError:
        raise _unreadable() from None
    if not isinstance(data, dict):
        raise _unreadable()
    return data


async def _sse_data(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    """Decoded `data:` payloads of an SSE stream (one JSON object per event)."""
    buffer: list[str] = []
    async for line in lines:
        if line.startswith("data:"):
            buffer.append(line[6:] if line.startswith("data: ") else line[5:])
        elif not line and buffer:
            payload = "\n".join(buffer)
            buffer.clear()
            if payload == "[DONE]":
                return
            yield _decode(payload)
    if buffer and buffer != ["[DONE]"]:
        yield _decode("\n".join(buffer))


class _ResponsesParser:
    """Responses API stream events → our events."""

    def __init__(self) -> None:
        self._finished: Finished | None = None

    def __call__(self, data: dict[str, Any]) -> list[ProviderEvent]:
        kind = data.get("type")
        if kind == "response.output_text.delta":
            return [TextDelta(data.get("delta") or "")]
        if kind in ("response.completed", "response.incomplete"):
            response = data.get("response") or {}
            details = response.get("incomplete_details") or {}
            complete = kind == "response.completed"
            self._finished = Finished(
                status="completed" if complete else "incomplete",
                finish_reason="stop" if complete else (details.get("reason") or "incomplete"),
                usage=_responses_usage(response.get("usage")),
                response_id=response.get("id") or "",
            )
        if kind == "response.failed":
            error = (data.get("response") or {}).get("error") or {}
            raise ProviderError("upstream", _safe(error.get("message") or "The model failed."))
        if kind == "error":
            error = data.get("error") if isinstance(data.get("error"), dict) else data
            raise ProviderError("upstream", _safe(error.get("message") or "The model failed."))
        return []

    def end(self) -> Finished:
        if self._finished is None:
            raise ProviderError("upstream", "The model's stream ended before it finished.")
        return self._finished


class _ChatParser:
    """Chat Completions chunks → our events. Usage may ride on the last content chunk or
    come alone on a final chunk with no choices, so `Finished` waits for the stream's end."""

    def __init__(self) -> None:
        self._finish_reason = ""
        self._usage: Usage | None = None
        self._response_id = ""

    def __call__(self, data: dict[str, Any]) -> list[ProviderEvent]:
        if "error" in data:
            error = data["error"] if isinstance(data["error"], dict) else {"message": data["error"]}
            raise ProviderError("upstream", _safe(error.get("message") or "The model failed."))
        self._response_id = self._response_id or data.get("id") or ""
        if data.get("usage"):
            self._usage = _chat_usage(data["usage"])
        events: list[ProviderEvent] = []
        for choice in data.get("choices") or ():
            text = (choice.get("delta") or {}).get("content")
            if text:
                events.append(TextDelta(text))
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        return events

    def end(self) -> Finished:
        if not self._finish_reason and self._usage is None:
            raise ProviderError("upstream", "The model's stream ended before it finished.")
        reason = self._finish_reason or "stop"
        return Finished(
            status="completed" if reason in ("stop", "tool_calls") else "incomplete",
            finish_reason=reason,
            usage=self._usage,
            response_id=self._response_id,
        )


def _responses_usage(raw: dict[str, Any] | None) -> Usage | None:
    if not raw:
        return None
    inp = int(raw.get("input_tokens") or 0)
    out = int(raw.get("output_tokens") or 0)
    return Usage(
        input_tokens=inp,
        output_tokens=out,
        total_tokens=int(raw.get("total_tokens") or inp + out),
        cached_tokens=int((raw.get("input_tokens_details") or {}).get("cached_tokens") or 0),
        reasoning_tokens=int((raw.get("output_tokens_details") or {}).get("reasoning_tokens") or 0),
    )


def _chat_usage(raw: dict[str, Any]) -> Usage:
    inp = int(raw.get("prompt_tokens") or 0)
    out = int(raw.get("completion_tokens") or 0)
    return Usage(
        input_tokens=inp,
        output_tokens=out,
        total_tokens=int(raw.get("total_tokens") or inp + out),
        cached_tokens=int((raw.get("prompt_tokens_details") or {}).get("cached_tokens") or 0),
        reasoning_tokens=int(
            (raw.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
        ),
    )


def estimate_usage(*, prompt: str, reply: str) -> Usage:
    """A rough count (4 characters a token) when the upstream sent none; flagged as such."""
    inp, out = estimate_tokens(prompt), estimate_tokens(reply)
    return Usage(input_tokens=inp, output_tokens=out, total_tokens=inp + out, estimated=True)


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def translate_error(exc: openai.APIError) -> ProviderError:
    """SDK exception → what our client is told. Auth failures say nothing about the key."""
    request_id = ""
    response = getattr(exc, "response", None)
    if response is not None:
        request_id = response.headers.get("x-request-id", "")
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return ProviderError(
            "auth",
            "The model provider rejected our credentials; an administrator must fix the API key.",
            request_id=request_id,
        )
    if isinstance(exc, openai.RateLimitError):
        retry_after = response.headers.get("retry-after") if response is not None else None
        return ProviderError(
            "rate_limit",
            "The model provider is rate limiting us; try again shortly.",
            retry_after=retry_after,
            request_id=request_id,
        )
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError("timeout", "The model did not answer in time.")
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError("connection", "Could not reach the model provider.")
    status = getattr(exc, "status_code", 500)
    if 400 <= status < 500:
        return ProviderError("bad_request", _safe(_upstream_message(exc)), request_id=request_id)
    return ProviderError(
        "upstream", f"The model provider failed (HTTP {status}).", request_id=request_id
    )


def _upstream_message(exc: openai.APIError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", body) if isinstance(body.get("error", body), dict) else body
    return str(error.get("message") or exc.message or "The model provider refused the request.")


_KEYLIKE = re.compile(r"\b(sk|rk|pk|key)[-_][A-Za-z0-9_\-]{6,}")


def _safe(message: str) -> str:
    """Upstream text with anything key-shaped (and our own keys) blanked out."""
    for secret in (settings.OPENAI_API_KEY, settings.AZURE_OPENAI_API_KEY):
        if secret:
            message = message.replace(secret, "[redacted]")
    return _KEYLIKE.sub("[redacted]", message)[:500]
