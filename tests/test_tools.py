"""chat.tools: schemas from signatures, validation, threads, timeouts, failures as results,
who is asking, and the two example tools."""

from __future__ import annotations

import json
import threading

import pytest

from chat import llm
from chat.access.owners import Owner
from chat.models import Conversation, Message
from chat.tools import tool_from, tool_run, tools_enabled
from chat.tools.examples import current_time, search_conversations
from tests import tool_functions

TEST_TOOLS = [f"tests.tool_functions.{name}" for name in ("add", "whoami", "explode", "slow")]
ADA = Owner(user_id=None, anonymous_key="ada-key")


@pytest.fixture
def tools(settings):
    settings.CHAT_TOOLS = TEST_TOOLS
    return tools_enabled()


def call(name: str, arguments: object) -> llm.ToolCall:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return llm.ToolCall(call_id="call_1", name=name, arguments=text)


def test_the_schema_comes_from_the_signature_and_the_docstring():
    assert tool_from(tool_functions.add).spec == {
        "name": "add",
        "description": "Add two whole numbers.",
        "parameters": {
            "type": "object",
            "properties": {
                "a": {"type": "integer", "description": "The first number."},
                "b": {"type": "integer", "description": "The second number.", "default": 1},
            },
            "required": ["a"],
            "additionalProperties": False,
        },
    }


def test_who_is_asking_is_not_offered_to_the_model():
    tool = tool_from(tool_functions.whoami)
    assert tool.spec["parameters"]["properties"] == {}
    assert tool.caller_parameter == "caller"


def test_a_function_without_a_docstring_is_refused():
    def nameless(x: int) -> int:
        return x

    with pytest.raises(ValueError, match="docstring"):
        tool_from(nameless)


def test_the_examples_are_enabled_only_with_the_demo_model_unless_configured(settings):
    settings.CHAT_TOOLS = None
    settings.CHAT_PROVIDER = "demo"
    llm.reset()
    assert sorted(tools_enabled()) == ["current_time", "search_conversations"]
    settings.CHAT_PROVIDER = "openai"
    settings.OPENAI_BASE_URL = "http://upstream.test/v1"
    llm.reset()
    assert tools_enabled() == {}


@pytest.mark.asyncio
async def test_a_sync_tool_runs_in_a_thread_with_validated_arguments(tools):
    result = await tool_run(tools=tools, call=call("add", {"a": 2, "b": "3"}), caller=ADA)
    assert (result.output, result.error) == ("5", False)
    assert tool_functions.ran_in[-1] != threading.get_ident()


@pytest.mark.asyncio
async def test_an_async_tool_gets_who_is_asking(tools):
    result = await tool_run(tools=tools, call=call("whoami", {}), caller=ADA)
    assert json.loads(result.output) == {"user_id": None, "anonymous_key": "ada-key"}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("name", "arguments", "says"),
    [
        ("nope", {}, "There is no tool named 'nope'. Tools: add, explode, slow, whoami."),
        ("add", "{not json", "Invalid arguments for add: arguments: Invalid JSON"),
        ("add", {"b": 2}, "Invalid arguments for add: a: Field required."),
        ("add", {"a": "two"}, "Invalid arguments for add: a: Input should be a valid integer"),
        ("add", {"a": 1, "c": 2}, "Invalid arguments for add: c: Extra inputs are not permitted."),
        ("explode", {"reason": "boom"}, "explode failed: RuntimeError: boom"),
    ],
)
async def test_bad_calls_become_results_the_model_can_read(tools, name, arguments, says):
    result = await tool_run(tools=tools, call=call(name, arguments), caller=ADA)
    assert result.error is True
    assert result.output.startswith(says)


@pytest.mark.asyncio
async def test_a_tool_that_hangs_is_timed_out(tools, settings):
    settings.CHAT_TOOL_TIMEOUT_SECONDS = 0.1
    result = await tool_run(tools=tools, call=call("slow", {"seconds": 30}), caller=ADA)
    assert (result.output, result.error) == ("slow did not answer within 0.1 seconds.", True)
    assert result.duration_ms < 2000


def test_current_time_knows_cities_and_zones():
    assert current_time("Tokyo")["timezone"] == "Asia/Tokyo"
    assert current_time("Europe/Paris")["iso"].endswith(("+01:00", "+02:00"))
    with pytest.raises(ValueError, match="unknown time zone 'Atlantis'"):
        current_time("Atlantis")


@pytest.mark.django_db(transaction=True)  # SQLite's FTS5 index sees committed rows
def test_search_conversations_finds_only_the_askers_own():
    mine = Conversation.objects.create(anonymous_key="ada-key", title="Budget", model="m")
    theirs = Conversation.objects.create(anonymous_key="bob-key", title="Bob's", model="m")
    Message.objects.create(conversation=mine, role="user", content="the invoice for March")
    Message.objects.create(conversation=theirs, role="user", content="bob's invoice secret")
    found = search_conversations("invoice", caller=ADA)
    assert [(hit["title"], hit["text"]) for hit in found] == [("Budget", "the invoice for March")]


def test_the_system_check_names_a_path_that_is_no_tool_and_an_mcp_server_without_target(
    settings,
):
    from chat.tools.registry import tools_check

    settings.CHAT_TOOLS = ["tests.tool_functions.add", "tests.tool_functions.nope", "math.pi"]
    settings.CHAT_MCP_SERVERS = {"half": {"args": ["x"]}}
    found = [(m.id, m.msg.split(":")[1].strip()) for m in tools_check()]
    assert found == [
        ("chat.E101", "'tests.tool_functions.nope' cannot be a tool"),
        ("chat.E101", "'math.pi' cannot be a tool"),
        ("chat.E102", '\'half\' needs a "url" or a "command".'),
    ]
