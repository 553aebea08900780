"""Staff pages take turns on a worker, so reports never crowd out the streams.

A worker's chat streams run on its event loop; the admin's pages are Django's sync views,
rendered on a thread per request. Every thread of a worker shares one GIL: with two or
three pages rendering at once, the event loop waits behind each of them for the GIL on
every wake-up and the streams' time to first token rises with the number of staff
reloading. One page at a time (a setting) bounds the share: the loop then competes with a
single rendering thread however many staff are busy, and the pages queue instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator

# One gate per event loop: an asyncio.Semaphore binds to the loop that first waits on it.
_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


@contextlib.asynccontextmanager
async def page_turn(at_once: int) -> AsyncIterator[None]:
    """Wait for one of `at_once` places for a staff page on this worker (0: no limit)."""
    if at_once <= 0:
        yield
        return
    loop = asyncio.get_running_loop()
    gate = _gates.get(loop)
    if gate is None:
        gate = _gates.setdefault(loop, asyncio.Semaphore(at_once))
    async with gate:
        yield
