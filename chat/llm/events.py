"""What a streamed reply is made of, whichever API sent it: text deltas, one `Finished`,
and one `Usage` type (the upstream's own counts, or an estimate flagged as such)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False

    def as_dict(self) -> dict[str, int]:
        data = asdict(self)
        del data["estimated"]
        return data


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


def estimate_usage(*, prompt: str, reply: str) -> Usage:
    """A rough count (4 characters a token) when the upstream sent none; flagged as such."""
    inp, out = estimate_tokens(prompt), estimate_tokens(reply)
    return Usage(input_tokens=inp, output_tokens=out, total_tokens=inp + out, estimated=True)


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)
