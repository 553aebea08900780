"""Awaiting work that must run to its end even when whoever awaits it is cancelled."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def shielded(coro: Awaitable[T]) -> T:
    """Await `coro` to the end even if our caller is cancelled meanwhile (the work goes on
    in its own task; the caller still sees the cancellation)."""
    task = asyncio.ensure_future(coro)
    return await asyncio.shield(task)


async def committed(work: Awaitable[T], *, undo: Callable[[T], Awaitable[Any]]) -> T:
    """Await database `work` whose thread cannot be interrupted. If our caller is cancelled
    meanwhile (the client left), the work still commits: wait for it, `undo` it so no row
    is left claimed with nobody to finish it, then let the cancellation go on."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await undo(await task)
        raise
