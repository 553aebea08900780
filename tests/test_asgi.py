"""chatsite/asgi.py: what our ASGI handler changes in Django's per-request work."""

from __future__ import annotations

from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections

from chatsite.asgi import ChatASGIHandler, _check_connections_at_request_end_only


def sync_receivers(signal, sender) -> list:
    return signal._live_receivers(sender)[0]


def test_our_handler_checks_connections_after_each_request_not_before():
    # Django's test client re-connects the check for every sender after its requests:
    # set the wiring up again as the worker does at start-up (it is idempotent).
    _check_connections_at_request_end_only()
    _check_connections_at_request_end_only()
    # No synchronous receiver left at request start: no thread hop before the view.
    assert sync_receivers(request_started, ChatASGIHandler) == []
    assert close_old_connections in sync_receivers(request_finished, ChatASGIHandler)
    # Other handlers keep Django's checks at both ends.
    for handler in (WSGIHandler, ASGIHandler):
        assert close_old_connections in sync_receivers(request_started, handler)
        assert close_old_connections in sync_receivers(request_finished, handler)
