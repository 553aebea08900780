"""A fake OpenAI-compatible upstream on raw asyncio: both streamed APIs, cheap to run.

    python -m bench.fake_upstream --port 8911 --ttft-ms 50 --delay-ms 10 --tokens 100

Serves `POST /v1/chat/completions` and `POST /v1/responses`, streamed or not, over
HTTP/1.1 keep-alive with chunked bodies; `chat.llm.wire` writes what they answer.
`POST /_config` changes the timing (JSON body with any of `ttft_ms`, `delay_ms`,
`tokens`, `error_rate`, `tool_rounds`, `fault_rate`, `faults`, `hang_seconds`); `GET
/_stats` counts the model calls answered so far; `GET /_last` gives the last model request
as it arrived (`head`, and `body` in base64), for tests of what goes on the wire. With
`fault_rate`, that share of the streamed calls fails one of the ways in `faults`
(`FAULTS`, chosen at random): HTTP 500 or 429 before the stream, the connection cut
mid-stream, or a hang of `hang_seconds` before the first byte or mid-reply (past the
server's idle timeout).

With `tool_rounds`, a Chat Completions request that offers tools and carries fewer tool
results than that is answered with a call of its first tool (`TOOL_ARGUMENTS`,
`TOOL_CALL_TOKENS` tokens), the way a model asks for one, instead of text. It is a
hand-written server, not an ASGI app, so that it spends as little as possible of the
CPU the benchmark measures the servers with.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import random
from dataclasses import asdict, dataclass, field
from typing import Any

from chat.llm import wire

IDLE_TIMEOUT_SECONDS = 30.0  # keep-alive clients must expire idle connections before this
PROMPT_TOKENS = 12
CHAT_ID = "chatcmpl-fake"
RESPONSE_ID = "resp_fake"
TOOL_ARGUMENTS = ['{"timezone"', ': "UTC"}']
TOOL_CALL_TOKENS = 8
FAULTS = ("500", "429", "cut", "hang")


@dataclass
class Config:
    ttft_ms: float = 50.0
    delay_ms: float = 10.0
    tokens: int = 100
    error_rate: float = 0.0
    tool_rounds: int = 0
    fault_rate: float = 0.0
    faults: tuple[str, ...] = FAULTS
    hang_seconds: float = 30.0


@dataclass
class Stats:
    calls: int = 0
    chat: int = 0
    responses: int = 0
    errors: int = 0
    open_streams: int = 0
    faults: dict[str, int] = field(default_factory=dict)


class FakeUpstreamServer:
    def __init__(self, config: Config | None = None) -> None:
        self.config = config or Config()
        self.stats = Stats()
        self.last: tuple[bytes, bytes] = (b"", b"")  # the last model request: head, body

    async def serve(self, host: str, port: int) -> asyncio.Server:
        return await asyncio.start_server(self.connection, host, port, backlog=4096)

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await asyncio.wait_for(_read_request(reader), IDLE_TIMEOUT_SECONDS)
                if request is None:
                    break
                method, path, body, raw = request
                if path.startswith("/v1/"):
                    self.last = raw
                await self.answer(writer, method, path, body)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def answer(
        self, writer: asyncio.StreamWriter, method: str, path: str, body: dict[str, Any]
    ) -> None:
        if path == "/_stats":
            return _send_json(writer, 200, asdict(self.stats))
        if path == "/_last":
            request_head, request_body = self.last
            last = {
                "head": request_head.decode("latin-1"),
                "body": base64.b64encode(request_body).decode(),
            }
            return _send_json(writer, 200, last)
        if path == "/_config" and method == "POST":
            self.config = Config(**{**asdict(self.config), **body})
            return _send_json(writer, 200, asdict(self.config))
        if path == "/_reset" and method == "POST":
            self.stats = Stats()
            return _send_json(writer, 200, asdict(self.stats))
        api = {"/v1/chat/completions": "chat", "/v1/responses": "responses"}.get(path)
        if api is None or method != "POST":
            error = wire.api_error(f"no route {path}", error_type="invalid_request_error")
            return _send_json(writer, 404, error)
        self.stats.calls += 1
        setattr(self.stats, api, getattr(self.stats, api) + 1)
        config = self.config
        if config.error_rate and random.random() < config.error_rate:
            self.stats.errors += 1
            return _send_json(writer, 500, wire.api_error("fake upstream failure"))
        fault = ""
        if body.get("stream") and config.fault_rate and random.random() < config.fault_rate:
            fault = random.choice(config.faults)
            self.stats.faults[fault] = self.stats.faults.get(fault, 0) + 1
        if fault == "500":
            return _send_json(writer, 500, wire.api_error("fake upstream failure"))
        if fault == "429":
            error = wire.api_error("fake rate limit", error_type="rate_limit_error")
            return _send_json(writer, 429, error, retry_after=1)
        model = str(body.get("model") or "fake-model")
        if not body.get("stream"):
            await asyncio.sleep((config.ttft_ms + config.delay_ms * config.tokens) / 1000)
            whole = _chat_body(model, config) if api == "chat" else _responses_body(model, config)
            return _send_json(writer, 200, whole)
        # Written whole before the first byte goes out, so pacing costs no CPU per token.
        if api == "chat":
            stream = _chat_stream(model, config, body)
        else:
            stream = _responses_stream(model, config)
        head, tokens, tail = _chunks(stream.head), _chunks(stream.deltas), _chunks(stream.tail)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\nx-request-id: req_fake\r\n\r\n"
        )
        self.stats.open_streams += 1
        # Where a cut or a hang strikes: before the first byte (0) or after some tokens.
        strike = random.randrange(len(tokens) + 1) if fault == "hang" else -1
        if fault == "cut":
            strike = random.randint(1, max(1, len(tokens)))
        try:
            await asyncio.sleep(config.ttft_ms / 1000)
            if strike == 0:
                await asyncio.sleep(config.hang_seconds)
            writer.writelines(head)
            for index, chunk in enumerate(tokens, 1):
                if config.delay_ms:
                    await asyncio.sleep(config.delay_ms / 1000)
                writer.write(chunk)
                await writer.drain()
                if index == strike and fault == "cut":
                    writer.transport.abort()  # a reset, as a dying upstream leaves it
                    return
                if index == strike:
                    await asyncio.sleep(config.hang_seconds)
            writer.writelines(tail)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        finally:
            self.stats.open_streams -= 1


def _chunks(payloads: list[wire.Payload]) -> list[bytes]:
    """Each payload as one SSE event in one HTTP/1.1 chunk."""
    events = map(wire.sse_frame, payloads)
    return [b"%x\r\n%s\r\n" % (len(event), event) for event in events]


def _parts(config: Config) -> list[str]:
    return [f" word{i}" for i in range(config.tokens)]


def _chat_usage(config: Config) -> wire.JsonObject:
    return wire.chat_usage(prompt_tokens=PROMPT_TOKENS, completion_tokens=config.tokens)


def _responses_usage(config: Config) -> wire.JsonObject:
    return wire.responses_usage(input_tokens=PROMPT_TOKENS, output_tokens=config.tokens)


def _chat_stream(model: str, config: Config, body: dict[str, Any]) -> wire.Stream:
    # Streamed, OpenAI sends usage only when the request asks for it.
    asked = bool((body.get("stream_options") or {}).get("include_usage"))
    tools = body.get("tools") or []
    results = sum(1 for m in body.get("messages") or () if m.get("role") == "tool")
    if tools and results < config.tool_rounds:
        name = tools[0]["function"]["name"]
        call = wire.WireToolCall(f"call_fake_{results}", name, TOOL_ARGUMENTS)
        spent = wire.chat_usage(prompt_tokens=PROMPT_TOKENS, completion_tokens=TOOL_CALL_TOKENS)
        return wire.chat_stream(
            [],
            completion_id=CHAT_ID,
            model=model,
            usage=spent if asked else None,
            tool_calls=[call],
        )
    usage = _chat_usage(config) if asked else None
    return wire.chat_stream(_parts(config), completion_id=CHAT_ID, model=model, usage=usage)


def _chat_body(model: str, config: Config) -> wire.JsonObject:
    text = "".join(_parts(config))
    return wire.chat_body(text, completion_id=CHAT_ID, model=model, usage=_chat_usage(config))


def _responses_stream(model: str, config: Config) -> wire.Stream:
    usage = _responses_usage(config)
    return wire.responses_stream(_parts(config), response_id=RESPONSE_ID, model=model, usage=usage)


def _responses_body(model: str, config: Config) -> wire.JsonObject:
    text = "".join(_parts(config))
    usage = _responses_usage(config)
    return wire.responses_body(text, response_id=RESPONSE_ID, model=model, usage=usage)


async def _read_request(
    reader: asyncio.StreamReader,
) -> tuple[str, str, dict[str, Any], tuple[bytes, bytes]] | None:
    """The method, path and JSON body of the next request, and the request as it came."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    raw = await reader.readexactly(length) if length else b""
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        body = {}
    parsed = body if isinstance(body, dict) else {}
    return method, target.split("?", 1)[0], parsed, (head, raw)


