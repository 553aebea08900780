"""The API's errors: the refusals a request can meet (each with the HTTP status a view
answers it with), the one JSON shape every error is sent in, and what an error Django
answered itself is called."""

from __future__ import annotations

from asgiref.typing import ASGISendCallable, ASGISendEvent, HTTPResponseStartEvent
from django.http import JsonResponse


class ChatError(Exception):
    """A request we refuse; `status` is the HTTP status a view answers with."""

    def __init__(
        self, status: int, type: str, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.headers = headers  # e.g. Retry-After on a 429


class LimitExceeded(ChatError):
    """429 with the seconds after which trying again can succeed."""

    def __init__(self, type: str, message: str, *, retry_after: int) -> None:
        self.retry_after = max(1, retry_after)
        super().__init__(429, type, message, headers={"Retry-After": str(self.retry_after)})


def not_found(what: str) -> ChatError:
    return ChatError(404, "not_found", f"No such {what}.")


# What an error Django answered for itself (not a view of ours) is called in JSON.
ERROR_TYPES = {
    400: ("bad_request", "The request could not be understood."),
    403: ("forbidden", "This request is not allowed."),
    404: ("not_found", "No API endpoint at this path."),
    405: ("method_not_allowed", "This method is not allowed here."),
    413: ("request_too_large", "The request body is too large."),
    500: ("server_error", "Something went wrong on our side."),
}


def error_response(
    status: int, type: str, message: str, headers: dict[str, str] | None = None
) -> JsonResponse:
    return JsonResponse(
        {"error": {"type": type, "message": message}}, status=status, headers=headers
    )


def status_error(status: int, headers: dict[str, str] | None = None) -> JsonResponse:
    """The API's JSON error for an error status Django answered itself (not a view of ours)."""
    fallback = ERROR_TYPES[500] if status >= 500 else ERROR_TYPES[400]
    type, message = ERROR_TYPES.get(status, fallback)
    return error_response(status, type, message, headers=headers)


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
