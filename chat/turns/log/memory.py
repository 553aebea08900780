"""The turn logs this process holds: those it produces, and its copies of logs other
workers produce (`chat.turns.log.redis_streams` keeps those up to date)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from django.conf import settings

if TYPE_CHECKING:
    from chat.turns.log import TurnLog


class Logs:
    """Turn logs by key."""

    def __init__(self) -> None:
        self._by_key: dict[str, TurnLog] = {}

    def get(self, key: str) -> TurnLog | None:
        return self._by_key.get(key)

    def add(self, log: TurnLog) -> TurnLog:
        self._by_key[log.key] = log
        return log

    def discard(self, log: TurnLog) -> None:
        """Forget `log`, unless a newer log of the same turn has taken its place."""
        if self._by_key.get(log.key) is log:
            del self._by_key[log.key]


produced = Logs()  # the turns this process produces
copies = Logs()  # local copies of logs produced by other workers


def forget_later(log: TurnLog) -> None:
    """Keep a finished turn's log for resuming readers, then let it go."""
    asyncio.get_running_loop().call_later(settings.CHAT_RESUME_TTL_SECONDS, produced.discard, log)
