"""Producing a turn: call the model and yield its events; the row is finished in a
shielded `finally` whatever happens."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing

from asgiref.sync import sync_to_async
from django.conf import settings

from chat import llm
from chat.files.context import files_in_context
from chat.llm import Finished, ProviderError, ReasoningDelta, TextDelta, ToolCall, Usage
from chat.models import Message
from chat.runtime import shielded, spawn
from chat.streams import IDLE, EndData, StreamEvent, error_event, start_event
from chat.turns import relay
from chat.turns.control import cancel_key, in_flight, interrupting
from chat.turns.finish import (
    keeps_connection,
    ms_since,
    release_connection,
    turn_finish,
    usage_estimate,
)
from chat.turns.lease import lease_hold, lease_release
from chat.turns.log import log_key
from chat.turns.rounds import (
    BudgetReached,
    ReplyParts,
    RoundEvent,
    ToolFinished,
    ToolStarted,
    turn_rounds,
)
from chat.turns.selectors import turn_replay
from chat.turns.start import Turn

logger = logging.getLogger("chat")


async def turn_stream(*, turn: Turn) -> AsyncGenerator[StreamEvent, None]:
    """Call the model and yield `start`, then `reasoning`, `delta`, `tool_call`,
    `tool_result`, `web_search` and `citation` events as they happen (a tool loop calls
    the model several times), then `end` or `error`.

    The row is finished exactly once, in a shielded `finally`, for every outcome:
    completed, upstream error, timeout, stop request, or the consumer going away. Each
    model call's usage is counted once; the turn's is their sum.
    """
    started = time.monotonic()
    parts: list[str] = []
    reply = ReplyParts()
    rounds: list[Finished] = []
    round_text: list[str] = []  # the text of the model call under way
    budget_reached = False
    ttft_ms: int | None = None
    finished: Finished | None = None
    error: ProviderError | None = None
    stopped = interrupted = False
    outcome: EndData | None = None
    # Text the relay had gathered for its next frame when our consumer went away: what
    # the model sent is kept, whether or not a reader saw it.
    unsent: list[TextDelta | ReasoningDelta] = []

    def keep(event: RoundEvent) -> None:
        reply.add(event)
        if isinstance(event, TextDelta):
            parts.append(event.text)
            round_text.append(event.text)

    stop_key = cancel_key(turn.conversation_id, turn.message_id)
    in_flight.add(stop_key)
    # Renewed while it streams, with `parts` checkpointed: if this process dies, another
    # (or this one restarted) finishes the row within seconds (`chat.turns.recover`).
    lease_hold(
        message_id=turn.message_id,
        parts=parts,
        log_key=log_key(turn.conversation_id, turn.message_id),
    )
    try:
        # Inside the `try`: a consumer that leaves at this very first event still gets
        # the row finished.
        yield start_event(
            {
                "conversation": str(turn.conversation_id),
                "message": turn.message_id,
                "model": turn.model,
            }
        )
        # Resumed once the response has started, so the rows are written (turn_start or
        # claim, and a session the middleware saved): seconds to minutes of waiting on
        # the model follow, so give the database connection back rather than pin it. Not
        # awaited, so the upstream call does not wait for it; it runs in this request's
        # DB thread, before turn_finish's write queued behind it there.
        if not keeps_connection():
            spawn(sync_to_async(release_connection)())
        if turn.attached:
            turn.context = await files_in_context(turn.context, turn.attached)
        upstream = turn_rounds(turn=turn)
        relayed = relay.relay(
            upstream,
            cancel_key=stop_key,
            idle_after=settings.CHAT_SSE_PING_SECONDS,
            frame_seconds=settings.CHAT_STREAM_FRAME_MS / 1000,
            unsent=unsent,
        )
        # aclosing: when our consumer closes us at a `yield`, the upstream is closed
        # before the row is finished, not whenever the garbage collector gets to it.
        async with aclosing(relayed):
            async for event in relayed:
                if isinstance(event, StreamEvent):
                    yield event  # IDLE
                    continue
                keep(event)
                if isinstance(event, TextDelta):
                    if not event.text:
                        continue
                    if ttft_ms is None:
                        ttft_ms = ms_since(started)
                    yield StreamEvent("delta", {"text": event.text})
                elif isinstance(event, ReasoningDelta):
                    if event.text:
                        yield StreamEvent("reasoning", {"text": event.text})
                elif isinstance(event, ToolCall):
                    pass  # announced when it starts, with who runs it
                elif isinstance(event, llm.WebSearch):
                    yield StreamEvent(
                        "web_search",
                        {"id": event.item_id, "status": event.status, "query": event.query},
                    )
                elif isinstance(event, llm.Citation):
                    yield StreamEvent(
                        "citation",
                        {
                            "url": event.url,
                            "title": event.title,
                            "start_index": event.start_index,
                            "end_index": event.end_index,
                        },
                    )
                elif isinstance(event, ToolStarted):
                    yield StreamEvent("tool_call", tool_call_data(event.call, runner=event.runner))
                elif isinstance(event, ToolFinished):
                    yield StreamEvent(
                        "tool_result",
                        {
                            "id": event.call.call_id,
                            "name": event.call.name,
                            "output": event.result.output,
                            "error": event.result.error,
                            "duration_ms": event.result.duration_ms,
                        },
                    )
                elif isinstance(event, Finished):
                    rounds.append(_with_usage(event, turn=turn, text="".join(round_text)))
                    round_text.clear()
                elif isinstance(event, BudgetReached):
                    budget_reached = True
            if rounds:
                total = sum((r.usage for r in rounds if r.usage), Usage())
                finished = dataclasses.replace(rounds[-1], usage=total)
                if budget_reached:
                    finished = dataclasses.replace(
                        finished, status="incomplete", finish_reason="budget_exceeded"
                    )
    except ProviderError as exc:
        error = exc
    except relay.StopRequested:
        stopped = True
        interrupted = stop_key in interrupting
    except Exception:
        # A bug or an upstream that breaks the protocol in a way we did not foresee: the
        # turn failed (not "cancelled") and the client gets a final error event.
        logger.exception("turn %s failed unexpectedly", turn.message_id)
        error = ProviderError("upstream", "The model's reply could not be read.")
    finally:
        for event in unsent:
            keep(event)
        # Shielded: the client may be gone, but the row must still be finished.
        try:
            outcome = await shielded(
                turn_finish(
                    turn=turn,
                    text="".join(parts),
                    parts=reply.parts,
                    rounds=rounds,
                    unfinished_round_text="".join(round_text),
                    finished=finished,
                    error=error,
                    stopped=stopped or (finished is None and error is None),
                    interrupted=interrupted,
                    ttft_ms=ttft_ms,
                    duration_ms=ms_since(started),
                )
            )
        finally:
            in_flight.discard(stop_key)
            interrupting.discard(stop_key)
            lease_release(turn.message_id)
    yield StreamEvent("error" if "error" in outcome else "end", outcome)


def tool_call_data(call: ToolCall, *, runner: str) -> dict[str, str]:
    return {"id": call.call_id, "name": call.name, "arguments": call.arguments, "runner": runner}


def _with_usage(finished: Finished, *, turn: Turn, text: str) -> Finished:
    """A model call's `Finished` with usage: its own, or an estimate flagged as such."""
    if finished.usage is not None:
        return finished
    return dataclasses.replace(finished, usage=usage_estimate(turn, text))


async def turn_follow(*, message: Message) -> AsyncGenerator[StreamEvent, None]:
    """For a second reader of a turn: wait for the stored result, never call the model."""
    deadline = time.monotonic() + settings.CHAT_STREAM_WAIT_SECONDS
    last_sent = time.monotonic()
    while message.status not in Message.FINAL_STATUSES:
        if time.monotonic() >= deadline:
            yield error_event(
                status=str(message.status),
                error_type="still_streaming",
                message="This reply is still being written elsewhere; "
                "reload to see it when it is done.",
            )
            return
        await asyncio.sleep(0.5)
        if time.monotonic() - last_sent >= settings.CHAT_SSE_PING_SECONDS:
            last_sent = time.monotonic()
            yield IDLE
        await message.arefresh_from_db()
    for event in turn_replay(message):
        yield event
