"""Loading tools: a dotted path to a plain function (async or sync) with type hints and a
docstring becomes a `Tool`, its arguments a pydantic model and its JSON schema the one
the model is offered. A parameter annotated `Caller` is not offered: it receives who is
asking, so the tool can apply the app's own permissions."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, get_type_hints

import pydantic
from django.conf import settings
from django.core import checks
from django.utils.module_loading import import_string

from chat import llm
from chat.access.owners import Owner

# Who is asking: the owner of the conversation the call is made in.
Caller = Owner
EXAMPLES = (
    "chat.tools.examples.current_time",
    "chat.tools.examples.search_conversations",
)
_ARG_LINE = re.compile(r"^\s*(\w+)\s*(?:\([^)]*\))?\s*:\s*(.+)$")


class ToolError(Exception):
    """A tool's own failure, shown to the model as it is (an MCP server's error result)."""


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    function: Callable[..., Any]
    arguments: type[pydantic.BaseModel]
    spec: llm.ToolSpec
    caller_parameter: str | None  # the parameter that receives who is asking
    runner: str = "python"  # who runs it: this server, or "mcp:<server>"


def tool_from(function: Callable[..., Any]) -> Tool:
    """`function` as a tool: its name, the first paragraph of its docstring as what it
    does, and each parameter's type, default and `Args:` line as its schema."""
    if not inspect.isfunction(function) and not inspect.iscoroutinefunction(function):
        raise TypeError(f"{function!r} is not a function.")
    name = function.__name__
    doc = inspect.getdoc(function) or ""
    summary, arg_docs = _docstring(doc)
    if not summary:
        raise ValueError(f"Tool {name} needs a docstring saying what it does.")
    hints = get_type_hints(function)
    fields: dict[str, Any] = {}
    caller_parameter = None
    for parameter in inspect.signature(function).parameters.values():
        hint = hints.get(parameter.name, Any)
        if hint is Caller:
            caller_parameter = parameter.name
            continue
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[parameter.name] = (
            hint,
            pydantic.Field(default, description=arg_docs.get(parameter.name)),
        )
    model = pydantic.create_model(
        f"{name}_arguments", __config__=pydantic.ConfigDict(extra="forbid"), **fields
    )
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    spec: llm.ToolSpec = {"name": name, "description": summary, "parameters": schema}
    return Tool(name, function, model, spec, caller_parameter)


def _docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The summary (first paragraph, on one line) and the `Args:` section's lines."""
    summary = " ".join(doc.split("\n\n", 1)[0].split())
    args: dict[str, str] = {}
    in_args = False
    for line in doc.splitlines():
        if line.strip() in ("Args:", "Arguments:", "Parameters:"):
            in_args = True
        elif in_args and line.strip() and not line.startswith((" ", "\t")):
            in_args = False
        elif in_args and (match := _ARG_LINE.match(line)):
            args[match.group(1)] = match.group(2).strip()
    return summary, args


def tools_check(**kwargs: Any) -> list[checks.CheckMessage]:
    """`manage.py check` (and start-up): every `CHAT_TOOLS` path is a function that can be
    a tool, and every MCP server names a URL or a command; not the first turn failing."""
    problems: list[checks.CheckMessage] = []
    for path in settings.CHAT_TOOLS or ():
        try:
            tool_from(import_string(path))
        except (ImportError, ValueError, TypeError, pydantic.PydanticUserError) as exc:
            problems.append(
                checks.Error(f"CHAT_TOOLS: {path!r} cannot be a tool: {exc}", id="chat.E101")
            )
    for name, config in (settings.CHAT_MCP_SERVERS or {}).items():
        if not isinstance(config, dict) or not (config.get("url") or config.get("command")):
            problems.append(
                checks.Error(
                    f'CHAT_MCP_SERVERS: {name!r} needs a "url" or a "command".',
                    id="chat.E102",
                )
            )
    return problems


@cache
def _loaded(paths: tuple[str, ...]) -> dict[str, Tool]:
    tools = [tool_from(import_string(path)) for path in paths]
    return {tool.name: tool for tool in tools}


def tools_enabled() -> dict[str, Tool]:
    """The tools offered, by name: `CHAT_TOOLS`, or the examples with the demo model.
    Loaded once per setting (a bad path fails the first turn loudly, in the log)."""
    paths = settings.CHAT_TOOLS
    if paths is None:
        paths = list(EXAMPLES) if llm.backend().is_demo else []
    return _loaded(tuple(paths))
