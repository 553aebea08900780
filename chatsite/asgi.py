"""ASGI entry point: `uvicorn chatsite.asgi:application` (streams need ASGI, not WSGI).

Django's stock ASGI handler answers HTTP (with its own middleware run inline,
`chatsite.seams`); this wrapper picks the thread its ORM calls run on and
handles the ASGI lifespan. At start-up (run once by
every uvicorn worker, before it accepts requests) and every CHAT_STALE_SWEEP_SECONDS
after, turns a dead worker left `pending`/`streaming` are marked `incomplete`
(idempotent, so N workers doing it is harmless). At
shutdown, streams cancelled by uvicorn's graceful-shutdown timeout get to record
themselves before the event loop closes.
"""

import asyncio
import logging
import os
from datetime import timedelta
from typing import Any

import django
from asgiref.sync import sync_to_async
from django.conf import settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

# Requests served on the chat's database thread: the JSON API and the probes and scrapes.
CHAT_PATHS = ("/api/", "/healthz", "/readyz", "/metrics")

# What `django.core.asgi.get_asgi_application` does, with our middleware swapped in.
django.setup(set_prefix=False)
from chatsite import seams  # noqa: E402 (imports Django's middleware: apps must be ready)

seams.check_connections_at_request_end_only()
django_application = seams.asgi_handler()
logger = logging.getLogger("chat")
SHUTDOWN_DRAIN_SECONDS = 10.0


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if scope["type"] == "http" and scope["path"].startswith(CHAT_PATHS):
        if scope["path"].startswith("/api/"):
            send = json_errors(send)
        with seams.on_chat_thread():
            await django_application(scope, receive, send)
        return
    # Admin, sign-in and other pages: Django's own thread per request, so a slow report
    # never holds up a chat turn's database work.
    await django_application(scope, receive, send)


def json_errors(send: Any) -> Any:
    """`send`, with an error Django answered itself before any middleware ran (its request
    building: 400 for a query string that is not UTF-8, 413) rewritten as the API's JSON
    error. Everything else, JSON errors included, passes through untouched."""
    held: dict[str, Any] | None = None

    async def sending(message: dict[str, Any]) -> None:
        nonlocal held
        if message["type"] == "http.response.start":
            headers = {k.lower(): v for k, v in message.get("headers", [])}
            is_json = headers.get(b"content-type", b"").startswith(b"application/json")
            if message["status"] >= 400 and not is_json:
                held = message  # its body is replaced, so its start waits for it
                return
        elif held is not None and message["type"] == "http.response.body":
            if message.get("more_body"):
                return  # the rest of Django's page: dropped
            start, held = held, None
            await _send_json_error(send, start)
            return
        await send(message)

    return sending


async def _send_json_error(send: Any, start: dict[str, Any]) -> None:
    from chat.errors import status_error

    body = status_error(start["status"]).content
    kept = [
        (k, v)
        for k, v in start.get("headers", [])
        if k.lower() not in (b"content-type", b"content-length")
    ]
    headers = [
        *kept,
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
    ]
    await send({**start, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def expire_stale(when: str) -> None:
    from chat.turns.control import turns_expire_stale

    try:
        older_than = timedelta(seconds=settings.CHAT_STALE_TURN_SECONDS)
        count = await sync_to_async(turns_expire_stale)(older_than=older_than)
        if count:
            logger.warning("marked %s stale replies incomplete %s", count, when)
    except Exception:  # a broken database must not stop the server (or the sweeps)
        logger.exception("could not expire stale replies %s", when)


async def sweep_stale_forever() -> None:
    """A worker that dies mid-stream leaves its turns `streaming` while the others run
    on: sweep for them now and then, not only when a worker starts."""
    while True:
        await asyncio.sleep(settings.CHAT_STALE_SWEEP_SECONDS)
        await expire_stale("in the periodic sweep")


async def lifespan(receive: Any, send: Any) -> None:
    from chat.ops import metrics
    from chat.turns import batching
    from chat.turns.control import turns_drain

    sweeper: asyncio.Task[None] | None = None
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await expire_stale("at start-up")
            if settings.CHAT_STALE_SWEEP_SECONDS > 0:
                sweeper = asyncio.create_task(sweep_stale_forever())
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if sweeper is not None:
                sweeper.cancel()
            # Streams uvicorn gave up waiting for were just cancelled: let them record
            # themselves (`cancelled`, partial text) before the event loop goes away.
            left = await turns_drain(timeout=SHUTDOWN_DRAIN_SECONDS)
            if left:
                logger.warning("%s replies still unfinished at shutdown", left)
            # Starts and finishes still queued for a group write (chat.turns.batching).
            if not await batching.settled(timeout=SHUTDOWN_DRAIN_SECONDS):
                logger.warning("database writes still queued at shutdown")
            metrics.worker_exited()
            await send({"type": "lifespan.shutdown.complete"})
            return
