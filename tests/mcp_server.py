"""A small MCP server of our own (the `mcp` SDK's MCPServer) that the tests start over
stdio: `python -m tests.mcp_server`."""

from __future__ import annotations

import time

from mcp.server.mcpserver import MCPServer

server = MCPServer("test-notes")


@server.tool()
def shout(text: str) -> str:
    """The text in capital letters."""
    return text.upper()


@server.tool()
def refuse(reason: str) -> str:
    """Always fails with the reason given."""
    raise ValueError(reason)


@server.tool()
def nap(seconds: float) -> str:
    """Sleeps, then says so."""
    time.sleep(seconds)
    return f"slept {seconds}"


if __name__ == "__main__":
    server.run()
