"""Tools the model may call: plain Python functions named in `CHAT_TOOLS`.

`registry` loads them and writes each one's JSON schema from its signature and docstring
(pydantic); `runner` runs a call: arguments validated first, sync functions in a thread,
a timeout, and any failure turned into the result the model sees, never a failed turn.
`examples` are the two the demo enables. The turn engine offers them and runs the calls.
"""

from chat.tools.registry import Caller, Tool, tool_from, tools_enabled
from chat.tools.runner import ToolResult, tool_run

__all__ = ["Caller", "Tool", "ToolResult", "tool_from", "tool_run", "tools_enabled"]
