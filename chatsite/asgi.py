"""ASGI entry point: `uvicorn chatsite.asgi:application` (streams need ASGI, not WSGI).

A composition: Django's stock handler with its middleware run inline (`chat.seams`);
chat requests' ORM calls on one shared thread, pages on Django's thread per request; /api/
errors Django answers before any middleware rewritten as the API's JSON; upload bodies
measured as they arrive (`chat.files.receiving`); and the worker's
lifespan (`chat.ops.lifespan`) with the turn engine's start-up and shutdown.
"""

import functools
import gc
import os
import sys

import django
from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, Scope
from django.conf import settings

from chat.errors import API_PREFIX, json_errors
from chat.ops import metrics
from chat.ops.lifespan import lifespan
from chat.ops.workers import workers_refuse_unshared

GC_YOUNG_THRESHOLD = 7000

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
# What `django.core.asgi.get_asgi_application` does first: the modules below import
# models and Django's middleware, which need the app registry.
django.setup(set_prefix=False)

from chat import seams  # noqa: E402
from chat.files.receiving import upload_receive  # noqa: E402
from chat.llm import client as _sdk  # noqa: E402, F401  (the SDK now, not on the first turn)
from chat.turns import (  # noqa: E402
    lapsed_sweep_seconds,
    turns_abandon_unopened,
    turns_recover_at_startup,
    turns_recover_lapsed,
    turns_shutdown,
    turns_sweep_stale,
)

seams.check_connections_at_request_end_only()
django_application = seams.asgi_handler()
# The event loop gets the GIL back from a thread rendering a page (or running a sync tool)
# after at most this long each time it wakes: CPython's default of 5 ms, paid at every
# wake-up of a turn's first token, is what staff pages cost the streams' latency.
sys.setswitchinterval(settings.CHAT_SWITCH_INTERVAL_MS / 1000)
# What start-up made (modules, classes, settings, URL patterns: most of a worker's objects)
# lives as long as the worker: out of the cyclic garbage collector's sight (gc.freeze), so
# a full collection walks only what requests made since. It holds the GIL throughout, on
# the event loop or on a page's thread, pausing every stream of the worker meanwhile.
gc.collect()
gc.freeze()
# Young collections every 7,000 new objects instead of Python's 700. A staff page rendering
# allocates tens of thousands that live until it is sent: at 700 each of the many young
# collections during a page found them in use and promoted them, so they were walked again
# by the older generations' collections, the long pauses. Measured beside two staff
# reloading reports: the worker's time in the collector about halved, and no full
# collection ran (README, Performance). A young collection walks at most a few thousand
# objects more; what they take in memory is that many objects, briefly.
gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])

# Uploads: their bodies are measured as they arrive, before Django reads them.
UPLOAD_PATH = API_PREFIX + "files"


async def _startup() -> None:
    workers_refuse_unshared()
    await turns_recover_at_startup()
    await turns_sweep_stale(when="at start-up")


async def application(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    if scope["type"] == "lifespan":
        # Every worker, before it accepts requests and then now and then, finishes the turns
        # a dead worker left (its own previous life's at once, others' when their lease
        # lapses; idempotent, so N workers doing it is harmless); at shutdown, its running
        # turns finish or are recorded as interrupted.
        await lifespan(
            receive,
            send,
            startup=_startup,
            periodic=[
                (turns_recover_lapsed, lapsed_sweep_seconds()),
                (metrics.worker_sample, metrics.SAMPLE_SECONDS),
                # Deferred turns a dead process took and nobody opened (its 201 may
                # never have been sent): not left for the stale sweep.
                (turns_abandon_unopened, lapsed_sweep_seconds()),
                (
                    functools.partial(turns_sweep_stale, when="in the periodic sweep"),
                    settings.CHAT_STALE_SWEEP_SECONDS,
                ),
            ],
            shutdown=turns_shutdown,
        )
        return
    if scope["type"] == "http" and scope["path"].startswith(seams.CHAT_PATHS):
        if scope["path"].startswith(API_PREFIX):
            send = json_errors(send)
        with seams.on_chat_thread():
            if scope["path"] == UPLOAD_PATH and scope["method"] == "POST":
                await upload_receive(django_application, scope, receive, send)
            else:
                await django_application(scope, receive, send)
        return
    # Admin, sign-in and other pages: Django's own thread per request, so a slow report
    # never holds up a chat turn's database work.
    await django_application(scope, receive, send)
