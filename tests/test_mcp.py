"""chat/tools/mcp.py against real MCP servers over stdio: one of our own (the `mcp` SDK's
MCPServer, tests/mcp_server.py) and the reference `server-everything` from npm, which
nobody here wrote. A server that is down offers nothing and never fails a turn."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chat.llm import wire
from chat.models import Message
from chat.tools import mcp_forget, mcp_tools, tool_run
from chat.tools.registry import Caller
from tests.asgi import AsgiClient
from tests.servers import free_port, start, stop
from tests.upstream import MODEL, Reply

pytestmark = [pytest.mark.asyncio]

ROOT = Path(__file__).resolve().parent.parent
EVERYTHING = ROOT / "tests/mcp/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
OURS = {
    "command": sys.executable,
    "args": ["-m", "tests.mcp_server"],
    "env": {"PYTHONPATH": str(ROOT)},
}
ASKER = Caller(anonymous_key="someone")


@pytest.fixture(autouse=True)
def _fresh_listing():
    mcp_forget()
    yield
    mcp_forget()


@pytest.fixture(scope="session")
def everything() -> dict[str, object]:
    if not EVERYTHING.exists():
        if shutil.which("npm") is None:
            pytest.skip("npm is missing (the reference MCP server comes from npm)")
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=ROOT / "tests/mcp",
            check=True,
            capture_output=True,
        )
    return {"command": "node", "args": [str(EVERYTHING), "stdio"], "tools": ["echo", "get-sum"]}


def call(name: str, arguments: str):
    from chat import llm

    return llm.ToolCall(call_id="call_1", name=name, arguments=arguments)


async def test_our_servers_tools_are_listed_with_their_schemas_and_called(settings):
    settings.CHAT_MCP_SERVERS = {"notes": OURS}
    tools, down = await mcp_tools()
    assert down == {}
    assert sorted(tools) == ["notes__nap", "notes__refuse", "notes__shout"]
    shout = tools["notes__shout"]
    assert shout.runner == "mcp:notes"
    assert shout.spec["description"] == "The text in capital letters."
    assert shout.spec["parameters"]["properties"]["text"]["type"] == "string"
    assert shout.spec["parameters"]["required"] == ["text"]

    result = await tool_run(tools=tools, call=call("notes__shout", '{"text": "hi"}'), caller=ASKER)
    assert (result.output, result.error) == ("HI", False)
    refused = await tool_run(
        tools=tools, call=call("notes__refuse", '{"reason": "no"}'), caller=ASKER
    )
    assert refused.error is True and "Error executing tool refuse" in refused.output
    wrong = await tool_run(tools=tools, call=call("notes__shout", '{"txt": 1}'), caller=ASKER)
    assert wrong.error is True and "text" in wrong.output and "Field required" in wrong.output


@pytest.fixture(scope="module")
def http_server():
    """Our server over streamable HTTP, in a process of its own."""
    port = free_port()
    proc = start(
        [sys.executable, "-m", "tests.mcp_server", "--port", str(port)], dict(os.environ), port
    )
    yield f"http://127.0.0.1:{port}/mcp"
    stop(proc)


async def test_a_streamable_http_server_is_listed_and_called(settings, http_server):
    settings.CHAT_MCP_SERVERS = {"web": {"url": http_server, "tools": ["shout"]}}
    tools, down = await mcp_tools()
    assert (sorted(tools), down) == (["web__shout"], {})
    assert tools["web__shout"].runner == "mcp:web"
    result = await tool_run(tools=tools, call=call("web__shout", '{"text": "über"}'), caller=ASKER)
    assert (result.output, result.error) == ("ÜBER", False)


async def test_a_hanging_mcp_tool_is_timed_out(settings):
    settings.CHAT_MCP_SERVERS = {"notes": OURS}
    settings.CHAT_TOOL_TIMEOUT_SECONDS = 1
    tools, _ = await mcp_tools()
    result = await tool_run(tools=tools, call=call("notes__nap", '{"seconds": 30}'), caller=ASKER)
    assert (result.output, result.error) == ("notes__nap did not answer within 1 seconds.", True)


async def test_the_reference_server_everything_from_npm(settings, everything):
    settings.CHAT_MCP_SERVERS = {"everything": everything}
    tools, down = await mcp_tools()
    assert down == {}
    assert sorted(tools) == ["everything__echo", "everything__get-sum"]  # only those asked for
    echoed = await tool_run(
        tools=tools, call=call("everything__echo", '{"message": "hi ✨"}'), caller=ASKER
    )
    assert (echoed.output, echoed.error) == ("Echo: hi ✨", False)
    summed = await tool_run(
        tools=tools, call=call("everything__get-sum", '{"a": 2, "b": 40}'), caller=ASKER
    )
    assert "42" in summed.output and summed.error is False


async def test_a_server_that_is_down_offers_nothing_and_says_why(settings):
    settings.CHAT_MCP_SERVERS = {"gone": {"command": "/nonexistent/mcp-server"}, "notes": OURS}
    tools, down = await mcp_tools()
    assert "notes__shout" in tools and not any(name.startswith("gone__") for name in tools)
    assert down["gone"].startswith("The MCP server 'gone' is unavailable (")
    result = await tool_run(
        tools=tools, call=call("gone__anything", "{}"), caller=ASKER, unavailable=down
    )
    assert result.error is True and result.output == down["gone"]


@pytest.mark.django_db(transaction=True)
async def test_a_turn_calls_an_mcp_tool_and_a_down_server_does_not_fail_it(upstream, settings):
    settings.CHAT_MCP_SERVERS = {"notes": OURS, "gone": {"url": "http://127.0.0.1:9/mcp"}}
    settings.CHAT_MCP_TIMEOUT_SECONDS = 5
    shout = wire.WireToolCall("call_m", "notes__shout", ['{"text": ', '"quiet"}'])
    for n, (parts, calls) in enumerate([([], [shout]), (["QUIET it is."], [])], 1):
        stream = wire.chat_stream(
            parts,
            completion_id=f"c{n}",
            model=MODEL,
            usage=wire.chat_usage(prompt_tokens=5, completion_tokens=2),
            tool_calls=calls,
        )
        upstream.queue(Reply(script=list(stream)))
    reply = (await AsgiClient().post("/api/chat", {"message": "shout quiet"})).json()

    assert reply["status"] == "completed" and reply["reply"] == "QUIET it is."
    offered = sorted(t["function"]["name"] for t in upstream.bodies[0]["tools"])
    assert offered == ["notes__nap", "notes__refuse", "notes__shout"]
    call_part, result_part, _ = reply["parts"]
    assert call_part["runner"] == "mcp:notes" and result_part["output"] == "QUIET"
    row = await Message.objects.aget(pk=reply["message"])
    assert row.parts[1]["output"] == "QUIET" and len(row.rounds) == 2
