"""A worker's ASGI lifespan: its own work before it accepts requests, now and then while it
serves, and before it exits.

The work is passed in as hooks (`chatsite.asgi` composes the turn engine's): this package
never imports the turn engine. The worker's metrics are this package's own, so its exit is
recorded here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, ASGISendEvent

from chat.ops import metrics

logger = logging.getLogger("chat")
Hook = Callable[[], Awaitable[object]]


async def lifespan(
    receive: ASGIReceiveCallable,
    send: ASGISendCallable,
    *,
    startup: Hook,
    periodic: Sequence[tuple[Hook, float]],
    shutdown: Hook,
) -> None:
    """One ASGI lifespan: `startup` before the worker accepts requests (the server waits
    for it; if it raises, the worker refuses to start, saying why), each `(hook, every)`
    of `periodic` every `every` seconds while it serves (never when `every` is 0), and
    `shutdown` once the server has stopped serving, before the event loop closes."""
    repeating: list[asyncio.Task[None]] = []
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await startup()
            except Exception as exc:  # refused: say why; the server exits
                logger.error("refusing to start: %s", exc)
                # Its `message` left out: logged above, in this service's own format.
                await send(cast(ASGISendEvent, {"type": "lifespan.startup.failed"}))
                return
            repeating = [
                asyncio.create_task(_repeat(hook, every)) for hook, every in periodic if every > 0
            ]
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            for task in repeating:
                task.cancel()
            await shutdown()
            metrics.worker_exited()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _repeat(hook: Hook, seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        await hook()
