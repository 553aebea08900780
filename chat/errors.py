"""The refusals a request can meet, each with the HTTP status a view answers it with."""

from __future__ import annotations


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
