"""What a streamed reply is made of, whichever API sent it: text deltas, one `Finished`,
and one `Usage` type (the upstream's own counts, or an estimate flagged as such)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

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


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class Finished:
    status: Literal["completed", "incomplete"]
    finish_reason: str
    usage: Usage | None
    response_id: str = ""
    request_id: str = ""


ProviderEvent = TextDelta | Finished


# Rough input tokens of one image or PDF when the upstream reports no usage: OpenAI's
# price for a 512×512 tile at high detail plus its base, a middle-of-the-road guess.
FILE_TOKENS_ESTIMATE = 765


def estimate_usage(*, prompt: str, reply: str) -> Usage:
    """A rough count (4 characters a token) when the upstream sent none; flagged as such."""
    inp, out = estimate_tokens(prompt), estimate_tokens(reply)
    return Usage(input_tokens=inp, output_tokens=out, total_tokens=inp + out, estimated=True)


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)
