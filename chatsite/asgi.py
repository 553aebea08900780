"""ASGI entry point: `uvicorn chatsite.asgi:application` (streams need ASGI, not WSGI).

Django answers HTTP only; the ASGI lifespan is handled here. At start-up (run once by
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
from django.core.handlers.asgi import ASGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")


class ChatASGIHandler(ASGIHandler):
    """Django's ASGI handler, with Django's thread-hopping middleware swapped for the
    inline versions in `chatsite.middleware` (the settings keep Django's names)."""

    def load_middleware(self, is_async: bool = False) -> None:
        from chatsite.middleware import ASGI_INLINE

        listed = settings.MIDDLEWARE
        # Once, at start-up, before any request: no other thread reads the setting yet.
        settings.MIDDLEWARE = [ASGI_INLINE.get(path, path) for path in listed]
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = listed

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        # Django wraps each request in a `ThreadSensitiveContext`: a new executor thread
        # per request (and so a new database connection per request) for its ORM calls.
        # Without it they share one thread per process. The trade-off: one slow query
        # delays every request's database work in this worker, instead of only its own;
        # each ORM call here is short and SQLite writes are queued one at a time anyway.
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        await self.handle(scope, receive, send)


def _check_connections_at_request_end_only() -> None:
    """Django checks the database connections at every request's start and end (drop a
    broken one, close one past CONN_MAX_AGE). Under ASGI the start check is a thread hop
    of its own, queued behind every other request's database work on the worker's one
    database thread (about 0.2 ms of CPU and, under load, most of the wait before the
    view runs). Here all requests share that thread's connection, so the check after
    each request (kept: it runs in the hop Django makes to close the response) already
    covers the next one. Other handlers (WSGI, Django's own ASGI) keep both checks."""
    from django.core.handlers.wsgi import WSGIHandler
    from django.core.signals import request_started
    from django.db import close_old_connections, reset_queries

    for receiver in (close_old_connections, reset_queries):
        request_started.disconnect(receiver)
        for handler in (WSGIHandler, ASGIHandler):
            request_started.connect(receiver, sender=handler)


def _django_application() -> ChatASGIHandler:
    # What `django.core.asgi.get_asgi_application` does, with our handler.
    django.setup(set_prefix=False)
    _check_connections_at_request_end_only()
    return ChatASGIHandler()


django_application = _django_application()
logger = logging.getLogger("chat")
SHUTDOWN_DRAIN_SECONDS = 10.0


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    await django_application(scope, receive, send)


async def expire_stale(when: str) -> None:
    from chat.services import turns_expire_stale

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
    from chat import batching, metrics
    from chat.services import turns_drain

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
            # Starts and finishes still queued for a group write (chat.batching).
            if not await batching.settled(timeout=SHUTDOWN_DRAIN_SECONDS):
                logger.warning("database writes still queued at shutdown")
            metrics.worker_exited()
            await send({"type": "lifespan.shutdown.complete"})
            return
