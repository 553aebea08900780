"""Tools from MCP servers (`CHAT_MCP_SERVERS`), through the official `mcp` SDK: each
server's tools are listed, kept for `CHAT_MCP_CACHE_SECONDS`, and offered beside the Python
tools as `<server>__<tool>`. A server that does not answer within
`CHAT_MCP_TIMEOUT_SECONDS` offers nothing for a while (`DOWN_SECONDS`) and its tools say
so when called; a turn never fails for it.

    CHAT_MCP_SERVERS={"notes": {"url": "http://127.0.0.1:9000/mcp"},
                      "everything": {"command": "npx",
                                     "args": ["-y", "@modelcontextprotocol/server-everything"],
                                     "tools": ["echo", "get-sum"]}}

Each call opens its own connection (a stdio server is started for it), so a call is
independent of the event loop and the worker it runs on, and Stop ends it with the turn.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pydantic
from django.conf import settings

from chat import llm
from chat.tools.registry import Tool, ToolError
from chat.tools.runner import SEPARATOR

if TYPE_CHECKING:
    from mcp.client.stdio import StdioServerParameters

logger = logging.getLogger("chat")
DOWN_SECONDS = 30.0
_NOT_A_NAME = re.compile(r"[^A-Za-z0-9_-]")


class _AnyArguments(pydantic.BaseModel):
    """An MCP tool's arguments: a JSON object, checked against its schema by its server."""

    model_config = pydantic.ConfigDict(extra="allow")


@dataclass(frozen=True, slots=True)
class McpServer:
    name: str
    url: str = ""
    command: str = ""
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    tools: tuple[str, ...] = ()  # only these, when given

    def target(self) -> str | StdioServerParameters:
        # Imported only when a server is configured: the SDK and its dependencies are
        # tens of MiB per worker that a deployment without MCP does not need.
        from mcp.client.stdio import StdioServerParameters

        if self.url:
            return self.url
        return StdioServerParameters(
            command=self.command, args=list(self.args), env=dict(self.env) or None
        )


@dataclass(slots=True)
class _Listed:
    until: float
    tools: dict[str, Tool] = field(default_factory=dict)
    down: str = ""  # why it offers nothing


_listed: dict[McpServer, _Listed] = {}


def mcp_servers() -> list[McpServer]:
    found = []
    configured: dict[str, dict[str, Any]] = settings.CHAT_MCP_SERVERS or {}
    for name, config in configured.items():
        found.append(
            McpServer(
                name=_NOT_A_NAME.sub("-", name),
                url=str(config.get("url") or ""),
                command=str(config.get("command") or ""),
                args=tuple(str(a) for a in config.get("args") or ()),
                env=tuple(sorted((config.get("env") or {}).items())),
                tools=tuple(config.get("tools") or ()),
            )
        )
    return found


async def mcp_tools() -> tuple[dict[str, Tool], dict[str, str]]:
    """The tools the MCP servers offer now, by name, and a note for each server that is
    down (by server name)."""
    servers = mcp_servers()
    listed = await asyncio.gather(*(_listing(server) for server in servers))
    tools: dict[str, Tool] = {}
    down: dict[str, str] = {}
    for server, found in zip(servers, listed, strict=True):
        tools.update(found.tools)
        if found.down:
            down[server.name] = found.down
    return tools, down


def mcp_forget() -> None:
    """List every server again at the next turn (settings changed)."""
    _listed.clear()


async def _listing(server: McpServer) -> _Listed:
    now = time.monotonic()
    known = _listed.get(server)
    if known is not None and known.until > now:
        return known
    from mcp import Client

    try:
        async with asyncio.timeout(settings.CHAT_MCP_TIMEOUT_SECONDS):
            async with Client(server.target()) as client:
                result = await client.list_tools()
        tools = [
            _tool(server, t.name, t.description or "", t.input_schema)
            for t in result.tools
            if not server.tools or t.name in server.tools
        ]
        known = _Listed(now + settings.CHAT_MCP_CACHE_SECONDS, {t.name: t for t in tools})
    except Exception as exc:  # down, refusing, or not an MCP server: no tools for a while
        why = "did not answer in time" if isinstance(exc, TimeoutError) else _reason(exc)
        logger.warning("MCP server %s %s", server.name, why)
        known = _Listed(now + DOWN_SECONDS, down=f"The MCP server {server.name!r} {why}.")
    _listed[server] = known
    return known


def _reason(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"is unavailable ({type(exc).__name__}: {exc})"[:300]


def _tool(server: McpServer, name: str, description: str, schema: dict[str, Any]) -> Tool:
    offered = f"{server.name}{SEPARATOR}{_NOT_A_NAME.sub('-', name)}"[:64]

    async def call(**arguments: Any) -> str:
        from mcp import Client

        async with Client(server.target()) as client:
            result = await client.call_tool(name, arguments)
        text = "\n".join(_text(block) for block in result.content)
        if result.is_error:
            raise ToolError(text or f"{offered} failed.")
        return text

    spec: llm.ToolSpec = {
        "name": offered,
        "description": description or name,
        "parameters": {k: v for k, v in schema.items() if k != "$schema"},
    }
    return Tool(offered, call, _AnyArguments, spec, None, runner=f"mcp:{server.name}")


def _text(block: Any) -> str:
    text = getattr(block, "text", None)
    if isinstance(text, str):
        return text
    return f"[{getattr(block, 'type', 'content')}]"
