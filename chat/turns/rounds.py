"""A turn's model calls: the model may ask for tools, which run here, and is called again
with their results, up to `CHAT_TOOL_MAX_ROUNDS` calls (the last offered no tools, so it
answers in text). Yields every model event and each tool's start and result, in order;
`turn_stream` shows, stores and bills them. Run inside the relay, so Stop cancels a tool
that is running."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from chat import llm
from chat.access.owners import Owner
from chat.runtime import Rearming
from chat.spend.budgets import budget_status
from chat.spend.prices import cost_of, price_now, search_cost
from chat.spend.tool_calls import tool_calls_priced
from chat.tools import ToolResult, tool_run, tools_available
from chat.turns.start import Turn


@dataclass(frozen=True, slots=True)
class ToolStarted:
    call: llm.ToolCall
    runner: str  # who runs it: "python" (this server), "mcp:<server>", "none" (unknown)


@dataclass(frozen=True, slots=True)
class ToolFinished:
    call: llm.ToolCall
    result: ToolResult


@dataclass(frozen=True, slots=True)
class BudgetReached:
    """The person's budget ran out during the turn: no more model calls."""


RoundEvent = llm.ProviderEvent | ToolStarted | ToolFinished | BudgetReached
NO_OWNER = Owner(anonymous_key="nobody")


class UpstreamIdle(llm.ProviderError):
    """The model sent nothing for `CHAT_UPSTREAM_IDLE_SECONDS`, before its first token or
    mid-reply: the turn fails, and is billed (an estimate) for the prompt it was sent and
    the text it wrote."""

    @classmethod
    def after(cls, seconds: float) -> UpstreamIdle:
        message = f"The model sent nothing for {seconds:g} seconds; the reply was stopped."
        return cls("timeout", message)


async def _never_idle(
    events: AsyncGenerator[llm.ProviderEvent, None], seconds: float
) -> AsyncGenerator[llm.ProviderEvent, None]:
    """`events`, ended with `UpstreamIdle` when none comes for `seconds` (0: never).

    One timer per round, not a timeout armed around each event (a reply is thousands of
    events, and arming one was a measurable share of a reply's CPU): when it fires it looks
    at how long the current wait has lasted, and sleeps again if less. Only the wait for
    the next event counts, never what the consumer does with one. Cancelling works as
    `asyncio.timeout`'s does: the task is cancelled from the timer, and a cancellation
    that also came from elsewhere (Stop) stays a cancellation."""
    async with contextlib.aclosing(events):
        if not seconds:
            async for event in events:
                yield event
            return
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        waiting_since: float | None = None
        fired = False

        def watch() -> float | None:
            nonlocal fired
            now = loop.time()
            if waiting_since is not None and now - waiting_since >= seconds:
                fired = True
                task.cancel()
                return None
            return (now if waiting_since is None else waiting_since) + seconds

        timer = Rearming(loop, loop.time() + seconds, watch)
        try:
            while True:
                waiting_since = loop.time()
                try:
                    event = await anext(events)
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError:
                    if fired and task.uncancel() <= cancelling:
                        raise UpstreamIdle.after(seconds) from None
                    raise
                waiting_since = None
                yield event
        finally:
            timer.cancel()


async def turn_rounds(*, turn: Turn) -> AsyncGenerator[RoundEvent, None]:
    tools, unavailable = await tools_available()
    specs = [tool.spec for tool in tools.values()]
    sent: list[dict[str, Any]] = list(turn.context)
    spent = llm.Usage()
    searches = 0
    called: list[dict[str, Any]] = []  # the parts of the rounds so far, for their prices
    for number in range(1, settings.CHAT_TOOL_MAX_ROUNDS + 1):
        if number > 1 and await _budget_reached(turn, spent, searches, called):
            yield BudgetReached()
            return
        last = number == settings.CHAT_TOOL_MAX_ROUNDS
        made = ReplyParts()
        calls: list[llm.ToolCall] = []
        reply = llm.stream_reply(
            messages=sent,
            model=turn.model,
            api=turn.api,
            system=turn.system,
            tools=() if last else specs,
            web_search=settings.CHAT_WEB_SEARCH,
        )
        async for event in _never_idle(reply, settings.CHAT_UPSTREAM_IDLE_SECONDS):
            made.add(event)
            if isinstance(event, llm.ToolCall):
                calls.append(event)
            elif isinstance(event, llm.Finished):
                searches += event.web_searches
                if event.usage is not None:
                    spent = spent + event.usage
            yield event
        if not calls:
            return
        for call in calls:
            tool = tools.get(call.name)
            started = ToolStarted(call, tool.runner if tool else "none")
            made.add(started)
            yield started
        if last:
            refused = f"Not run: this turn reached its limit of {number} model calls."
            results = [ToolResult(refused, True, 0, ran=False) for _ in calls]
        else:
            # The round's calls run side by side (a model asks for several at once when
            # they do not depend on each other); Stop cancels them all.
            results = await asyncio.gather(
                *(
                    tool_run(
                        tools=tools,
                        call=call,
                        caller=turn.owner or NO_OWNER,
                        unavailable=unavailable,
                    )
                    for call in calls
                )
            )
        for call, result in zip(calls, results, strict=True):
            finished = ToolFinished(call, result)
            made.add(finished)
            yield finished
        if last:
            return
        called += made.parts
        sent += llm.input_items(turn.api, made.parts)


