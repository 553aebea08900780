"""Tools the model may call: plain Python functions named in `CHAT_TOOLS`.

`registry` loads them and writes each one's JSON schema from its signature and docstring
(pydantic); `runner` runs a call: arguments validated first, sync functions in a thread,
a timeout, and any failure turned into the result the model sees, never a failed turn.
`examples` are the two the demo enables; `mcp` lists and calls MCP servers' tools. The
turn engine offers `tools_available()` and runs the calls.
"""

from chat.tools.mcp import mcp_forget, mcp_tools
from chat.tools.registry import Caller, Tool, ToolError, tool_from, tools_enabled
from chat.tools.runner import ToolResult, tool_run


async def tools_available() -> tuple[dict[str, Tool], dict[str, str]]:
    """Every tool a turn may offer, by name (Python's, then MCP servers'), and why an MCP
    server's tools are missing, by server name."""
    remote, down = await mcp_tools()
    return {**tools_enabled(), **remote}, down


__all__ = [
    "Caller",
    "Tool",
    "ToolError",
    "ToolResult",
    "mcp_forget",
    "mcp_tools",
    "tool_from",
    "tool_run",
    "tools_available",
    "tools_enabled",
]
