"""Drive the ASGI application directly, so a test can disconnect mid-stream."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from chatsite.asgi import application


@dataclass
class AsgiResult:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    cookies: dict[str, str] = field(default_factory=dict)
    set_cookies: dict[str, str] = field(default_factory=dict)  # name: whole Set-Cookie header

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def json(self) -> Any:
        return json.loads(self.body)


async def asgi_request(
    method: str,
    path: str,
    *,
    body: bytes | dict[str, Any] = b"",
    headers: dict[str, str] | None = None,
    cookies: dict[str, str] | None = None,
    disconnect_after_chunks: int | None = None,
    client: str = "127.0.0.1",
    raw_path: bytes | None = None,
    raw_query: bytes | None = None,
    app: Any = None,
    body_chunk: int | None = None,
) -> AsgiResult:
    """Send one request; with `disconnect_after_chunks`, the client goes away after that
    many body chunks (as a browser tab closing), by answering `receive` with a disconnect.
    `raw_path` is the path as sent on the wire, when `path` is its decoded form (as uvicorn
    gives both); `raw_query` the query string's bytes as sent, valid UTF-8 or not; `app`
    another ASGI application than ours (Django's stock one); `body_chunk`: the body sent in
    messages of that many bytes, as a server receives a large upload."""
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        headers = {"content-type": "application/json", **(headers or {})}
    path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode() if raw_path is None else raw_path,
        "query_string": query.encode() if raw_query is None else raw_query,
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        + [(b"host", b"127.0.0.1")]
        + (
            [(b"cookie", "; ".join(f"{k}={v}" for k, v in cookies.items()).encode())]
            if cookies
            else []
        ),
        "client": (client, 50000),
        "server": ("127.0.0.1", 8000),
    }
    result = AsgiResult()
    disconnected = asyncio.Event()
    size = body_chunk or max(1, len(body))
    offset = 0
    body_sent = False

    async def receive() -> dict[str, Any]:
        # Sliced as it is asked for: a large body is not copied by the client.
        nonlocal offset, body_sent
        if not body_sent:
            piece = body[offset : offset + size]
            offset += size
            body_sent = offset >= len(body)
            return {"type": "http.request", "body": piece, "more_body": not body_sent}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            result.status = message["status"]
            result.headers = {k.decode().lower(): v.decode() for k, v in message["headers"]}
            for key, value in message["headers"]:
                if key.lower() == b"set-cookie":
                    name, _, rest = value.decode().partition("=")
                    result.cookies[name] = rest.split(";", 1)[0]
                    result.set_cookies[name] = value.decode()
        elif message["type"] == "http.response.body":
            if message.get("body"):
                result.chunks.append(message["body"])
            if (
                disconnect_after_chunks is not None
                and len(result.chunks) >= disconnect_after_chunks
            ):
                disconnected.set()
            # As uvicorn: once the response is complete, `receive` answers a disconnect.
            if not message.get("more_body", False):
                disconnected.set()

    await (app or application)(scope, receive, send)
    return result


class AsgiClient:
    """`asgi_request` with a cookie jar, like a browser or `curl -c/-b`."""

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}

    async def request(self, method: str, path: str, **kwargs: Any) -> AsgiResult:
        result = await asgi_request(method, path, cookies=self.cookies, **kwargs)
        for name, value in result.cookies.items():
            if value in ("", '""'):  # deleted
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return result

    async def post(self, path: str, body: Any = b"", **kwargs: Any) -> AsgiResult:
        return await self.request("POST", path, body=body, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> AsgiResult:
        return await self.request("GET", path, **kwargs)

    @classmethod
    async def logged_in(cls, username: str) -> AsgiClient:
        """A client with the session cookie of a new user called `username`."""
        from django.contrib.auth import get_user_model
        from django.test import Client

        user = await get_user_model().objects.acreate(username=username)
        session = Client()
        await session.aforce_login(user)
        client = cls()
        client.cookies["sessionid"] = session.cookies["sessionid"].value
        return client


def parse_sse(body: bytes) -> list[tuple[str, Any]]:
    """(event, data) pairs from an SSE body, as a browser's EventSource would see them."""
    events = []
    for frame in body.decode().replace("\r\n", "\n").split("\n\n"):
        name, data = "message", []
        for line in frame.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        if data:
            events.append((name, json.loads("\n".join(data))))
    return events


def parse_ndjson(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in body.decode().split("\n") if line]
