"""The API's errors: every error type it answers and the HTTP status each stands for (one
table, `HTTP_STATUS`), the refusals a request can meet, the one JSON shape every error is
sent in, and what an error Django answered itself is called.

It also holds `json_errors`, the ASGI `send` wrapper that gives an error Django answers
before any middleware runs the same JSON shape: it is that shape at the protocol level and
sends `status_error`'s body, so it lives here rather than in `chatsite/asgi.py`, which
only composes the application.

A leaf: `chat.llm` takes its statuses from here, so nothing here imports `chat.llm`."""

from __future__ import annotations

from typing import TypedDict

from asgiref.typing import ASGISendCallable, ASGISendEvent, HTTPResponseStartEvent
from django.http import JsonResponse

# Every path under this prefix is the API, and every error under it is answered in JSON.
API_PREFIX = "/api/"

# Every error type the API answers, as a JSON error or in a stream's `error` event, and
# the HTTP status it stands for. A stream's error carries its status (`error_detail`), so
# no client keeps a table of its own.
HTTP_STATUS: dict[str, int] = {
    # The request: its body, its fields, its query.
    "bad_request": 400,
    "invalid_request": 400,
    "invalid_json": 400,
    "empty_message": 400,
    "invalid_model": 400,
    "invalid_api": 400,
    "invalid_cursor": 400,
    "invalid_limit": 400,
    "invalid_title": 400,
    "invalid_format": 400,
    "request_too_large": 413,
    "body_too_large": 413,
    "message_too_long": 413,
    "system_too_long": 413,
    "unsupported_media_type": 415,
    "not_acceptable": 406,
    "method_not_allowed": 405,
    "not_found": 404,
    # Attachments (`chat.files`): their type, size and number.
    "empty_file": 400,
    "invalid_file": 400,
    "model_cannot_see_images": 400,
    "file_too_large": 413,
    "image_too_large": 413,
    "too_many_files": 413,
    "daily_upload_limit": 413,
    "unsupported_file_type": 415,
    # Who asks, and from where.
    "authentication_required": 401,
    "invalid_token": 401,
    "unauthorized": 401,
    "forbidden": 403,
    "cross_origin": 403,
    # The conversation's state.
    "not_last_turn": 409,
    "turn_in_progress": 409,
    "still_streaming": 409,
    # Limits, each with Retry-After.
    "rate_limited": 429,
    "quota_exceeded": 429,
    "too_many_streams": 429,
    "budget_exceeded": 429,
    # Ours.
    "server_error": 500,
    # The model provider (`chat.llm.errors`); a rate limit passes its Retry-After on.
    "upstream_bad_request": 400,
    "upstream_rate_limit": 429,
    "upstream_auth": 502,
    "upstream_unreachable": 502,
    "upstream_error": 502,
    "upstream_timeout": 504,
    # A reply whose writer stopped: a worker that went away, or one the stale sweep found.
    "interrupted": 502,
    "stale": 502,
}
# A type missing above (a row stored by an older version) is a failure behind us.
UNNAMED_STATUS = 502


def http_status(error_type: str) -> int:
    """The HTTP status `error_type` is answered with, or stands for in a stream."""
    return HTTP_STATUS.get(error_type, UNNAMED_STATUS)


class ErrorBody(TypedDict):
    type: str
    message: str


class ErrorReply(TypedDict):
    """What every JSON error response is."""

    error: ErrorBody


class ErrorDetail(ErrorBody):
    """The error object of a stream's `error` event and of a failed message: a stream has
    answered 200 long before it fails, so the status the error stands for travels in it."""

    http_status: int


def error_detail(type: str, message: str) -> ErrorDetail:
    return {"type": type, "message": message, "http_status": http_status(type)}


class ChatError(Exception):
    """A request we refuse; its `status` is its type's in `HTTP_STATUS`."""

    def __init__(self, type: str, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.type = type
        self.message = message
        self.headers = headers  # e.g. Retry-After on a 429

    @property
    def status(self) -> int:
        return http_status(self.type)


class LimitExceeded(ChatError):
    """429 with the seconds after which trying again can succeed."""

    def __init__(self, type: str, message: str, *, retry_after: int) -> None:
        self.retry_after = max(1, retry_after)
        super().__init__(type, message, headers={"Retry-After": str(self.retry_after)})


def not_found(what: str) -> ChatError:
    return ChatError("not_found", f"No such {what}.")


def error_response(
    type: str, message: str, *, headers: dict[str, str] | None = None
) -> JsonResponse:
    """The API's JSON error for `type`, answered with its status in `HTTP_STATUS`."""
    return _error_response(http_status(type), type, message, headers)


def _error_response(
    status: int, type: str, message: str, headers: dict[str, str] | None
) -> JsonResponse:
    # The status given apart from the type only for `status_error`, where Django chose it.
    body: ErrorReply = {"error": {"type": type, "message": message}}
    return JsonResponse(body, status=status, headers=headers)


# What an error Django answered for itself (not a view of ours) is called, and says.
DJANGO_ERRORS = {
    "bad_request": "The request could not be understood.",
    "forbidden": "This request is not allowed.",
    "not_found": "No API endpoint at this path.",
    "method_not_allowed": "This method is not allowed here.",
    "request_too_large": "The request body is too large.",
    "server_error": "Something went wrong on our side.",
}
_DJANGO_ERROR_BY_STATUS = {http_status(type): type for type in DJANGO_ERRORS}


def status_error(status: int, headers: dict[str, str] | None = None) -> JsonResponse:
    """The API's JSON error for an error status Django answered itself (not a view of ours)."""
    fallback = "server_error" if status >= 500 else "bad_request"
    type = _DJANGO_ERROR_BY_STATUS.get(status, fallback)
    return _error_response(status, type, DJANGO_ERRORS[type], headers)


def json_errors(send: ASGISendCallable) -> ASGISendCallable:
    """An ASGI `send` for the API, with an error Django answered itself before any
    middleware ran (its request building: 400 for a query string that is not UTF-8, 413)
    rewritten as the API's JSON error. Everything else, JSON errors included, passes
    through untouched."""
    held: HTTPResponseStartEvent | None = None

    async def sending(message: ASGISendEvent) -> None:
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


async def _send_json_error(send: ASGISendCallable, start: HTTPResponseStartEvent) -> None:
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
    await send({"type": "http.response.body", "body": body, "more_body": False})