def _send_json(
    writer: asyncio.StreamWriter, status: int, data: Any, retry_after: int | None = None
) -> None:
    body = json.dumps(data).encode()
    reason = {
        200: "OK",
        404: "Not Found",
        429: "Too Many Requests",
        500: "Internal Server Error",
    }.get(status, "OK")
    extra = f"retry-after: {retry_after}\r\n" if retry_after is not None else ""
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n{extra}"
        f"content-length: {len(body)}\r\n\r\n".encode()
        + body
    )


def _event_loop_runner() -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8911)
    parser.add_argument("--ttft-ms", type=float, default=50.0)
    parser.add_argument("--delay-ms", type=float, default=10.0)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--fault-rate", type=float, default=0.0, help="share of streams failed")
    parser.add_argument("--faults", default=",".join(FAULTS), help="which faults, comma-separated")
    parser.add_argument("--hang-seconds", type=float, default=30.0)
    args = parser.parse_args()
    config = Config(
        args.ttft_ms,
        args.delay_ms,
        args.tokens,
        args.error_rate,
        fault_rate=args.fault_rate,
        faults=tuple(args.faults.split(",")),
        hang_seconds=args.hang_seconds,
    )

    async def run() -> None:
        server = await FakeUpstreamServer(config).serve(args.host, args.port)
        async with server:
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        _event_loop_runner()(run())


if __name__ == "__main__":
    main()
