"""chat/runtime.py: work that outlives a cancelled caller, per-loop state, kept tasks."""

import asyncio
import gc
import weakref

import pytest

from chat.runtime import PerLoop, committed, keep_alive, shielded, spawn


@pytest.mark.asyncio
async def test_shielded_work_finishes_after_its_caller_is_cancelled():
    started, release, finished = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def work():
        started.set()
        await release.wait()
        finished.set()

    caller = asyncio.create_task(shielded(work()))
    await started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert caller.cancelled() and not finished.is_set()
    release.set()
    await asyncio.wait_for(finished.wait(), 5)


@pytest.mark.asyncio
async def test_committed_work_is_undone_when_its_caller_is_cancelled():
    started, release = asyncio.Event(), asyncio.Event()
    undone = []

    async def work():
        started.set()
        await release.wait()
        return "row 7"

    async def undo(row):
        undone.append(row)

    caller = asyncio.create_task(committed(work(), undo=undo))
    await started.wait()
    caller.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert caller.cancelled()
    assert undone == ["row 7"]  # what the work committed, once it had


@pytest.mark.asyncio
async def test_committed_work_is_kept_when_its_caller_is_not_cancelled():
    undone = []

    async def work():
        return "row 7"

    async def undo(row):
        undone.append(row)

    assert await committed(work(), undo=undo) == "row 7"
    assert undone == []


class Value:
    """Something a weak reference can watch."""


def test_a_per_loop_value_belongs_to_its_loop_and_goes_with_it():
    per_loop = PerLoop(Value)

    async def twice():
        return per_loop.get(), per_loop.get()

    loop = asyncio.new_event_loop()
    first, again = loop.run_until_complete(twice())
    assert first is again
    other, _ = asyncio.run(twice())
    assert other is not first
    gone = weakref.ref(first)
    del first, again
    loop.close()
    del loop
    gc.collect()
    assert gone() is None


def test_a_per_loop_value_of_none_is_made_once():
    made = []
    per_loop = PerLoop(lambda: made.append("made"))

    async def twice():
        return per_loop.get(), per_loop.get()

    assert asyncio.run(twice()) == (None, None)
    assert made == ["made"]


def _keep_alive(coro):
    return keep_alive(asyncio.ensure_future(coro))


@pytest.mark.asyncio
@pytest.mark.parametrize("start", [spawn, _keep_alive], ids=["spawn", "keep_alive"])
async def test_a_task_is_kept_until_done_then_forgotten(start):
    started, release, done = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def work(release):
        started.set()
        await release.wait()

    task = start(work(release))
    task.add_done_callback(lambda _: done.set())
    await started.wait()
    watched, releaser = weakref.ref(task), weakref.ref(release)
    # Now only the task refers to what it waits for, and the event loop refers to a
    # waiting task only weakly: without being kept, it would be collected here.
    del task, release
    gc.collect()
    assert watched() is not None
    releaser().set()
    await asyncio.wait_for(done.wait(), 5)
    gc.collect()
    assert watched() is None
