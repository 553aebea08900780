"""The two OpenAI stream formats, written: Responses API events and Chat Completions
chunks, the usage object of each API, the bodies of replies that are not streamed, the
error body, and the SSE framing of one payload.

The offline demo model, the bench's fake upstream and the tests' scripted upstream all
speak through this module, and `parsers` reads what it writes, so a change to either
format is made once. Pure functions and no I/O: each caller adds its own transport and
pacing (a `Stream` keeps the text deltas apart from what comes before and after them).
Nothing here reads Django settings, so the bench runs it without any.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import count
from typing import Any, Literal

JsonObject = dict[str, Any]
# A string goes out as it is: `DONE`, or (in tests) JSON written by hand.
Payload = JsonObject | str
ResponseStatus = Literal["in_progress", "completed", "incomplete", "failed"]

DONE = "[DONE]"

# Built once: `json.dumps` with arguments builds an encoder per call, which the bench's
# fake upstream would pay per token. Payloads are plain JSON trees, never cyclic.
_encode_json = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), check_circular=False
).encode


@dataclass(frozen=True, slots=True)
class Stream:
    """One streamed reply in the order its API sends it: the payloads before the text,
    one per text part, and the ones after it. Callers pace the deltas (the demo, the
    bench) or cut the stream anywhere (tests)."""

    head: list[Payload]
    deltas: list[Payload]
    tail: list[Payload]

    def __iter__(self) -> Iterator[Payload]:
        yield from self.head
        yield from self.deltas
        yield from self.tail


@dataclass(frozen=True, slots=True)
class WireToolCall:
    """A function call as a stream sends it: its id, name, and its JSON arguments in the
    fragments they arrive in."""

    call_id: str
    name: str
    fragments: Sequence[str]

    @property
    def arguments(self) -> str:
        return "".join(self.fragments)


def sse_frame(payload: Payload) -> bytes:
    """One SSE event: `data: <payload>` and a blank line. A Responses event (an object with
    a `type`) is also named on an `event:` line, as OpenAI names them; Chat Completions
    chunks are not. JSON is compact with non-ASCII left raw, so readers meet emoji and
    U+2028 unescaped; JSON escapes CR and LF, so one `data:` line always holds it."""
    if isinstance(payload, str):
        return b"data: %s\n\n" % payload.encode()
    data = _encode_json(payload).encode()
    kind = payload.get("type")
    if isinstance(kind, str):
        return b"event: %s\ndata: %s\n\n" % (kind.encode(), data)
    return b"data: %s\n\n" % data


def api_error(
    message: str, *, error_type: str = "server_error", code: str | None = None
) -> JsonObject:
    """OpenAI's error object: the body of a failed request, and also the chunk that ends a
    Chat Completions stream that fails after it started."""
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


# --- Responses API ---------------------------------------------------------------------


def responses_usage(
    *, input_tokens: int, output_tokens: int, cached_tokens: int = 0, reasoning_tokens: int = 0
) -> JsonObject:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached_tokens},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": input_tokens + output_tokens,
    }


def responses_body(
    text: str | None,
    *,
    response_id: str,
    model: str,
    created_at: int = 0,
    status: ResponseStatus = "completed",
    usage: JsonObject | None = None,
    incomplete_reason: str | None = None,
    error: JsonObject | None = None,
) -> JsonObject:
    """A `response` object: the body of a reply that is not streamed, and what a stream's
    first and last events carry. `text=None` is a response with no output item yet."""
    output = [] if text is None else [_message(_item_id(response_id), status, text)]
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "error": error,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage,
    }


def responses_stream(
    parts: Sequence[str],
    *,
    response_id: str,
    model: str,
    created_at: int = 0,
    usage: JsonObject | None = None,
    status: Literal["completed", "incomplete"] = "completed",
    incomplete_reason: str | None = None,
    reasoning: Sequence[str] = (),
    tool_calls: Sequence[WireToolCall] = (),
    web_searches: Sequence[str] = (),
    citations: Sequence[JsonObject] = (),
) -> Stream:
    """The events of a streamed reply whose text arrives as `parts`: the response created
    and in progress, its message and content part opened, a delta per part, the text and
    part and message done, then `response.completed` or `response.incomplete` with usage.

    With `reasoning`, a reasoning item comes first, its summary streamed a delta per piece
    (`response.reasoning_summary_text.delta`). With `tool_calls`, a `function_call` item
    each follows the text (no message item when there is no text), its arguments streamed
    in their fragments (`response.function_call_arguments.delta`). `web_searches` are
    hosted `web_search_call` items (one per query) before the message, and `citations`
    (`url_citation` annotations: url, title, start_index, end_index) are added to its text
    after the last delta (`response.output_text.annotation.added`)."""
    numbers = count()
    item_id = _item_id(response_id)
    place = {"item_id": item_id, "output_index": 0, "content_index": 0}
    text = "".join(parts)
    output: list[JsonObject] = []

    def event(kind: str, **fields: Any) -> JsonObject:
        return {"type": kind, "sequence_number": next(numbers), **fields}

    started = responses_body(
        None, response_id=response_id, model=model, created_at=created_at, status="in_progress"
    )
    head: list[Payload] = [
        event("response.created", response=started),
        event("response.in_progress", response=started),
    ]
    deltas: list[Payload] = []
    if reasoning:
        rs_id = "rs_" + response_id.removeprefix("resp_")
        rs_place = {"item_id": rs_id, "output_index": len(output), "summary_index": 0}
        summary = "".join(reasoning)
        rs_item: JsonObject = {"id": rs_id, "type": "reasoning", "summary": []}
        head += [
            event("response.output_item.added", output_index=len(output), item=rs_item),
            event("response.reasoning_summary_part.added", **rs_place, part=_summary("")),
        ]
        done_item = {**rs_item, "summary": [_summary(summary)]}
        deltas += [
            event("response.reasoning_summary_text.delta", **rs_place, delta=piece)
            for piece in reasoning
        ]
        deltas += [
            event("response.reasoning_summary_text.done", **rs_place, text=summary),
            event("response.reasoning_summary_part.done", **rs_place, part=_summary(summary)),
            event("response.output_item.done", output_index=len(output), item=done_item),
        ]
        output.append(done_item)
    for number, query in enumerate(web_searches):
        ws_id = f"ws_{number}_" + response_id.removeprefix("resp_")
        ws_place = {"item_id": ws_id, "output_index": len(output)}
        searching: JsonObject = {"id": ws_id, "type": "web_search_call", "status": "in_progress"}
        searched = {
            **searching,
            "status": "completed",
            "action": {"type": "search", "query": query},
        }
        # After the reasoning item, in output order, when there is one.
        (deltas if reasoning else head).extend(
            [
                event("response.output_item.added", output_index=len(output), item=searching),
                event("response.web_search_call.in_progress", **ws_place),
                event("response.web_search_call.searching", **ws_place),
                event("response.web_search_call.completed", **ws_place),
                event("response.output_item.done", output_index=len(output), item=searched),
            ]
        )
        output.append(searched)
    with_message = bool(parts) or not tool_calls
    if with_message:
        place["output_index"] = len(output)
        opened: list[Payload] = [
            event(
                "response.output_item.added",
                output_index=len(output),
                item=_message(item_id, "in_progress"),
            ),
            event("response.content_part.added", **place, part=_output_text("")),
        ]
        (deltas if reasoning else head).extend(opened)
        deltas += [
            event("response.output_text.delta", **place, delta=part, logprobs=[]) for part in parts
        ]
    message = _message(item_id, status, text)
    annotations = [{"type": "url_citation", **citation} for citation in citations]
    message["content"][0]["annotations"] = annotations
    tail: list[Payload] = [
        event("response.output_text.annotation.added", **place, annotation_index=i, annotation=a)
        for i, a in enumerate(annotations)
    ]
    if with_message:
        tail += [
            event("response.output_text.done", **place, text=text, logprobs=[]),
            event("response.content_part.done", **place, part=message["content"][0]),
            event("response.output_item.done", output_index=len(output), item=message),
        ]
        output.append(message)
    for call in tool_calls:
        fc_id = "fc_" + call.call_id.removeprefix("call_")
        fc_place = {"item_id": fc_id, "output_index": len(output)}
        item = {
            "id": fc_id,
            "type": "function_call",
            "status": "in_progress",
            "arguments": "",
            "call_id": call.call_id,
            "name": call.name,
        }
        done = {**item, "status": "completed", "arguments": call.arguments}
        tail.append(event("response.output_item.added", output_index=len(output), item=item))
        tail += [
            event("response.function_call_arguments.delta", **fc_place, delta=fragment)
            for fragment in call.fragments
        ]
        tail += [
            event("response.function_call_arguments.done", **fc_place, arguments=call.arguments),
            event("response.output_item.done", output_index=len(output), item=done),
        ]
        output.append(done)
    finished = responses_body(
        None,
        response_id=response_id,
        model=model,
        created_at=created_at,
        status=status,
        usage=usage,
        incomplete_reason=incomplete_reason,
    )
    finished["output"] = output
    tail.append(event(f"response.{status}", response=finished))
    return Stream(head, deltas, tail)


def _summary(text: str) -> JsonObject:
    return {"type": "summary_text", "text": text}


def responses_error(
    message: str, *, sequence_number: int, code: str = "server_error"
) -> JsonObject:
    """The `error` event: the stream fails without a response object."""
    return {
        "type": "error",
        "sequence_number": sequence_number,
        "code": code,
        "message": message,
        "param": None,
    }


def responses_failed(
    message: str,
    *,
    sequence_number: int,
    response_id: str,
    model: str,
    created_at: int = 0,
    code: str = "server_error",
) -> JsonObject:
    """The `response.failed` event: the response ends with an error instead of output."""
    response = responses_body(
        None,
        response_id=response_id,
        model=model,
        created_at=created_at,
        status="failed",
        error={"code": code, "message": message},
    )
    return {"type": "response.failed", "sequence_number": sequence_number, "response": response}


def _item_id(response_id: str) -> str:
    return "msg_" + response_id.removeprefix("resp_")


def _message(item_id: str, status: ResponseStatus, text: str | None = None) -> JsonObject:
    content = [] if text is None else [_output_text(text)]
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "content": content,
        "role": "assistant",
    }


def _output_text(text: str) -> JsonObject:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


# --- Chat Completions -----------------------------------------------------------------


def chat_usage(
    *,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
    reasoning_tokens: int = 0,
) -> JsonObject:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
    }


def chat_body(
    text: str,
    *,
    completion_id: str,
    model: str,
    created: int = 0,
    usage: JsonObject | None = None,
    finish_reason: str = "stop",
) -> JsonObject:
    """A `chat.completion`: the body of a reply that is not streamed."""
    message = {"role": "assistant", "content": text, "refusal": None}
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        ],
        "usage": usage,
    }


def chat_stream(
    parts: Sequence[str],
    *,
    completion_id: str,
    model: str,
    created: int = 0,
    usage: JsonObject | None = None,
    usage_on_finish_chunk: bool = False,
    finish_reason: str = "stop",
    reasoning: Sequence[str] = (),
    reasoning_field: Literal["reasoning_content", "reasoning"] = "reasoning_content",
    tool_calls: Sequence[WireToolCall] = (),
) -> Stream:
    """The chunks of a streamed reply whose text arrives as `parts`: the role, a chunk per
    part, the finish reason, then `[DONE]`. `reasoning` comes first, a chunk per piece, in
    `reasoning_field` (vLLM, DeepSeek and llama.cpp's name, or Ollama's); `tool_calls`
    follow the text, each opened with its id and name and then a chunk per fragment of its
    arguments, keyed by `index`, and the finish reason becomes `tool_calls`.

    With `usage`, as OpenAI answers
    `stream_options.include_usage`: every chunk carries `"usage": null` and one more chunk
    with no choices carries the usage, just before `[DONE]`. Some compatible servers put
    it on the finish chunk instead (`usage_on_finish_chunk`)."""
    usage_alone = usage is not None and not usage_on_finish_chunk

    def chunk(delta: JsonObject, finish: str | None = None) -> JsonObject:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        data = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [choice],
        }
        if usage_alone:
            data["usage"] = None
        return data

    head: list[Payload] = [chunk({"role": "assistant", "content": "", "refusal": None})]
    deltas: list[Payload] = [chunk({reasoning_field: piece}) for piece in reasoning]
    deltas += [chunk({"content": part}) for part in parts]
    for index, call in enumerate(tool_calls):
        opened = {"index": index, "id": call.call_id, "type": "function"}
        deltas.append(
            chunk({"tool_calls": [{**opened, "function": {"name": call.name, "arguments": ""}}]})
        )
        deltas += [
            chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})
            for fragment in call.fragments
        ]
    if tool_calls and finish_reason == "stop":
        finish_reason = "tool_calls"
    finish = chunk({}, finish_reason)
    if usage is not None and usage_on_finish_chunk:
        finish["usage"] = usage
    tail: list[Payload] = [finish]
    if usage_alone:
        tail.append({**chunk({}), "choices": [], "usage": usage})
    tail.append(DONE)
    return Stream(head, deltas, tail)
