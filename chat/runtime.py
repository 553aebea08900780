"""The event loop's small services: work that must run to its end even when whoever
awaits it is cancelled, state kept once per event loop, and tasks kept until done."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final, Generic, TypeVar

T = TypeVar("T")
F = TypeVar("F", bound="asyncio.Future[Any]")


async def shielded(coro: Awaitable[T]) -> T:
    """Await `coro` to the end even if our caller is cancelled meanwhile (the work goes on
    in its own task; the caller still sees the cancellation)."""
    # Kept: once our caller is cancelled nothing else refers to the task.
    task = keep_alive(asyncio.ensure_future(coro))
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


class _Missing(enum.Enum):
    """A loop with no value yet: a factory may make None, and that is a value."""

    MISSING = enum.auto()


_MISSING: Final = _Missing.MISSING


class PerLoop(Generic[T]):
    """One `T` per event loop, made by `factory` the first time a loop asks for it.

    Futures, tasks and connection pools belong to the loop that made them, and tests (or
    `async_to_sync`) run several loops in one process; a loop's value goes with it.
    """

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._values: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = (
            weakref.WeakKeyDictionary()
        )

    def get(self) -> T:
        """The running loop's value, made now if it has none yet."""
        loop = asyncio.get_running_loop()
        value = self._values.get(loop, _MISSING)
        if value is _MISSING:
            value = self._values[loop] = self._factory()
        return value

    def get_if_any(self) -> T | None:
        """The running loop's value, without making one."""
        return self._values.get(asyncio.get_running_loop())

    def clear(self) -> None:
        """Forget every loop's value (what they were made from has changed)."""
        self._values.clear()


_kept: set[asyncio.Future[Any]] = set()


def keep_alive(task: F) -> F:
    """Refer to `task` until it is done: the event loop keeps only a weak reference, and a
    task nothing else refers to may be collected before it finishes."""
    _kept.add(task)
    task.add_done_callback(_kept.discard)
    return task


def spawn(
    coro: Coroutine[Any, Any, T], *, context: contextvars.Context | None = None
) -> asyncio.Task[T]:
    """Run `coro` in a task of its own on the running loop, kept until done. Pass a fresh
    `context` for work that outlives the request starting it: asgiref picks the request's
    database thread from the context."""
    return keep_alive(asyncio.get_running_loop().create_task(coro, context=context))


class Rearming:
    """A timer that runs `check` at `first_at` (the loop's time) and again whenever `check`
    returns a time (None: no more), until `cancel()`.

    A class, not a nested function that re-arms itself by name: such a function's closure
    refers to itself, a reference cycle that keeps it, its timer, the timer's context (and
    everything reachable from those) alive after the turn until a full garbage collection,
    which then pauses every stream of the worker."""

    __slots__ = ("_loop", "_check", "_handle")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, first_at: float, check: Callable[[], float | None]
    ) -> None:
        self._loop = loop
        self._check: Callable[[], float | None] | None = check
        self._handle: asyncio.TimerHandle | None = loop.call_at(first_at, self._fire)

    def _fire(self) -> None:
        when = self._check() if self._check is not None else None
        self._handle = None if when is None else self._loop.call_at(when, self._fire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._check = None
