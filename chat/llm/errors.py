"""Upstream failures, translated into what we answer our own client: a kind, its error type
(whose HTTP status is `chat.errors.HTTP_STATUS`'s), and a message that is safe to show
(never a key)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from django.conf import settings

from chat.errors import ErrorDetail, error_detail, http_status

if TYPE_CHECKING:
    import openai


class ProviderError(Exception):
    """An upstream failure, already translated into what we answer our own client."""

    TYPE_BY_KIND = {
        "auth": "upstream_auth",
        "rate_limit": "upstream_rate_limit",
        "timeout": "upstream_timeout",
        "connection": "upstream_unreachable",
        "bad_request": "upstream_bad_request",
        "upstream": "upstream_error",
    }

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        retry_after: str | None = None,
        request_id: str = "",
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after = retry_after
        self.request_id = request_id

    @property
    def error_type(self) -> str:
        return self.TYPE_BY_KIND.get(self.kind, "upstream_error")

    @property
    def status(self) -> int:
        return http_status(self.error_type)

    def detail(self) -> ErrorDetail:
        """The error object of the turn's `error` event."""
        return error_detail(self.error_type, self.message)


def translate_error(exc: openai.APIError) -> ProviderError:
    """SDK exception → what our client is told. Auth failures say nothing about the key."""
    import openai  # loaded already: `exc` is one of its errors

    request_id = ""
    response = getattr(exc, "response", None)
    if response is not None:
        request_id = response.headers.get("x-request-id", "")
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return ProviderError(
            "auth",
            "The model provider rejected our credentials; an administrator must fix the API key.",
            request_id=request_id,
        )
    if isinstance(exc, openai.RateLimitError):
        retry_after = response.headers.get("retry-after") if response is not None else None
        return ProviderError(
            "rate_limit",
            "The model provider is rate limiting us; try again shortly.",
            retry_after=retry_after,
            request_id=request_id,
        )
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError("timeout", "The model did not answer in time.")
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError("connection", "Could not reach the model provider.")
    status = getattr(exc, "status_code", 500)
    if 400 <= status < 500:
        return ProviderError("bad_request", redact(_upstream_message(exc)), request_id=request_id)
    return ProviderError(
        "upstream", f"The model provider failed (HTTP {status}).", request_id=request_id
    )


def _upstream_message(exc: openai.APIError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", body) if isinstance(body.get("error", body), dict) else body
    return str(error.get("message") or exc.message or "The model provider refused the request.")


_KEYLIKE = re.compile(r"\b(sk|rk|pk|key)[-_][A-Za-z0-9_\-]{6,}")


def redact(message: str) -> str:
    """Upstream text with anything key-shaped (and our own keys) blanked out."""
    for secret in (settings.OPENAI_API_KEY, settings.AZURE_OPENAI_API_KEY):
        if secret:
            message = message.replace(secret, "[redacted]")
    return _KEYLIKE.sub("[redacted]", message)[:500]
