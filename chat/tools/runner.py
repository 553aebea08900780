"""Running one tool call. Whatever goes wrong (a name the model invented, arguments that
are not JSON or break the schema, an exception, a timeout) becomes a result the model is
shown with `error` set, so it can correct itself; a turn never fails for a tool."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import pydantic
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection

from chat import llm
from chat.tools.registry import Caller, Tool, ToolError

# How an MCP tool's name is made: `<server>__<tool>` (chat.tools.mcp).
SEPARATOR = "__"

logger = logging.getLogger("chat")
MAX_OUTPUT_CHARS = 20_000


@dataclass(frozen=True, slots=True)
class ToolResult:
    output: str
    error: bool
    duration_ms: int
    ran: bool = True  # False: never called (no such tool, its server is down), never billed


async def tool_run(
    *,
    tools: dict[str, Tool],
    call: llm.ToolCall,
    caller: Caller,
    unavailable: dict[str, str] | None = None,
) -> ToolResult:
    """Run `call` with the tool of its name; cancelled with the turn (Stop).
    `unavailable`: why an MCP server's tools are missing, by server name."""
    started = time.monotonic()
    server = call.name.split(SEPARATOR, 1)[0] if SEPARATOR in call.name else ""
    ran = call.name in tools
    if not ran and server in (unavailable or {}):
        output, error = (unavailable or {})[server], True
    else:
        output, error = await _run(tools, call, caller)
    if len(output) > MAX_OUTPUT_CHARS:
        output = output[:MAX_OUTPUT_CHARS] + "… (cut)"
    return ToolResult(output, error, int((time.monotonic() - started) * 1000), ran=ran)


async def _run(tools: dict[str, Tool], call: llm.ToolCall, caller: Caller) -> tuple[str, bool]:
    tool = tools.get(call.name)
    if tool is None:
        known = ", ".join(sorted(tools)) or "none"
        return f"There is no tool named {call.name!r}. Tools: {known}.", True
    try:
        arguments = tool.arguments.model_validate_json(call.arguments or "{}")
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        return f"Invalid arguments for {call.name}: {problems}.", True
    kwargs: dict[str, Any] = dict(arguments)
    if tool.caller_parameter:
        kwargs[tool.caller_parameter] = caller
    try:
        async with asyncio.timeout(settings.CHAT_TOOL_TIMEOUT_SECONDS):
            if inspect.iscoroutinefunction(tool.function):
                value = await tool.function(**kwargs)
            else:
                # Not bound to the request's database thread: a slow tool must not hold
                # up the other turns' writes.
                value = await sync_to_async(_in_thread, thread_sensitive=False)(tool, kwargs)
    except TimeoutError:
        seconds = settings.CHAT_TOOL_TIMEOUT_SECONDS
        return f"{call.name} did not answer within {seconds:g} seconds.", True
    except ToolError as exc:
        return str(exc), True
    except Exception as exc:
        logger.warning("tool %s failed", call.name, exc_info=True)
        return f"{call.name} failed: {type(exc).__name__}: {exc}", True
    return _text(value), False


def _in_thread(tool: Tool, kwargs: dict[str, Any]) -> Any:
    try:
        return tool.function(**kwargs)
    finally:
        connection.close()  # this worker thread's own, if the tool opened one


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)
