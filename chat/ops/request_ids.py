"""A request id for every request, so an operator can follow one request through the
proxy's log, ours and the response: taken from `X-Request-ID` when the proxy (or client)
sent a sane one, otherwise generated; returned in the response's `X-Request-ID`.

It lives in a context variable, which log records read (`chat.ops.logs`). Under ASGI
Django runs each request in a task of its own, so the value set here is seen by
everything the request does, its streamed body and the turn it finishes included, and by
nothing else. `chat.middleware.RequestIdMiddleware` sets it. No Django imports here:
the log formatter imports this module while Django configures logging, before the apps
are loaded.
"""

from __future__ import annotations

from contextvars import ContextVar

HEADER = "X-Request-ID"
MAX_LENGTH = 200

current: ContextVar[str] = ContextVar("request_id", default="")


def accepted(value: str | None) -> str | None:
    """`value` if it can be logged and echoed in a header as it is: printable ASCII
    (no CR/LF to split a header or a log line), at most MAX_LENGTH characters."""
    if value and len(value) <= MAX_LENGTH and value.isascii() and value.isprintable():
        return value
    return None
