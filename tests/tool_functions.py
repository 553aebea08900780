"""Tools for the tests, named in `CHAT_TOOLS` by their dotted paths."""

from __future__ import annotations

import asyncio
import threading

from chat.tools import Caller

ran_in: list[int] = []
started = asyncio.Event()


def add(a: int, b: int = 1) -> int:
    """Add two whole numbers.

    Args:
        a: The first number.
        b: The second number.
    """
    ran_in.append(threading.get_ident())
    return a + b


async def whoami(caller: Caller) -> dict[str, object]:
    """Who is asking."""
    return {"user_id": caller.user_id, "anonymous_key": caller.anonymous_key}


def explode(reason: str) -> str:
    """Always fails.

    Args:
        reason: What to say.
    """
    raise RuntimeError(reason)


async def slow(seconds: float) -> str:
    """Waits, then answers.

    Args:
        seconds: How long to wait.
    """
    started.set()
    await asyncio.sleep(seconds)
    return f"waited {seconds}"
