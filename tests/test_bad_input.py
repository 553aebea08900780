"""Bad input gets a clear 4xx with a JSON error, and changes nothing: no row is created,
no existing row is touched, the model is never called."""

import json
import uuid

import pytest
import pytest_asyncio

from chat.models import Conversation, Message
from tests.asgi import AsgiClient

JSON = {"content-type": "application/json"}
SSE = {"accept": "text/event-stream"}
MAX_BODY = 4096


def raw(body: bytes | str, **headers: str) -> tuple[bytes, dict[str, str]]:
    return (body.encode() if isinstance(body, str) else body), {**JSON, **headers}


def body(data, **headers: str) -> tuple[bytes, dict[str, str]]:
    return raw(json.dumps(data), **headers)


MSG = {"message": "hi"}
# (id, method, path, (body, headers), status, error type). Paths may name {mine} (the
# caller's conversation), {foreign} (someone else's), {reply} (the caller's assistant
# message), {question} (the caller's user message), {theirs} (someone else's reply).
CASES = [
    ("malformed-json", "POST", "/api/chat", raw("{not json"), 400, "invalid_json"),
    ("truncated-json", "POST", "/api/chat", raw('{"message": "hi"'), 400, "invalid_json"),
    ("empty-body", "POST", "/api/chat", raw(""), 400, "invalid_json"),
    ("not-utf8", "POST", "/api/chat", raw(b'{"message": "\xff\xfe"}'), 400, "invalid_json"),
    ("deeply-nested", "POST", "/api/chat", raw("[" * 4_000), 400, "invalid_json"),
    ("json-array", "POST", "/api/chat", body(["hi"]), 400, "invalid_request"),
    ("json-string", "POST", "/api/chat", body("hi"), 400, "invalid_request"),
    ("json-null", "POST", "/api/chat", body(None), 400, "invalid_request"),
    ("missing-message", "POST", "/api/chat", body({}), 400, "invalid_request"),
    ("message-number", "POST", "/api/chat", body({"message": 5}), 400, "invalid_request"),
    ("message-null", "POST", "/api/chat", body({"message": None}), 400, "invalid_request"),
    ("message-list", "POST", "/api/chat", body({"message": ["hi"]}), 400, "invalid_request"),
    ("message-object", "POST", "/api/chat", body({"message": {"a": 1}}), 400, "invalid_request"),
    ("message-bool", "POST", "/api/chat", body({"message": True}), 400, "invalid_request"),
    ("empty-message", "POST", "/api/chat", body({"message": ""}), 400, "empty_message"),
    ("blank-message", "POST", "/api/chat", body({"message": " \n\t\u3000"}), 400, "empty_message"),
    ("nul-in-message", "POST", "/api/chat", body({"message": "a\x00b"}), 400, "invalid_request"),
    ("lone-surrogate", "POST", "/api/chat", raw('{"message": "\\ud800"}'), 400, "invalid_request"),
    (
        "message-too-long",
        "POST",
        "/api/chat",
        body({"message": "x" * 1001}),
        413,
        "message_too_long",
    ),
    ("system-number", "POST", "/api/chat", body({**MSG, "system": 1}), 400, "invalid_request"),
    (
        "system-too-long",
        "POST",
        "/api/chat",
        body({**MSG, "system": "s" * 501}),
        413,
        "system_too_long",
    ),
    ("model-number", "POST", "/api/chat", body({**MSG, "model": 4}), 400, "invalid_request"),
    ("model-blank", "POST", "/api/chat", body({**MSG, "model": " "}), 400, "invalid_request"),
    (
        "model-unknown",
        "POST",
        "/api/chat",
        body({**MSG, "model": "gpt-nope"}),
        400,
        "invalid_model",
    ),
    (
        "conversation-int",
        "POST",
        "/api/chat",
        body({**MSG, "conversation": 7}),
        400,
        "invalid_request",
    ),
    (
        "conversation-bad-uuid",
        "POST",
        "/api/chat",
        body({**MSG, "conversation": "nope"}),
        400,
        "invalid_request",
    ),
    (
        "conversation-empty",
        "POST",
        "/api/chat",
        body({**MSG, "conversation": ""}),
        400,
        "invalid_request",
    ),
    (
        "conversation-unknown",
        "POST",
        "/api/chat",
        body({**MSG, "conversation": "00000000-0000-4000-8000-000000000000"}),
        404,
        "not_found",
    ),
    (
        "conversation-foreign",
        "POST",
        "/api/chat",
        body({**MSG, "conversation": "{foreign}"}),
        404,
        "not_found",
    ),
    (
        "conversation-foreign-deferred",
        "POST",
        "/api/chat?stream=defer",
        body({**MSG, "conversation": "{foreign}"}),
        404,
        "not_found",
    ),
    ("unknown-field", "POST", "/api/chat", body({**MSG, "temperature": 2}), 400, "invalid_request"),
    (
        "huge-body",
        "POST",
        "/api/chat",
        body({"message": "x" * (MAX_BODY * 4)}),
        413,
        "body_too_large",
    ),
    (
        "huge-body-declared",
        "POST",
        "/api/chat",
        body({"message": "x" * (MAX_BODY * 4)}, **{"content-length": str(MAX_BODY * 4 + 15)}),
        413,
        "body_too_large",
    ),
    ("accept-png", "POST", "/api/chat", body(MSG, accept="image/png"), 406, "not_acceptable"),
    (
        "stream-accept-json",
        "GET",
        "/api/messages/{reply}/stream",
        raw("", accept="application/json"),
        406,
        "not_acceptable",
    ),
    (
        "form-content-type",
        "POST",
        "/api/chat",
        raw("message=hi", **{"content-type": "application/x-www-form-urlencoded"}),
        415,
        "unsupported_media_type",
    ),
    (
        "text-plain",
        "POST",
        "/api/chat",
        raw('{"message": "hi"}', **{"content-type": "text/plain"}),
        415,
        "unsupported_media_type",
    ),
    (
        "multipart",
        "POST",
        "/api/chat",
        raw("--x--", **{"content-type": "multipart/form-data; boundary=x"}),
        415,
        "unsupported_media_type",
    ),
    (
        "cross-site",
        "POST",
        "/api/chat",
        body(MSG, **{"sec-fetch-site": "cross-site"}),
        403,
        "cross_origin",
    ),
    (
        "foreign-origin",
        "POST",
        "/api/chat",
        body(MSG, origin="https://evil.example"),
        403,
        "cross_origin",
    ),
    ("get-chat", "GET", "/api/chat", raw(""), 405, "method_not_allowed"),
    ("put-chat", "PUT", "/api/chat", body(MSG), 405, "method_not_allowed"),
    ("post-conversations", "POST", "/api/conversations", body({}), 405, "method_not_allowed"),
    ("put-conversation", "PUT", "/api/conversations/{mine}", body({}), 405, "method_not_allowed"),
    ("delete-foreign", "DELETE", "/api/conversations/{foreign}", raw(""), 404, "not_found"),
    (
        "patch-foreign",
        "PATCH",
        "/api/conversations/{foreign}",
        body({"title": "x"}),
        404,
        "not_found",
    ),
    (
        "patch-blank-title",
        "PATCH",
        "/api/conversations/{mine}",
        body({"title": " "}),
        400,
        "invalid_title",
    ),
    ("patch-not-json", "PATCH", "/api/conversations/{mine}", raw("{"), 400, "invalid_json"),
    (
        "patch-form",
        "PATCH",
        "/api/conversations/{mine}",
        raw("title=x", **{"content-type": "application/x-www-form-urlencoded"}),
        415,
        "unsupported_media_type",
    ),
    (
        "export-bad-format",
        "GET",
        "/api/conversations/{mine}/export?format=pdf",
        raw(""),
        400,
        "invalid_format",
    ),
    ("export-foreign", "GET", "/api/conversations/{foreign}/export", raw(""), 404, "not_found"),
    ("list-bad-cursor", "GET", "/api/conversations?before=zz", raw(""), 400, "invalid_cursor"),
    ("post-stream", "POST", "/api/messages/{reply}/stream", body({}), 405, "method_not_allowed"),
    ("get-cancel", "GET", "/api/messages/{reply}/cancel", raw(""), 405, "method_not_allowed"),
    ("detail-bad-uuid", "GET", "/api/conversations/not-a-uuid", raw(""), 404, "not_found"),
    ("detail-unknown", "GET", f"/api/conversations/{uuid.UUID(int=1)}", raw(""), 404, "not_found"),
    ("detail-foreign", "GET", "/api/conversations/{foreign}", raw(""), 404, "not_found"),
    ("stream-not-a-number", "GET", "/api/messages/abc/stream", raw("", **SSE), 404, "not_found"),
    ("stream-unknown", "GET", "/api/messages/999999/stream", raw("", **SSE), 404, "not_found"),
    (
        "stream-user-message",
        "GET",
        "/api/messages/{question}/stream",
        raw("", **SSE),
        404,
        "not_found",
    ),
    ("stream-foreign", "GET", "/api/messages/{theirs}/stream", raw("", **SSE), 404, "not_found"),
    ("cancel-unknown", "POST", "/api/messages/999999/cancel", body({}), 404, "not_found"),
    ("cancel-foreign", "POST", "/api/messages/{theirs}/cancel", body({}), 404, "not_found"),
    ("cancel-user-message", "POST", "/api/messages/{question}/cancel", body({}), 404, "not_found"),
    (
        "regenerate-get",
        "GET",
        "/api/messages/{reply}/regenerate",
        raw(""),
        405,
        "method_not_allowed",
    ),
    ("regenerate-foreign", "POST", "/api/messages/{theirs}/regenerate", body({}), 404, "not_found"),
    (
        "regenerate-user-message",
        "POST",
        "/api/messages/{question}/regenerate",
        body({}),
        404,
        "not_found",
    ),
    (
        "regenerate-form",
        "POST",
        "/api/messages/{reply}/regenerate",
        raw("model=x", **{"content-type": "application/x-www-form-urlencoded"}),
        415,
        "unsupported_media_type",
    ),
    (
        "regenerate-bad-model",
        "POST",
        "/api/messages/{reply}/regenerate",
        body({"model": "nope"}),
        400,
        "invalid_model",
    ),
    (
        "edit-foreign",
        "POST",
        "/api/messages/{theirs}/edit",
        body({"message": "x"}),
        404,
        "not_found",
    ),
    ("edit-reply", "POST", "/api/messages/{reply}/edit", body({"message": "x"}), 404, "not_found"),
    (
        "edit-empty",
        "POST",
        "/api/messages/{question}/edit",
        body({"message": " \n"}),
        400,
        "empty_message",
    ),
    (
        "edit-not-string",
        "POST",
        "/api/messages/{question}/edit",
        body({"message": ["x"]}),
        400,
        "invalid_request",
    ),
    (
        "edit-too-long",
        "POST",
        "/api/messages/{question}/edit",
        body({"message": "x" * 1001}),
        413,
        "message_too_long",
    ),
    (
        "edit-nul",
        "POST",
        "/api/messages/{question}/edit",
        body({"message": "a\x00b"}),
        400,
        "invalid_request",
    ),
    ("select-get", "GET", "/api/messages/{reply}/select", raw(""), 405, "method_not_allowed"),
    ("select-foreign", "POST", "/api/messages/{theirs}/select", body({}), 404, "not_found"),
    ("select-unknown", "POST", "/api/messages/999999/select", body({}), 404, "not_found"),
    ("unknown-path", "GET", "/api/nothing/here", raw(""), 404, "not_found"),
]


