"""What a streamed reply is made of, whichever API sent it: text deltas, reasoning summary
deltas and the opaque reasoning item, tool calls, one `Finished`, and one `Usage` type (the
upstream's own counts, or an estimate flagged as such)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from chat.streams import UsageData


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False

    def as_dict(self) -> UsageData:
        """The counts, as the API and a message's row name them."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "cached_tokens": self.cached_tokens,
            "reasoning_tokens": self.reasoning_tokens,
        }

    def __add__(self, other: Usage) -> Usage:
        """Two rounds of one turn: the turn's usage is their sum (estimated if either is)."""
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            estimated=self.estimated or other.estimated,
        )


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """A piece of the model's reasoning summary (Responses) or reasoning text (Chat
    Completions servers that stream `reasoning_content` or `reasoning`)."""

    text: str


@dataclass(frozen=True, slots=True)
class ReasoningItem:
    """The provider's reasoning output item as it sent it (Responses): sent back before
    the tool call it led to, which reasoning models require."""

    item: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model asks for a function to be run: `arguments` is its JSON text, unparsed."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class WebSearch:
    """The provider's hosted web search (Responses `web_search`): under way, then done
    with the query it ran."""

    item_id: str
    status: Literal["searching", "completed"]
    query: str = ""


@dataclass(frozen=True, slots=True)
class Citation:
    """A source the text cites (a `url_citation` annotation): characters
    `start_index`–`end_index` of the reply's text."""

    url: str
    title: str
    start_index: int
    end_index: int


@dataclass(frozen=True, slots=True)
class Finished:
    status: Literal["completed", "incomplete"]
    finish_reason: str
    usage: Usage | None
    response_id: str = ""
    request_id: str = ""
    web_searches: int = 0  # hosted searches run, priced per call


ProviderEvent = (
    TextDelta | ReasoningDelta | ReasoningItem | ToolCall | WebSearch | Citation | Finished
)


# Rough input tokens of one image or PDF when the upstream reports no usage: OpenAI's
# price for a 512×512 tile at high detail plus its base, a middle-of-the-road guess.
FILE_TOKENS_ESTIMATE = 765


def estimate_usage(*, prompt: str, reply: str) -> Usage:
    """A rough count (4 characters a token) when the upstream sent none; flagged as such."""
    inp, out = estimate_tokens(prompt), estimate_tokens(reply)
    return Usage(input_tokens=inp, output_tokens=out, total_tokens=inp + out, estimated=True)


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)
