"""One error taxonomy (chat/errors.py): every error type the code can answer has the HTTP
status the contract gives it, in one table; a JSON error is answered with its type's
status; and a failed stream's `error` event carries that status (`error.http_status`) in
SSE, NDJSON, the folded JSON, a resumed stream and a replay from the database."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import httpx2
import pytest

from chat.errors import (
    DJANGO_ERRORS,
    HTTP_STATUS,
    ChatError,
    error_response,
    http_status,
    status_error,
)
from chat.llm import ProviderError
from chat.models import Message
from tests.asgi import AsgiClient, asgi_request, parse_ndjson, parse_sse
from tests.upstream import Reply

CHAT = Path(__file__).resolve().parent.parent / "chat"

# The contract's statuses (CONTRACT.md, "Error statuses"), by status.
CONTRACT = {
    400: [
        "bad_request",
        "invalid_request",
        "invalid_json",
        "empty_message",
        "invalid_model",
        "invalid_api",
        "invalid_cursor",
        "invalid_limit",
        "invalid_title",
        "invalid_format",
        "upstream_bad_request",
        # Attachments (README "Attachments").
        "empty_file",
        "invalid_file",
        "model_cannot_see_images",
    ],
    401: ["authentication_required", "invalid_token", "unauthorized"],
    403: ["forbidden", "cross_origin"],
    404: ["not_found"],
    405: ["method_not_allowed"],
    406: ["not_acceptable"],
    409: ["not_last_turn", "turn_in_progress", "still_streaming"],
    413: [
        "request_too_large",
        "body_too_large",
        "message_too_long",
        "system_too_long",
        "file_too_large",
        "image_too_large",
        "too_many_files",
        "daily_upload_limit",
    ],
    415: ["unsupported_media_type", "unsupported_file_type"],
    429: [
        "rate_limited",
        "quota_exceeded",
        "too_many_streams",
        "budget_exceeded",
        "upstream_rate_limit",
    ],
    500: ["server_error"],
    502: ["upstream_auth", "upstream_unreachable", "upstream_error", "interrupted", "stale"],
    504: ["upstream_timeout"],
}
CASES = [(type, status) for status, types in CONTRACT.items() for type in types]


@pytest.mark.parametrize(("error_type", "status"), CASES, ids=[type for type, _ in CASES])
def test_every_error_type_has_the_contracts_status(error_type, status):
    assert HTTP_STATUS[error_type] == status
    assert http_status(error_type) == status
    assert ChatError(error_type, "Refused.").status == status
    assert error_response(error_type, "Refused.").status_code == status


def test_the_table_holds_the_contracts_types_and_no_others():
    assert len(CASES) == len(set(HTTP_STATUS))
    assert set(HTTP_STATUS) == {type for type, _ in CASES}


def test_a_type_no_version_of_the_table_named_stands_for_a_bad_gateway():
    # e.g. a row stored by an older version under a name since retired
    assert http_status("upstream_something_new") == 502


@pytest.mark.parametrize("kind", list(ProviderError.TYPE_BY_KIND))
def test_upstream_failures_take_their_status_from_the_table(kind):
    error = ProviderError(kind, "It failed.")
    assert error.status == HTTP_STATUS[error.error_type]
    assert error.detail() == {
        "type": error.error_type,
        "message": "It failed.",
        "http_status": HTTP_STATUS[error.error_type],
    }


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, "bad_request"),
        (403, "forbidden"),
        (404, "not_found"),
        (405, "method_not_allowed"),
        (413, "request_too_large"),
        (500, "server_error"),
        (418, "bad_request"),  # a status we have no type for: its class's
        (503, "server_error"),
    ],
)
def test_errors_django_answered_itself_get_a_type_for_their_status(status, error_type):
    response = status_error(status)
    assert response.status_code == status
    assert response.content.startswith(f'{{"error": {{"type": "{error_type}", '.encode())
    assert error_type in DJANGO_ERRORS


# --- Every type the code answers is in the table --------------------------------------

# Called with an error type as their first argument, or (`bad_request`) their second;
# `super().__init__` is a `ChatError` subclass naming its type.
FIRST_ARGUMENT_TYPES = {"ChatError", "LimitExceeded", "error_detail", "error_response", "__init__"}
SECOND_ARGUMENT_TYPES = {"bad_request"}
# The model provider's own error shape, which the demo model speaks: not ours.
UPSTREAM_SIDE = {"llm/demo.py", "llm/wire.py"}


def _called(node: ast.Call) -> str:
    func = node.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")


def _literal(node: ast.expr | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _types_in(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        candidates: list[ast.expr | None] = []
        if isinstance(node, ast.Call):
            name = _called(node)
            if name in FIRST_ARGUMENT_TYPES and node.args:
                candidates.append(node.args[0])
            if name in SECOND_ARGUMENT_TYPES and len(node.args) > 1:
                candidates.append(node.args[1])
            # A type stored on the row (`error_type="stale"`) is shown with the message.
            candidates += [k.value for k in node.keywords if k.arg in ("type", "error_type")]
        elif isinstance(node, ast.Dict):
            # An error object written out by hand: {"type": ..., "message": ...}.
            keys = [_literal(key) for key in node.keys]
            if "type" in keys and "message" in keys:
                candidates.append(node.values[keys.index("type")])
        found |= {type for type in map(_literal, candidates) if type}
    return found


def answered_types() -> set[str]:
    """Every error type a module of the app can answer, read from its source."""
    found = set(DJANGO_ERRORS) | set(ProviderError.TYPE_BY_KIND.values())
    for path in CHAT.rglob("*.py"):
        relative = path.relative_to(CHAT).as_posix()
        if relative.startswith("migrations/") or relative in UPSTREAM_SIDE:
            continue
        found |= _types_in(ast.parse(path.read_text(), str(path)))
    return found


def test_every_error_type_the_code_answers_is_in_the_table_and_nothing_else():
    answered = answered_types()
    # The scan sees every way a type is written: a ChatError, a limit, a subclass, the
    # middleware's own refusals, a stream's error, a type stored on a row.
    assert {
        "invalid_cursor",
        "budget_exceeded",
        "invalid_token",
        "cross_origin",
        "still_streaming",
        "interrupted",
        "stale",
        "unauthorized",
    } <= answered
    assert answered - set(HTTP_STATUS) == set(), "add these types to chat.errors.HTTP_STATUS"
    assert set(HTTP_STATUS) - answered == set(), "nothing answers these types any more"


# --- JSON errors are answered with their type's status --------------------------------


REFUSALS = [
    ("POST", "/api/chat", {"message": "hi"}, {"origin": "https://evil.example"}, 403,
     "cross_origin"),
    ("POST", "/api/chat", b"message=hi", {"content-type": "application/x-www-form-urlencoded"},
     415, "unsupported_media_type"),
    ("PUT", "/api/chat", {}, {}, 405, "method_not_allowed"),
    ("GET", "/api/nothing/here", b"", {}, 404, "not_found"),
    ("POST", "/api/chat", {"message": "hi"}, {"accept": "image/png"}, 406, "not_acceptable"),
    ("POST", "/api/chat", b"{", {"content-type": "application/json"}, 400, "invalid_json"),
    ("GET", "/api/conversations", b"", {"authorization": "Bearer nope"}, 401, "invalid_token"),
    ("GET", "/api/conversations?limit=0", b"", {}, 400, "invalid_limit"),
    ("GET", "/metrics", b"", {"x-forwarded-for": "203.0.113.9"}, 403, "forbidden"),
]  # fmt: skip


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "error_type"),
    REFUSALS,
    ids=[refusal[-1] for refusal in REFUSALS],
)
async def test_a_json_error_is_answered_with_its_types_status(
    upstream, method, path, body, headers, status, error_type
):
    response = await asgi_request(method, path, body=body, headers=headers)
    error = response.json()["error"]
    assert (response.status, error["type"]) == (status, error_type)
    assert response.status == HTTP_STATUS[error["type"]]


# --- A failed stream's error event carries its status ---------------------------------

SSE = {"accept": "text/event-stream"}
NDJSON = {"accept": "application/x-ndjson"}
REFUSED = {"error": {"message": "No sk-test-secret-key-123456 here."}}
FAULTS = {
    "auth": (Reply(status=401, json_body=REFUSED), "upstream_auth", 502),
    "rate_limit": (
        Reply(status=429, json_body=REFUSED, headers={"retry-after": "12"}),
        "upstream_rate_limit",
        429,
    ),
    "bad_request": (Reply(status=400, json_body=REFUSED), "upstream_bad_request", 400),
    "server": (Reply(status=503, json_body=REFUSED), "upstream_error", 502),
    "timeout": (Reply(raise_exc=httpx2.ReadTimeout("slow")), "upstream_timeout", 504),
    "unreachable": (Reply(raise_exc=httpx2.ConnectError("refused")), "upstream_unreachable", 502),
}


def error_of(events: list[tuple[str, dict]]) -> dict:
    """The failed turn's error object: its stream's last event is `error`, status failed."""
    name, data = events[-1]
    assert name == "error" and data["status"] == "failed"
    return data["error"]


def assert_carries(error: dict, error_type: str, status: int) -> None:
    assert error["type"] == error_type and error["http_status"] == status
    assert isinstance(error["message"], str) and error["message"]
    assert "sk-test" not in error["message"]
    assert set(error) == {"type", "message", "http_status"}


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("fault", list(FAULTS))
async def test_a_failed_streams_error_event_carries_its_status_in_every_encoding(upstream, fault):
    reply, error_type, status = FAULTS[fault]
    for _ in range(3):
        upstream.queue(reply)
    client = AsgiClient()

    sse = await client.post("/api/chat", {"message": "hi"}, headers=SSE)
    ndjson = await client.post("/api/chat", {"message": "hi"}, headers=NDJSON)
    folded = await client.post("/api/chat", {"message": "hi"})

    assert sse.status == ndjson.status == 200  # the stream had begun
    sse_error = error_of(parse_sse(sse.body))
    assert_carries(sse_error, error_type, status)
    lines = parse_ndjson(ndjson.body)
    assert_carries(error_of([(line.pop("type"), line) for line in lines]), error_type, status)
    # The folded reply is answered with the status its error carries.
    assert folded.status == status
    assert folded.json()["status"] == "failed"
    assert_carries(folded.json()["error"], error_type, status)
    if status == 429:
        assert folded.headers["retry-after"] == "12"
        assert parse_sse(sse.body)[-1][1]["retry_after"] == "12"
    assert upstream.calls == 3

    # Read back from the database: the direct stream left no log to resume.
    replayed = await client.get(f"/api/messages/{parse_sse(sse.body)[0][1]['message']}/stream",
                                headers=SSE)  # fmt: skip
    assert error_of(parse_sse(replayed.body)) == sse_error
    assert upstream.calls == 3


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("fault", ["rate_limit", "timeout", "auth"])
async def test_a_deferred_turns_error_carries_its_status_live_resumed_and_stored(upstream, fault):
    reply, error_type, status = FAULTS[fault]
    upstream.queue(reply)
    client = AsgiClient()
    info = (await client.post("/api/chat?stream=defer", {"message": "hi"})).json()

    live = await client.get(info["stream_url"], headers=SSE)
    resumed = await client.get(info["stream_url"], headers={**SSE, "Last-Event-ID": "1"})
    detail = await client.get(f"/api/conversations/{info['conversation']}")

    error = error_of(parse_sse(live.body))
    assert_carries(error, error_type, status)
    assert [name for name, _ in parse_sse(resumed.body)] == ["error"]  # after `start`
    assert error_of(parse_sse(resumed.body)) == error
    # The stored row says the same: the turn's message in the conversation, and its replay.
    [reply_data] = [m for m in detail.json()["messages"] if m["id"] == info["message"]]
    assert reply_data["status"] == "failed" and reply_data["error"] == error
    row = await Message.objects.aget(pk=info["message"])
    assert (row.status, row.error_type) == ("failed", error_type)
    assert upstream.calls == 1


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_turn_still_written_elsewhere_ends_the_wait_with_a_409_error(upstream, settings):
    settings.CHAT_STREAM_WAIT_SECONDS = 0.2
    client = AsgiClient()
    info = (await client.post("/api/chat?stream=defer", {"message": "hi"})).json()
    # Another worker claimed it and is streaming, with no log this worker can follow.
    await Message.objects.filter(pk=info["message"]).aupdate(status="streaming")

    response = await asyncio.wait_for(client.get(info["stream_url"], headers=SSE), 10)

    name, data = parse_sse(response.body)[-1]
    assert name == "error" and data["status"] == "streaming"
    assert_carries(data["error"], "still_streaming", 409)
    assert upstream.calls == 0
