"""One error taxonomy (chat/errors.py): every error type the code can answer has the HTTP
status the contract gives it, in one table, and a JSON error is answered with its type's
status."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from chat.errors import DJANGO_ERRORS, HTTP_STATUS, ChatError, http_status, status_error
from chat.llm import ProviderError
from tests.asgi import asgi_request

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
    ],
    401: ["authentication_required", "invalid_token", "unauthorized"],
    403: ["forbidden", "cross_origin"],
    404: ["not_found"],
    405: ["method_not_allowed"],
    406: ["not_acceptable"],
    409: ["not_last_turn", "turn_in_progress", "still_streaming"],
    413: ["request_too_large", "body_too_large", "message_too_long", "system_too_long"],
    415: ["unsupported_media_type"],
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

# Called with an error type as their first argument, or (`error_response`, `bad_request`)
# their second; `super().__init__` is a `ChatError` subclass naming its type.
FIRST_ARGUMENT_TYPES = {"ChatError", "LimitExceeded", "error_detail", "__init__"}
SECOND_ARGUMENT_TYPES = {"error_response", "bad_request"}
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
