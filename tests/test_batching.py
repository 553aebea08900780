"""chat/turns/batching.py: concurrent submissions become one write; each caller gets its own
result or error; a lone caller is not kept waiting for company."""

from __future__ import annotations

import asyncio
import threading
import uuid
from dataclasses import dataclass

import pytest

from chat.access.owners import Owner
from chat.errors import ChatError
from chat.llm import Finished, Usage
from chat.models import Conversation, Message
from chat.turns import Turn, batching, turn_start
from chat.turns.batching import Batcher
from chat.turns.finish import turn_finish

pytestmark = pytest.mark.asyncio


class Recorder:
    """A write function that records its batches and can be held mid-write."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = threading.Event()
        self.release.set()
        self.writing = threading.Event()

    def __call__(self, items: list[int]) -> list[int | Exception]:
        self.batches.append(list(items))
        self.writing.set()
        self.release.wait(5)
        return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]


async def hold_first_write(recorder: Recorder, batcher: Batcher[int, int]) -> asyncio.Future[int]:
    recorder.release.clear()
    first = batcher.submit(1)
    await asyncio.to_thread(recorder.writing.wait, 5)
    return first


async def test_a_lone_item_is_written_at_once_on_its_own():
    recorder = Recorder()
    batcher = Batcher(recorder)
    assert await batcher.submit(7) == 70
    assert await batcher.submit(8) == 80
    assert recorder.batches == [[7], [8]]


async def test_items_queued_during_a_write_go_together_in_the_next():
    recorder = Recorder()
    batcher = Batcher(recorder)
    first = await hold_first_write(recorder, batcher)
    later = [batcher.submit(i) for i in range(2, 7)]
    recorder.release.set()
    assert await first == 10
    assert await asyncio.gather(*later) == [20, 30, 40, 50, 60]
    assert recorder.batches == [[1], [2, 3, 4, 5, 6]]


class Gated:
    """A write function whose calls each wait for their own release, in order."""

    def __init__(self, name: str, order: list[tuple[str, list[int]]]) -> None:
        self.name = name
        self.order = order
        self.gates: list[threading.Event] = []
        self.started = threading.Semaphore(0)

    def __call__(self, items: list[int]) -> list[int | Exception]:
        gate = threading.Event()
        self.gates.append(gate)
        self.order.append((self.name, list(items)))
        self.started.release()
        gate.wait(5)
        return [i * 10 for i in items]

    async def next_write(self) -> threading.Event:
        """Wait until a write of this batcher has begun; its gate."""
        assert await asyncio.to_thread(self.started.acquire, True, 5)
        return self.gates[-1]


@dataclass
class Yielding:
    """Finishes yielding to starts: start 1 is being written (held at its gate) and
    finish 100 has been submitted; `order` is the order the database thread took batches."""

    order: list[tuple[str, list[int]]]
    starts: Gated
    finishes: Gated
    start: Batcher[int, int]
    first: asyncio.Future[int]
    finished: asyncio.Future[int]
    write_1: threading.Event


async def yielding(monkeypatch, *, bound: float) -> Yielding:
    monkeypatch.setattr(batching, "YIELD_AT_MOST_SECONDS", bound)
    order: list[tuple[str, list[int]]] = []
    starts, finishes = Gated("start", order), Gated("finish", order)
    start = Batcher(starts)
    finish = Batcher(finishes, yields_to=start)
    first = start.submit(1)
    write_1 = await starts.next_write()
    return Yielding(order, starts, finishes, start, first, finish.submit(100), write_1)


async def test_a_batch_that_yields_goes_after_everything_queued_to_the_other(monkeypatch):
    """Finishes yield to starts: a finish found starts being written waits until the starts
    have nothing queued (the database thread takes batches in the order they are handed
    to it), then goes."""
    scene = await yielding(monkeypatch, bound=60.0)  # however slow the machine
    await asyncio.sleep(0.01)  # time for the finish to be handed on, if it did not wait
    queued = [scene.start.submit(2), scene.start.submit(3)]
    scene.write_1.set()
    write_2 = await scene.starts.next_write()
    later = scene.start.submit(4)  # while starts 2 and 3 are written: still before the finish
    write_2.set()
    (await scene.starts.next_write()).set()
    (await scene.finishes.next_write()).set()

    written = await asyncio.gather(scene.first, *queued, later, scene.finished)
    assert written == [10, 20, 30, 40, 1000]
    assert scene.order == [("start", [1]), ("start", [2, 3]), ("start", [4]), ("finish", [100])]


async def test_a_batch_yields_for_a_bounded_time(monkeypatch):
    """Starts that keep the other batcher writing cannot hold a finish back for good: after
    `YIELD_AT_MOST_SECONDS` it is handed on, ahead of starts that come after that."""
    scene = await yielding(monkeypatch, bound=0.01)
    await asyncio.sleep(0.3)  # past the bound: the finish is queued behind start 1
    later = scene.start.submit(2)
    scene.write_1.set()
    (await scene.finishes.next_write()).set()
    (await scene.starts.next_write()).set()

    assert await asyncio.gather(scene.first, scene.finished, later) == [10, 1000, 20]
    assert scene.order == [("start", [1]), ("finish", [100]), ("start", [2])]


async def test_an_item_error_reaches_only_its_own_caller():
    recorder = Recorder()
    batcher = Batcher(recorder)
    first = await hold_first_write(recorder, batcher)
    good, bad, also_good = batcher.submit(2), batcher.submit(-3), batcher.submit(4)
    recorder.release.set()
    await first
    assert await good == 20 and await also_good == 40
    with pytest.raises(ValueError, match="bad -3"):
        await bad
    assert recorder.batches[1] == [2, -3, 4]


async def test_a_failed_batch_is_retried_item_by_item_so_only_the_culprit_fails():
    calls: list[list[str]] = []

    def write(items: list[str]) -> list[str | Exception]:
        calls.append(items)
        if "boom" in items:  # e.g. a constraint or a deadlock: the transaction rolls back
            raise RuntimeError("database said no")
        return [item.upper() for item in items]

    batcher: Batcher[str, str] = Batcher(write)
    boom, fine = await asyncio.gather(
        batcher.submit("boom"), batcher.submit("x"), return_exceptions=True
    )
    assert isinstance(boom, RuntimeError) and fine == "X"
    assert await batcher.submit("y") == "Y"
    assert calls == [["boom", "x"], ["boom"], ["x"], ["y"]]


async def test_a_writer_cancelled_before_it_ran_does_not_block_later_items():
    recorder = Recorder()
    batcher = Batcher(recorder)
    lost = batcher.submit(1)
    # The loop closing under it (asyncio.run's shutdown cancels every task).
    [writer] = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    writer.cancel()
    await asyncio.wait([writer])
    await asyncio.sleep(0)  # its done-callbacks run on the next turn of the loop
    assert lost.cancelled()
    assert await batcher.submit(2) == 20
    assert recorder.batches == [[2]]


async def test_batches_are_capped(monkeypatch):
    monkeypatch.setattr(batching, "MAX_BATCH", 3)
    recorder = Recorder()
    batcher = Batcher(recorder)
    first = await hold_first_write(recorder, batcher)
    later = [batcher.submit(i) for i in range(2, 9)]
    recorder.release.set()
    await first
    await asyncio.gather(*later)
    assert recorder.batches == [[1], [2, 3, 4], [5, 6, 7], [8]]


async def test_settled_waits_for_what_is_queued_for_shutdown():
    recorder = Recorder()
    batcher = Batcher(recorder)
    first = await hold_first_write(recorder, batcher)
    queued = batcher.submit(2)
    assert await batching.settled(timeout=0.05) is False  # still writing
    recorder.release.set()
    assert await batching.settled(timeout=5) is True
    assert first.result() == 10 and queued.result() == 20


@pytest.mark.django_db(transaction=True)
async def test_turns_started_together_are_stored_together_and_a_refusal_stays_its_own(
    upstream,
):
    owner = Owner(anonymous_key="batch")
    existing = await turn_start(owner=owner, message="earlier")
    starts = [
        turn_start(owner=owner, message="new one"),
        turn_start(owner=owner, message="unknown", conversation_id=uuid.uuid4()),
        turn_start(owner=owner, message="model?", model="not-allowed"),
        turn_start(owner=owner, message="follow-up", conversation_id=existing.conversation_id),
        turn_start(owner=owner, message="later", defer=True),
    ]
    new, unknown, bad_model, follow_up, deferred = await asyncio.gather(
        *starts, return_exceptions=True
    )
    assert isinstance(unknown, ChatError) and unknown.status == 404
    assert isinstance(bad_model, ChatError) and bad_model.type == "invalid_model"
    assert new.context == [{"role": "user", "content": "new one"}]
    assert follow_up.conversation_id == existing.conversation_id
    # The follow-up's context is read back: the earlier prompt (its reply is still open).
    assert follow_up.context == [
        {"role": "user", "content": "earlier"},
        {"role": "user", "content": "follow-up"},
    ]
    assert deferred.context == []
    statuses = [m.status async for m in Message.objects.filter(role="assistant").order_by("pk")]
    assert statuses == ["streaming", "streaming", "streaming", "pending"]
    assert await Conversation.objects.acount() == 3  # existing, new, deferred
    assert await Message.objects.filter(role="user").acount() == 4


@pytest.mark.django_db(transaction=True)
async def test_turns_finished_together_each_keep_their_own_outcome_exactly_once(upstream):
    owner = Owner(anonymous_key="batch")
    turns = [await turn_start(owner=owner, message=f"q{i}") for i in range(3)]
    usage = [Usage(input_tokens=i + 1, output_tokens=10 * (i + 1)) for i in range(3)]

    def finish(turn: Turn, text: str, usage: Usage | None) -> asyncio.Future:
        return turn_finish(
            turn=turn,
            text=text,
            finished=Finished("completed", "stop", usage) if usage else None,
            error=None,
            stopped=usage is None,
            ttft_ms=5,
            duration_ms=50,
        )

    ends = await asyncio.gather(
        *(finish(turn, f"a{i}", usage[i]) for i, turn in enumerate(turns)),
        # A second finish of the first turn, at the same moment: recorded once only.
        finish(turns[0], "late", None),
    )
    assert [end["usage"]["output_tokens"] for end in ends[:3]] == [10, 20, 30]
    # The late duplicate is told what is stored, not what it would have written.
    assert ends[3]["status"] == "completed" and ends[3]["usage"]["output_tokens"] == 10
    rows = [m async for m in Message.objects.filter(role="assistant").order_by("pk")]
    assert [(m.content, m.status, m.input_tokens) for m in rows] == [
        ("a0", "completed", 1),
        ("a1", "completed", 2),
        ("a2", "completed", 3),
    ]


@pytest.mark.django_db(transaction=True)
async def test_a_reply_no_database_can_store_is_recorded_cleaned(upstream):
    """NUL (PostgreSQL refuses it) and a lone surrogate (not UTF-8) from the model."""
    turn = await turn_start(owner=Owner(anonymous_key="odd"), message="hi")
    end = await turn_finish(
        turn=turn,
        text="a\x00b\ud800c",
        finished=Finished("completed", "stop", Usage(input_tokens=1, output_tokens=3)),
        error=None,
        stopped=False,
        ttft_ms=1,
        duration_ms=2,
    )
    assert end["status"] == "completed"
    row = await Message.objects.aget(pk=turn.message_id)
    assert row.status == "completed"
    assert row.content.startswith("a\ufffdb\ufffd") and row.content.endswith("c")
    assert "\x00" not in row.content