@pytest_asyncio.fixture
async def world(settings, upstream):
    settings.CHAT_MAX_MESSAGE_CHARS = 1000
    settings.CHAT_MAX_SYSTEM_CHARS = 500
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_BODY
    me, stranger = AsgiClient(), AsgiClient()
    mine = (await me.post("/api/chat", {"message": "my question"})).json()
    theirs = (await stranger.post("/api/chat", {"message": "their question"})).json()
    question = await Message.objects.aget(conversation_id=mine["conversation"], role="user")
    names = {
        "mine": mine["conversation"],
        "reply": mine["message"],
        "question": question.pk,
        "foreign": theirs["conversation"],
        "theirs": theirs["message"],
    }
    return me, names, upstream


async def everything() -> list[tuple]:
    conversations = Conversation.objects.order_by("pk").values_list()
    messages = Message.objects.order_by("pk").values_list()
    return [row async for row in conversations] + [row async for row in messages]


def test_there_are_enough_cases():
    assert len(CASES) >= 25 and len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize(
    ("method", "path", "request_", "status", "error_type"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_bad_input_is_refused_and_changes_nothing(
    world, method, path, request_, status, error_type
):
    client, names, upstream = world
    data, headers = request_
    path = path.format(**names)
    data = data.replace(b"{foreign}", names["foreign"].encode())
    calls = upstream.calls
    before = await everything()

    response = await client.request(method, path, body=data, headers=headers)

    assert response.status == status, response.body[:300]
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["type"] == error_type
    assert isinstance(error["message"], str) and error["message"]
    assert b"Traceback" not in response.body
    assert await everything() == before
    assert upstream.calls == calls
