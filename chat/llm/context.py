"""What is sent to the model besides the newest message, in each API's own shape: the
tools offered, and earlier parts of a reply (reasoning, tool calls and their results,
text) as input items, so nothing is lost between rounds of a turn or between turns.

A part is the plain JSON a reply is stored as (`Message.parts`):
`{"type": "reasoning", "text", "item"?}`, `{"type": "tool_call", "id", "name",
"arguments", "runner"}`, `{"type": "tool_result", "id", "name", "output", "error"}`,
`{"type": "text", "text"}`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypedDict

from chat.llm.backends import Api

Part = dict[str, Any]


class ToolSpec(TypedDict):
    """A function the model may call: its name, what it does, and its arguments' JSON
    schema."""

    name: str
    description: str
    parameters: dict[str, Any]


def tool_definitions(api: Api, tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """`tools` as the request's `tools` array: flat for Responses, nested under
    `function` for Chat Completions."""
    if api == "responses":
        return [{"type": "function", "strict": False, **tool} for tool in tools]
    return [{"type": "function", "function": dict(tool)} for tool in tools]


def has_tool_parts(parts: Iterable[Part]) -> bool:
    return any(part.get("type") in ("tool_call", "tool_result") for part in parts)


def input_items(api: Api, parts: Sequence[Part]) -> list[dict[str, Any]]:
    """A reply's parts as input items: Responses `function_call`, `function_call_output`
    and reasoning items (a reasoning item only just before the call it led to, where
    reasoning models need it); Chat Completions an assistant message with `tool_calls`,
    then one `tool` message per result."""
    if api == "responses":
        return _responses_items(parts)
    return _chat_messages(parts)


def _responses_items(parts: Sequence[Part]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for index, part in enumerate(parts):
        kind = part.get("type")
        following = parts[index + 1].get("type") if index + 1 < len(parts) else None
        if kind == "reasoning" and part.get("item") and following == "tool_call":
            items.append(part["item"])
        elif kind == "tool_call":
            items.append(
                {
                    "type": "function_call",
                    "call_id": part["id"],
                    "name": part["name"],
                    "arguments": part["arguments"],
                }
            )
        elif kind == "tool_result":
            items.append(
                {"type": "function_call_output", "call_id": part["id"], "output": part["output"]}
            )
        elif kind == "text" and part.get("text"):
            items.append({"role": "assistant", "content": part["text"]})
    return items


def _chat_messages(parts: Sequence[Part]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    assistant: dict[str, Any] | None = None  # the round's message, until its results
    for part in parts:
        kind = part.get("type")
        if kind == "text" and part.get("text"):
            assistant = {"role": "assistant", "content": part["text"]}
            messages.append(assistant)
        elif kind == "tool_call":
            if assistant is None:
                assistant = {"role": "assistant", "content": None}
                messages.append(assistant)
            assistant.setdefault("tool_calls", []).append(
                {
                    "id": part["id"],
                    "type": "function",
                    "function": {"name": part["name"], "arguments": part["arguments"]},
                }
            )
        elif kind == "tool_result":
            messages.append({"role": "tool", "tool_call_id": part["id"], "content": part["output"]})
            assistant = None
    return messages
