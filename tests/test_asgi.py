"""chatsite/asgi.py: which thread a request's ORM calls run on (`chat.seams.on_chat_thread`),
and the connection checks.

Chat requests (the API, probes) share one database thread, so an open stream costs no
thread of its own; admin and other pages get Django's thread per request, so a slow
report never holds up a chat turn."""

from __future__ import annotations

import asyncio
import threading

import pytest
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections

from chat import seams
from chat.admin import dashboard
from chat.seams import on_chat_thread
from tests.asgi import AsgiClient, asgi_request


def sync_receivers(signal, sender) -> list:
    return signal._live_receivers(sender)[0]


def test_asgi_requests_check_connections_after_each_request_not_before():
    # Django's test client re-connects the check for every sender after its requests:
    # set the wiring up again as the worker does at start-up (it is idempotent).
    seams.check_connections_at_request_end_only()
    seams.check_connections_at_request_end_only()
    # No synchronous receiver left at request start: no thread hop before the view.
    assert sync_receivers(request_started, ASGIHandler) == []
    assert close_old_connections in sync_receivers(request_finished, ASGIHandler)
    # WSGI keeps Django's checks at both ends.
    assert close_old_connections in sync_receivers(request_started, WSGIHandler)
    assert close_old_connections in sync_receivers(request_finished, WSGIHandler)


async def thread_of_django_request(*, chat: bool) -> int:
    """The thread a thread-sensitive call lands on inside Django's own per-request
    context, as the handler gives each request."""

    async def request() -> int:
        async with ThreadSensitiveContext():  # what ASGIHandler.__call__ does
            return await sync_to_async(threading.get_ident)()

    if chat:
        with on_chat_thread():
            return await request()
    return await request()


@pytest.mark.asyncio
async def test_chat_requests_share_one_thread_and_pages_get_their_own():
    chat = {await thread_of_django_request(chat=True) for _ in range(5)}
    pages = [await thread_of_django_request(chat=False) for _ in range(3)]
    assert len(chat) == 1
    assert not chat & set(pages)


@pytest.mark.asyncio
async def test_a_task_a_chat_request_leaves_running_keeps_the_chat_thread():
    finished = asyncio.Event()
    seen: list[int] = []

    async def finish_later() -> None:
        await finished.wait()
        seen.append(await sync_to_async(threading.get_ident)())

    with on_chat_thread():
        async with ThreadSensitiveContext():
            chat_thread = await sync_to_async(threading.get_ident)()
            left_running = asyncio.create_task(finish_later())
    finished.set()  # after its request is over, as a turn finished after the client left
    await left_running
    assert seen == [chat_thread]


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_slow_usage_dashboard_does_not_hold_up_a_chat_turn(monkeypatch):
    """The dashboard's reports are held (on the admin request's thread) until the chat
    turn has been answered: were both on one database thread, the turn would wait."""
    release_report = threading.Event()
    report_started = threading.Event()
    summary = dashboard.usage_summary

    def slow_summary(**kwargs):
        report_started.set()
        release_report.wait(timeout=30)
        return summary(**kwargs)

    monkeypatch.setattr(dashboard, "usage_summary", slow_summary)
    admin = await AsgiClient.logged_in("boss")
    await admin_user("boss")
    page = asyncio.create_task(admin.get("/admin/chat/message/usage/"))
    await asyncio.to_thread(report_started.wait, 30)

    reply = await asgi_request("POST", "/api/chat", body={"message": "hi"})
    answered_while_report_held = not release_report.is_set()
    release_report.set()
    assert reply.status == 200 and reply.json()["status"] == "completed"
    assert answered_while_report_held
    assert (await page).status == 200


async def admin_user(username: str) -> None:
    from django.contrib.auth import get_user_model

    await (
        get_user_model().objects.filter(username=username).aupdate(is_staff=True, is_superuser=True)
    )


async def held_dashboards(
    monkeypatch, loads: int
) -> tuple[list[asyncio.Task], threading.Event, list[threading.Event]]:
    """`loads` staff dashboard loads at once, each held inside its report until released;
    returns the page tasks, the release and one event per report entered."""
    release = threading.Event()
    entered = [threading.Event() for _ in range(loads)]
    pages_seen: list[int] = []  # a page's thread, in the order the pages reached a report
    summary = dashboard.usage_summary

    def held_summary(**kwargs):
        # The dashboard reads more than one report: a page is its thread's first one.
        if threading.get_ident() not in pages_seen:
            pages_seen.append(threading.get_ident())
            entered[len(pages_seen) - 1].set()
        release.wait(timeout=30)
        return summary(**kwargs)

    monkeypatch.setattr(dashboard, "usage_summary", held_summary)
    admin = await AsgiClient.logged_in("boss")
    await admin_user("boss")
    pages = [asyncio.create_task(admin.get("/admin/chat/message/usage/")) for _ in range(loads)]
    return pages, release, entered


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_staff_pages_render_one_at_a_time_per_worker(monkeypatch, settings):
    settings.CHAT_ADMIN_PAGES_AT_ONCE = 1
    pages, release, entered = await held_dashboards(monkeypatch, 2)
    assert await asyncio.to_thread(entered[0].wait, 30)
    # The chat is answered meanwhile; the second page waits for the first to finish.
    reply = await asgi_request("POST", "/api/chat", body={"message": "hi"})
    second_waited = not entered[1].is_set()
    release.set()
    assert reply.status == 200 and reply.json()["status"] == "completed"
    assert second_waited
    assert [page.status for page in await asyncio.gather(*pages)] == [200, 200]
    assert entered[1].is_set()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_more_staff_pages_at_once_when_the_setting_allows(monkeypatch, settings):
    settings.CHAT_ADMIN_PAGES_AT_ONCE = 0  # no limit
    pages, release, entered = await held_dashboards(monkeypatch, 2)
    both_entered = [await asyncio.to_thread(event.wait, 30) for event in entered]
    release.set()
    assert both_entered == [True, True]
    assert [page.status for page in await asyncio.gather(*pages)] == [200, 200]


def test_serving_gives_the_event_loop_the_gil_back_sooner_than_python_s_default():
    import sys

    from django.conf import settings

    import chatsite.asgi  # noqa: F401  (what uvicorn imports)

    assert settings.CHAT_SWITCH_INTERVAL_MS == 1.0
    assert sys.getswitchinterval() == pytest.approx(0.001)


def test_start_up_objects_are_out_of_the_garbage_collectors_sight():
    """chatsite.asgi freezes what start-up made (gc.freeze): a full collection, which holds
    the GIL and so pauses every stream, then walks only what requests made since."""
    import gc

    import chatsite.asgi

    assert gc.get_freeze_count() > 50_000
    assert gc.get_threshold()[0] == chatsite.asgi.GC_YOUNG_THRESHOLD
