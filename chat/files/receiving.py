"""An upload's body as it arrives, before Django reads it (`chatsite.asgi` composes this
around `POST /api/files`).

Django's ASGI handler reads a whole request body before any view or middleware runs, so
the view could only refuse a file that is too large once all of it had arrived; and its
multipart parser reads a body of declared length only. Here, at the protocol level:
- a declared `Content-Length` plainly over the limit is answered 413 at once, unread;
- a body sent without one (`Transfer-Encoding: chunked`) is counted as it arrives and
  answered 413 as soon as it passes the limit; one within it is spooled (to disk beyond
  FILE_UPLOAD_MAX_MEMORY_SIZE, as Django spools) and handed to Django with its length,
  so the view reads it like any other upload.
"""

from __future__ import annotations

import tempfile
from typing import IO

from asgiref.typing import (
    ASGI3Application,
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    HTTPScope,
)
from django.conf import settings

from chat.errors import error_response
from chat.payloads import MULTIPART_OVERHEAD, upload_too_large

CHUNK = 64 * 1024


def body_limit() -> int:
    """The largest upload body: the largest file, and room for the multipart framing."""
    limit: int = settings.CHAT_FILES_MAX_BYTES + MULTIPART_OVERHEAD
    return limit


async def upload_receive(
    app: ASGI3Application, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable
) -> None:
    """Run `app` for an upload request, its body refused early or given a length."""
    headers = dict(scope["headers"])
    declared = headers.get(b"content-length")
    if declared is not None:
        if declared.isdigit() and int(declared) > body_limit():
            await _too_large(send)
            return
        await app(scope, receive, send)
        return
    with tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE) as spool:
        size = await _spooled(receive, spool)
        if size is None:  # the client left
            return
        if size > body_limit():
            await _too_large(send)
            return
        spool.seek(0)
        kept = [(k, v) for k, v in scope["headers"] if k.lower() != b"transfer-encoding"]
        sized: HTTPScope = {**scope, "headers": [*kept, (b"content-length", b"%d" % size)]}
        await app(sized, _replay(spool, receive), send)


async def _spooled(receive: ASGIReceiveCallable, spool: IO[bytes]) -> int | None:
    """Read the body into `spool` until it ends or passes the limit; its size so far, or
    None if the client disconnected."""
    size = 0
    limit = body_limit()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        if message["type"] != "http.request":
            continue
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return size  # the rest is never read
        spool.write(chunk)
        if not message.get("more_body", False):
            return size


def _replay(spool: IO[bytes], receive: ASGIReceiveCallable) -> ASGIReceiveCallable:
    """The spooled body as ASGI messages, then the connection's own (a disconnect)."""
    done = False

    async def replaying() -> ASGIReceiveEvent:
        nonlocal done
        if done:
            return await receive()
        chunk = spool.read(CHUNK)
        more = bool(chunk) and spool.read(1) != b""
        if more:
            spool.seek(-1, 1)
        else:
            done = True
        return {"type": "http.request", "body": chunk, "more_body": more}

    return replaying


async def _too_large(send: ASGISendCallable) -> None:
    error = upload_too_large(settings.CHAT_FILES_MAX_BYTES)
    response = error_response(error.type, error.message)
    body = response.content
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
                (b"connection", b"close"),
            ],
            "trailers": False,
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
