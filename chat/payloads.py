"""Parse and validate request bodies into typed values. No database; the only I/O is
reading the body the server has already received."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.core.files.uploadedfile import UploadedFile
from django.http import HttpRequest
from django.http.multipartparser import MultiPartParserError

from chat.errors import ChatError
from chat.text import storable


@dataclass(frozen=True, slots=True)
class ChatRequest:
    message: str
    conversation: uuid.UUID | None = None
    model: str | None = None
    system: str | None = None
    attachments: tuple[uuid.UUID, ...] = ()


@dataclass(frozen=True, slots=True)
class EditRequest:
    message: str
    attachments: tuple[uuid.UUID, ...] | None = None  # None: keep the message's files


def bad_request(message: str, type: str = "invalid_request") -> ChatError:
    return ChatError(type, message)


def body_too_large() -> ChatError:
    return ChatError("body_too_large", "The request body is too large.")


def request_body(request: HttpRequest) -> bytes:
    """The body, refused with 413 above `DATA_UPLOAD_MAX_MEMORY_SIZE`. Django checks only
    a declared Content-Length; a chunked body has none, so the read itself is bounded."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    try:
        if limit is None:
            return request.body
        body = request.body if "CONTENT_LENGTH" in request.META else request.read(limit + 1)
    except RequestDataTooBig:
        raise body_too_large() from None
    if limit is not None and len(body) > limit:
        raise body_too_large()
    return body


def parse_chat_request(
    body: bytes, *, max_message_chars: int, max_system_chars: int, max_files: int = 0
) -> ChatRequest:
    """`{"message": str, "conversation": uuid|null, "model": str?, "system": str?,
    "attachments": [uuid, …]?}` (at most `max_files` attachments)."""
    data = json_object(body, fields={"message", "conversation", "model", "system", "attachments"})
    message = _message(data, max_chars=max_message_chars)
    attachments = _attachments(data, max_files=max_files) or ()
    model = _model(data)

    conversation = data.get("conversation")
    if conversation is not None:
        if not isinstance(conversation, str):
            raise bad_request("'conversation' must be a UUID string or null.")
        try:
            conversation = uuid.UUID(conversation)
        except ValueError:
            raise bad_request("'conversation' is not a valid UUID.") from None

    system = data.get("system")
    if system is not None:
        if not isinstance(system, str):
            raise bad_request("'system' must be a string.")
        if len(system) > max_system_chars:
            raise ChatError(
                "system_too_long", f"'system' is longer than {max_system_chars} characters."
            )
        _check_storable(system, "system")
    return ChatRequest(
        message=message,
        conversation=conversation,
        model=model,
        system=system,
        attachments=attachments,
    )


def json_object(body: bytes, *, fields: set[str]) -> dict[str, Any]:
    """The body as a JSON object with no fields but `fields`."""
    try:
        data: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: [[[[…
        raise bad_request("The body is not valid JSON.", "invalid_json") from None
    if not isinstance(data, dict):
        raise bad_request("The body must be a JSON object.")
    unknown = set(data) - fields
    if unknown:
        raise bad_request(f"Unknown field(s): {', '.join(sorted(unknown))}.")
    return data


def parse_edit_request(body: bytes, *, max_message_chars: int, max_files: int = 0) -> EditRequest:
    """`{"message": str, "attachments": [uuid, …]?}`: the new text of the last user
    message, and its files (without `attachments`, those it had)."""
    data = json_object(body, fields={"message", "attachments"})
    return EditRequest(
        message=_message(data, max_chars=max_message_chars),
        attachments=_attachments(data, max_files=max_files),
    )


def _attachments(data: dict[str, Any], *, max_files: int) -> tuple[uuid.UUID, ...] | None:
    """`attachments`: file ids from `POST /api/files`, each once, at most `max_files`."""
    value = data.get("attachments")
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_request("'attachments' must be a list of file ids.")
    try:
        ids = tuple(dict.fromkeys(uuid.UUID(v) for v in value))
    except ValueError:
        raise bad_request("'attachments' holds something that is not a file id.") from None
    if len(ids) > max_files:
        raise ChatError("too_many_files", f"At most {max_files} files can go with a message.")
    return ids


# Room for a multipart body's boundaries and headers around the file itself.
MULTIPART_OVERHEAD = 64 * 1024


def upload_too_large(max_bytes: int) -> ChatError:
    """An upload body over the limit, refused before its file could be looked at."""
    megabytes = max_bytes / (1024 * 1024)
    return ChatError("file_too_large", f"Files of up to {megabytes:.1f} MB are accepted.")


async def uploaded_file(request: HttpRequest, *, max_bytes: int) -> UploadedFile:
    """The file in the multipart field `file`. A declared body far above `max_bytes` is
    refused before it is parsed; the parsing (to a temporary file beyond Django's
    FILE_UPLOAD_MAX_MEMORY_SIZE) runs off the event loop."""
    declared = request.META.get("CONTENT_LENGTH") or ""
    if not declared.isdigit():
        # Django's multipart parser reads a declared length only; served by our ASGI
        # application, a chunked upload has been given one (`chat.files.receiving`).
        raise bad_request("A file upload needs a Content-Length header.")
    if int(declared) > max_bytes + MULTIPART_OVERHEAD:
        raise upload_too_large(max_bytes)
    try:
        files = await sync_to_async(lambda: request.FILES, thread_sensitive=False)()
    except RequestDataTooBig:
        raise body_too_large() from None
    except (MultiPartParserError, TooManyFieldsSent, TooManyFilesSent):
        raise bad_request("The multipart body could not be read.") from None
    upload = files.get("file")
    if upload is None:
        raise bad_request("Send the file in the multipart field 'file'.")
    return upload


def parse_regenerate_request(body: bytes) -> str | None:
    """`{}` or `{"model": str}` (an empty body is `{}`); the model to regenerate with."""
    return _model(json_object(body or b"{}", fields={"model"}))


def _message(data: dict[str, Any], *, max_chars: int) -> str:
    message = data.get("message")
    if not isinstance(message, str):
        raise bad_request("'message' is required and must be a string.")
    if not message.strip():
        raise bad_request("'message' must not be empty.", "empty_message")
    _check_storable(message, "message")
    if len(message) > max_chars:
        raise ChatError("message_too_long", f"'message' is longer than {max_chars} characters.")
    return message


def _model(data: dict[str, Any]) -> str | None:
    model = data.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise bad_request("'model' must be a non-empty string.")
    return model


def parse_rename_request(body: bytes) -> str:
    """`{"title": str}` (its length is the service's rule)."""
    title = json_object(body, fields={"title"}).get("title")
    if not isinstance(title, str):
        raise bad_request("'title' is required and must be a string.")
    _check_storable(title, "title")
    return title


def _check_storable(text: str, name: str) -> None:
    """JSON can carry what no database stores (see `storable`): a client's text is
    refused, not mended, so what is stored is what they sent."""
    if storable(text) != text:
        if "\x00" in text:
            raise bad_request(f"'{name}' must not contain NUL characters.")
        raise bad_request(f"'{name}' is not valid Unicode text.")
