"""A fake OpenAI-compatible upstream on raw asyncio: both streamed APIs, cheap to run.

    python -m bench.fake_upstream --port 8911 --ttft-ms 50 --delay-ms 10 --tokens 100

Serves `POST /v1/chat/completions` (streamed with `include_usage`, or a JSON completion)
and `POST /v1/responses` (streamed), over HTTP/1.1 keep-alive with chunked bodies.
`POST /_config` changes the timing (JSON body with any of `ttft_ms`, `delay_ms`,
`tokens`, `error_rate`); `GET /_stats` counts the model calls answered so far. It is a
hand-written server, not an ASGI app, so that it spends as little as possible of the
CPU the benchmark measures the servers with.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
from dataclasses import asdict, dataclass
from typing import Any

IDLE_TIMEOUT_SECONDS = 30.0  # keep-alive clients must expire idle connections before this


@dataclass
class Config:
    ttft_ms: float = 50.0
    delay_ms: float = 10.0
    tokens: int = 100
    error_rate: float = 0.0


@dataclass
class Stats:
    calls: int = 0
    chat: int = 0
    responses: int = 0
    errors: int = 0
    open_streams: int = 0


class FakeUpstream:
    def __init__(self, config: Config | None = None) -> None:
        self.config = config or Config()
        self.stats = Stats()

    async def serve(self, host: str, port: int) -> asyncio.Server:
        return await asyncio.start_server(self.connection, host, port, backlog=4096)

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await asyncio.wait_for(_read_request(reader), IDLE_TIMEOUT_SECONDS)
                if request is None:
                    break
                method, path, body = request
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
        if path == "/_config" and method == "POST":
            self.config = Config(**{**asdict(self.config), **body})
            return _send_json(writer, 200, asdict(self.config))
        if path == "/_reset" and method == "POST":
            self.stats = Stats()
            return _send_json(writer, 200, asdict(self.stats))
        api = {"/v1/chat/completions": "chat", "/v1/responses": "responses"}.get(path)
        if api is None or method != "POST":
            return _send_json(writer, 404, {"error": {"message": f"no route {path}"}})
        self.stats.calls += 1
        setattr(self.stats, api, getattr(self.stats, api) + 1)
        config = self.config
        if config.error_rate and random.random() < config.error_rate:
            self.stats.errors += 1
            return _send_json(writer, 500, {"error": {"message": "fake upstream failure"}})
        model = str(body.get("model") or "fake-model")
        if api == "chat" and not body.get("stream"):
            await asyncio.sleep((config.ttft_ms + config.delay_ms * config.tokens) / 1000)
            return _send_json(writer, 200, _chat_completion(model, config.tokens))
        frames = _chat_frames(model, config) if api == "chat" else _responses_frames(model, config)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\nx-request-id: req_fake\r\n\r\n"
        )
        self.stats.open_streams += 1
        try:
            await asyncio.sleep(config.ttft_ms / 1000)
            for i, frame in enumerate(frames):
                if i and config.delay_ms and frame.kind == "token":
                    await asyncio.sleep(config.delay_ms / 1000)
                writer.write(frame.chunk)
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        finally:
            self.stats.open_streams -= 1


@dataclass(frozen=True, slots=True)
class Frame:
    kind: str  # "token" frames are paced by delay_ms; the rest go out at once
    chunk: bytes


def _frame(kind: str, payload: Any) -> Frame:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    event = f"data: {data}\n\n".encode()
    return Frame(kind, b"%x\r\n%s\r\n" % (len(event), event))


def _token(i: int) -> str:
    return f" word{i}"


def _usage(tokens: int) -> tuple[int, int]:
    return 12, tokens


def _chat_frames(model: str, config: Config) -> list[Frame]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    prompt, completion = _usage(config.tokens)
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    frames = [_frame("head", chunk({"role": "assistant", "content": ""}))]
    frames += [_frame("token", chunk({"content": _token(i)})) for i in range(config.tokens)]
    frames.append(_frame("tail", chunk({}, "stop")))
    frames.append(
        _frame(
            "tail",
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [],
                "usage": usage,
            },
        )
    )
    frames.append(_frame("tail", "[DONE]"))
    return frames


def _responses_frames(model: str, config: Config) -> list[Frame]:
    prompt, completion = _usage(config.tokens)
    response = {"id": "resp_fake", "object": "response", "model": model, "status": "in_progress"}
    frames = [_frame("head", {"type": "response.created", "response": response})]
    frames += [
        _frame(
            "token",
            {
                "type": "response.output_text.delta",
                "item_id": "msg_fake",
                "output_index": 0,
                "content_index": 0,
                "delta": _token(i),
            },
        )
        for i in range(config.tokens)
    ]
    done = {
        **response,
        "status": "completed",
        "usage": {
            "input_tokens": prompt,
            "output_tokens": completion,
            "total_tokens": prompt + completion,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    }
    frames.append(_frame("tail", {"type": "response.completed", "response": done}))
    return frames


def _chat_completion(model: str, tokens: int) -> dict[str, Any]:
    prompt, completion = _usage(tokens)
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(map(_token, range(tokens)))},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, Any]] | None:
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
    return method, target.split("?", 1)[0], body if isinstance(body, dict) else {}


def _send_json(writer: asyncio.StreamWriter, status: int, data: Any) -> None:
    body = json.dumps(data).encode()
    reason = {200: "OK", 404: "Not Found", 500: "Internal Server Error"}.get(status, "OK")
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
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
    args = parser.parse_args()
    config = Config(args.ttft_ms, args.delay_ms, args.tokens, args.error_rate)

    async def run() -> None:
        server = await FakeUpstream(config).serve(args.host, args.port)
        async with server:
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        _event_loop_runner()(run())


if __name__ == "__main__":
    main()
