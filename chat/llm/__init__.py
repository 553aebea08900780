"""The only package that knows the openai SDK.

`client` builds one SDK client per event loop from settings (`backends`) and streams a
reply through either the Responses API or Chat Completions; `parsers` turns both stream
formats into the same small events (`TextDelta`, then one `Finished`) and one `Usage`
type (`events`); `errors` turns failures into a `ProviderError` whose message is safe to
show. `demo` is the offline model, and `wire` writes both stream formats for it, the
bench's fake upstream and the tests' fake upstream. The app imports from here; the fakes
use `wire`.
"""

from typing import TYPE_CHECKING, Any

from chat.llm.backends import APIS, Api, Backend, api_named, backend
from chat.llm.bodies import data_url_json
from chat.llm.content import (
    ContextMessage,
    InputFile,
    file_kind,
    files_estimate,
    sees_images,
)
from chat.llm.context import ToolSpec, has_tool_parts, input_items
from chat.llm.errors import ProviderError
from chat.llm.events import (
    Citation,
    Finished,
    ProviderEvent,
    ReasoningDelta,
    ReasoningItem,
    TextDelta,
    ToolCall,
    Usage,
    WebSearch,
    estimate_usage,
)

if TYPE_CHECKING:
    from chat.llm.client import list_models, reset, stream_reply, use_transport

# The SDK is a large import: `client` (which needs it) loads on first use, so commands
# and pages that never call a model (`chat_usage`, the admin) start without it. The
# server loads it at start-up (chatsite/asgi.py), not on its first turn.
_CLIENT_NAMES = {"list_models", "reset", "stream_reply", "use_transport"}


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        from chat.llm import client

        return getattr(client, name)
    raise AttributeError(f"module 'chat.llm' has no attribute {name!r}")


__all__ = [
    "APIS",
    "Api",
    "Backend",
    "Citation",
    "ContextMessage",
    "Finished",
    "InputFile",
    "ProviderError",
    "ProviderEvent",
    "ReasoningDelta",
    "ReasoningItem",
    "TextDelta",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "WebSearch",
    "api_named",
    "backend",
    "data_url_json",
    "estimate_usage",
    "has_tool_parts",
    "input_items",
    "file_kind",
    "files_estimate",
    "list_models",
    "reset",
    "sees_images",
    "stream_reply",
    "use_transport",
]
