"""`chat.llm.bodies`: a file's data URL encoded once as the SDK encodes JSON, placeholders
in its place, and the pieces put back where (and only where) they stand."""

from __future__ import annotations

import base64
import json
import os

import pytest

from chat.llm import bodies


@pytest.mark.parametrize("content_type", ["image/png", "application/pdf", 'odd/"type"\u00e9'])
def test_a_data_url_is_the_json_string_the_sdk_would_write(content_type):
    data = os.urandom(3000)
    url = f"data:{content_type};base64,{base64.b64encode(data).decode()}"
    encoded = bodies.data_url_json(content_type, data)
    assert encoded == json.dumps(url, ensure_ascii=False).encode()
    assert json.loads(encoded) == url


def test_placeholders_are_replaced_by_their_pieces_in_order():
    pieces = bodies.Pieces()
    first = pieces.placeholder(b'"data:image/png;base64,AAAA"')
    second = pieces.placeholder(b'"data:application/pdf;base64,BBBB"')
    body = json.dumps({"a": [first, "between", second], "b": first}).encode()
    joined = b"".join(bodies.spliced(body, pieces.encoded))
    assert json.loads(joined) == {
        "a": ["data:image/png;base64,AAAA", "between", "data:application/pdf;base64,BBBB"],
        "b": "data:image/png;base64,AAAA",
    }


def test_text_that_looks_like_a_placeholder_is_left_alone():
    pieces = bodies.Pieces()
    real = pieces.placeholder(b'"data:image/png;base64,AAAA"')
    forged = "0" * 32 + ":0"  # a placeholder of another process's token
    body = json.dumps({"text": f"{forged} and :0 and {real[:-2]}", "also": forged}).encode()
    assert b"".join(bodies.spliced(body, pieces.encoded)) == body


def test_the_pieces_are_pending_only_while_sending():
    pieces = bodies.Pieces()
    assert bodies.pending() is None
    with bodies.sending(pieces):  # no files: nothing to splice
        assert bodies.pending() is None
    pieces.placeholder(b'"x"')
    with bodies.sending(pieces):
        assert bodies.pending() == [b'"x"']
    assert bodies.pending() is None
    with pytest.raises(RuntimeError), bodies.sending(pieces):
        raise RuntimeError("a failed send")
    assert bodies.pending() is None
