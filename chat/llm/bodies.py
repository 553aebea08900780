"""A request's files go into its JSON body as they were encoded once, not again per turn.

An image or PDF goes to the model as a base64 `data:` URL inside the request's JSON, and a
conversation sends its earlier files again on every turn. Encoding that string is most of
what a file adds to a turn: the SDK's JSON encoder reads every character of a screenshot's
half-megabyte URL, every turn, to find none that needs escaping. So each file's URL is
kept as a JSON string already encoded (`data_url_json`, cached per worker by
`chat.files.context`), the request is built with a short placeholder in its place, and
the HTTP client the SDK sends through puts the encoded bytes back where the placeholders
are (`chat.llm.client.FileBodies`): the same bytes the SDK would have written, without
the work. Nothing here imports the SDK.

The placeholders are a random token of this process and a number, so text a person sends
never matches one; a request's files reach the client in a context variable set only
while the SDK sends it (`sending`), retries included.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_TOKEN = secrets.token_hex(16)
_PLACEHOLDER = re.compile(rb'"' + _TOKEN.encode() + rb":(\d+)\"")
_sending: ContextVar[list[bytes] | None] = ContextVar("chat_llm_file_bodies", default=None)


def data_url_json(content_type: str, data: bytes) -> bytes:
    """`data` as a base64 `data:` URL, encoded as a JSON string as the SDK encodes one
    (UTF-8, nothing escaped that need not be). Base64 needs no escaping, so only the
    prefix goes through the encoder."""
    prefix = json.dumps(f"data:{content_type};base64,", ensure_ascii=False).encode()
    return b"".join((prefix[:-1], base64.b64encode(data), b'"'))


class Pieces:
    """A request's files, each as its encoded JSON string, and the placeholder that
    stands in for it in the body until it is sent."""

    def __init__(self) -> None:
        self.encoded: list[bytes] = []

    def placeholder(self, encoded: bytes) -> str:
        self.encoded.append(encoded)
        return f"{_TOKEN}:{len(self.encoded) - 1}"


@contextmanager
def sending(pieces: Pieces) -> Iterator[None]:
    """While the SDK sends a request built with `pieces`' placeholders: with no `await`
    between setting and resetting but the send itself, the value never leaks into the
    caller's other requests."""
    if not pieces.encoded:
        yield
        return
    token = _sending.set(pieces.encoded)
    try:
        yield
    finally:
        _sending.reset(token)


def pending() -> list[bytes] | None:
    """The files of the request being sent now, if it has any (`sending`)."""
    return _sending.get()


def spliced(body: bytes, encoded: list[bytes]) -> list[bytes]:
    """`body` in pieces, each placeholder replaced by its file's encoded JSON string: sent
    one after the other, the files' bytes are never copied into one body."""
    chunks = _PLACEHOLDER.split(body)  # text, number, text, number, …, text
    chunks[1::2] = [encoded[int(number)] for number in chunks[1::2]]
    return [chunk for chunk in chunks if chunk]
