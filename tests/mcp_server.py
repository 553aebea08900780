"""A small MCP server of our own (the `mcp` SDK's MCPServer) that the tests start over
stdio, `python -m tests.mcp_server`, or over streamable HTTP,
`python -m tests.mcp_server --port 8123` (served at `/mcp`)."""

from __future__ import annotations

import sys
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
    if "--port" in sys.argv:
        port = int(sys.argv[sys.argv.index("--port") + 1])
        server.run("streamable-http", host="127.0.0.1", port=port)
    else:
        server.run()
