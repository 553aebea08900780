"""A reply's parts and model calls on its admin page: what it thought, which tools it
called with what, what they answered, and each call's tokens and cost. All escaped."""

from __future__ import annotations

from typing import Any

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import Truncator

PREVIEW_CHARS = 2000


def parts_table(parts: list[dict[str, Any]] | None) -> SafeString | str:
    if not parts:
        return "—"
    rows = format_html_join(
        "",
        "<tr><th>{}</th><td>{}</td><td><pre>{}</pre></td></tr>",
        (
            (index, _kind(part), Truncator(_body(part)).chars(PREVIEW_CHARS))
            for index, part in enumerate(parts, 1)
        ),
    )
    return format_html('<table class="reply-parts">{}</table>', rows)


def _kind(part: dict[str, Any]) -> str:
    kind = str(part.get("type"))
    if kind == "tool_call":
        return f"tool call: {part.get('name')} ({part.get('runner')}, {part.get('id')})"
    if kind == "tool_result":
        state = "error" if part.get("error") else "result"
        return f"tool {state}: {part.get('name')} in {part.get('duration_ms')} ms"
    if kind == "reasoning":
        took = part.get("duration_ms")
        opaque = ", with the provider's item" if part.get("item") else ""
        return f"reasoning ({took} ms{opaque})" if took is not None else f"reasoning{opaque}"
    return kind


def _body(part: dict[str, Any]) -> str:
    kind = part.get("type")
    if kind == "tool_call":
        return str(part.get("arguments") or "")
    if kind == "tool_result":
        return str(part.get("output") or "")
    return str(part.get("text") or "")


def rounds_table(rounds: list[dict[str, Any]] | None) -> SafeString | str:
    if not rounds:
        return "—"
    rows = format_html_join(
        "",
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
        "<td>{}</td></tr>",
        (
            (
                index,
                r.get("response_id") or "",
                r.get("finish_reason") or "",
                *_tokens(r),
                r.get("cost") or "—",
                _tool_calls(r),
            )
            for index, r in enumerate(rounds, 1)
        ),
    )
    return format_html(
        "<table><tr><th>#</th><th>response</th><th>finish</th><th>in</th><th>out</th>"
        "<th>reasoning</th><th>cost</th><th>tool calls it asked for</th></tr>{}</table>",
        rows,
    )


def _tool_calls(r: dict[str, Any]) -> str:
    """The round's tool calls, each with its price when it has one (escaped by the caller)."""
    calls = [
        f"{call['tool']} {call['cost']}" if call.get("cost") else call["tool"]
        for call in r.get("tool_calls") or ()
    ]
    return ", ".join(calls) or "—"


def _tokens(r: dict[str, Any]) -> tuple[str, str, str]:
    usage = r.get("usage") or {}
    approx = "≈" if r.get("usage_estimated") else ""
    tokens_in, tokens_out, thinking = (
        f"{approx}{usage.get(key, '')}"
        for key in ("input_tokens", "output_tokens", "reasoning_tokens")
    )
    return tokens_in, tokens_out, thinking