async def _budget_reached(
    turn: Turn, spent: llm.Usage, searches: int, called: list[dict[str, Any]]
) -> bool:
    """Whether what the turn has cost so far (tokens, hosted searches, priced tool calls)
    takes the asking person (or one of their groups) to a spending limit: then it stops
    after the round that did, rather than calling the model again. Their budget is
    settled with the whole turn when it ends."""
    if turn.owner is None or turn.owner.user_id is None:
        return False
    status = await budget_status(user_id=turn.owner.user_id)
    limits = [(status.limit, status.spent), *((g.limit, g.spent) for g in status.groups)]
    if all(limit is None for limit, _ in limits):
        return False
    so_far = await sync_to_async(_cost_so_far)(turn, spent, searches, called)
    return any(limit is not None and used + so_far >= limit for limit, used in limits)


def _cost_so_far(
    turn: Turn, spent: llm.Usage, searches: int, called: list[dict[str, Any]]
) -> Decimal:
    """As `turn_finish` will price it (the price lists are read, when not cached, here)."""
    now = timezone.now()
    price = price_now(turn.model, now)
    so_far = cost_of(spent, price) if price is not None else Decimal(0)
    if searches and turn.provider != "demo":
        so_far += search_cost(searches, now)
    return so_far + tool_calls_priced(called, at=now)[1]


class ReplyParts:
    """A reply's parts, in order, built from its events: consecutive text or reasoning
    pieces join into one part; a reasoning part knows how long the thinking took. Pieces
    are joined once, when `parts` is read: a long reply is thousands of them."""

    def __init__(self) -> None:
        self._parts: list[dict[str, Any]] = []
        self._pieces: list[str] | None = None  # of the last part, when it is text
        self._reasoning_started: float | None = None

    @property
    def parts(self) -> list[dict[str, Any]]:
        return [
            {**part, "text": "".join(part["text"])} if "text" in part else dict(part)
            for part in self._parts
        ]

    def add(self, event: RoundEvent | llm.ProviderEvent) -> None:
        if isinstance(event, llm.TextDelta):  # the common case, first
            if self._pieces is None:
                if not event.text:
                    return
                self._reasoning_done()
                self._pieces = []
                self._parts.append({"type": "text", "text": self._pieces})
            self._pieces.append(event.text)
            return
        if isinstance(event, llm.Finished):
            return
        self._pieces = None
        last = self._parts[-1] if self._parts else None
        if isinstance(event, llm.ReasoningDelta):
            if last is None or last["type"] != "reasoning" or "item" in last:
                self._reasoning_started = time.monotonic()
                self._parts.append({"type": "reasoning", "text": []})
            self._parts[-1]["text"].append(event.text)
            return
        if isinstance(event, llm.ReasoningItem):
            if last is not None and last["type"] == "reasoning" and "item" not in last:
                last["item"] = event.item
            else:
                self._parts.append({"type": "reasoning", "text": [], "item": event.item})
            return
        self._reasoning_done()
        if isinstance(event, llm.WebSearch):
            found = next(
                (p for p in self._parts if p["type"] == "web_search" and p["id"] == event.item_id),
                None,
            )
            if found is None:
                found = {"type": "web_search", "id": event.item_id}
                self._parts.append(found)
            found.update(status=event.status, query=event.query)
        elif isinstance(event, llm.Citation):
            self._parts.append(
                {
                    "type": "citation",
                    "url": event.url,
                    "title": event.title,
                    "start_index": event.start_index,
                    "end_index": event.end_index,
                }
            )
        elif isinstance(event, ToolStarted):
            self._parts.append(
                {
                    "type": "tool_call",
                    "id": event.call.call_id,
                    "name": event.call.name,
                    "arguments": event.call.arguments,
                    "runner": event.runner,
                }
            )
        elif isinstance(event, ToolFinished):
            self._parts.append(
                {
                    "type": "tool_result",
                    "id": event.call.call_id,
                    "name": event.call.name,
                    "output": event.result.output,
                    "error": event.result.error,
                    "duration_ms": event.result.duration_ms,
                    **({} if event.result.ran else {"ran": False}),
                }
            )

    def _reasoning_done(self) -> None:
        if self._reasoning_started is not None and self._parts:
            thought = self._parts[-1]
            if thought["type"] == "reasoning":
                thought["duration_ms"] = int((time.monotonic() - self._reasoning_started) * 1000)
            self._reasoning_started = None
