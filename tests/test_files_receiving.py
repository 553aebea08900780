"""chat/files/receiving.py: upload bodies measured as they arrive, on a real uvicorn worker
and a real HTTP client. A chunked upload (no Content-Length) within the limit is stored
like any other; one over it is answered 413 as soon as it passes the limit, before the
client has sent the rest; a declared length over the limit is answered before any body."""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from chat.models import Attachment
from tests.files import multipart, png
from tests.servers import HOST, database_url, free_port, start_worker, stop

pytestmark = pytest.mark.django_db(transaction=True)
LIMIT = 200_000  # CHAT_FILES_MAX_BYTES of the worker
CHUNK = 16 * 1024


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "MEDIA_ROOT": str(tmp_path / "media"),
        "CHAT_ALLOW_ANONYMOUS": "true",
        "CHAT_FILES_MAX_BYTES": str(LIMIT),
    }
    with open(tmp_path / "worker.log", "wb") as log:
        proc = start_worker(env, port, output=log)
    yield port
    stop(proc)


def chunked_upload(port: int, name: str, data: bytes, *, end: bool = True) -> tuple[int, dict]:
    """POST /api/files with `Transfer-Encoding: chunked`, in chunks of CHUNK bytes; without
    `end`, stop sending (no last chunk) once the body is past the limit and read the
    answer: the server must give it without the rest."""
    body, content_type = multipart(name, data)
    connection = http.client.HTTPConnection(HOST, port, timeout=20)
    connection.putrequest("POST", "/api/files")
    connection.putheader("Content-Type", content_type)
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    sent = 0
    for start in range(0, len(body), CHUNK):
        piece = body[start : start + CHUNK]
        connection.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        sent += len(piece)
        if not end and sent > LIMIT + 64 * 1024:  # the limit and the multipart room
            break
    else:
        connection.send(b"0\r\n\r\n")
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
    return response.status, answer


def test_a_chunked_upload_within_the_limit_is_stored(worker):
    status, data = chunked_upload(worker, "shot.png", png(300, 200))
    assert status == 201, data
    assert (data["type"], data["width"], data["height"]) == ("image/png", 300, 200)
    row = Attachment.objects.get(pk=data["id"])
    assert row.size == data["size"] and row.name == "shot.png"
    text = b"A line of a log.\n" * 5000  # 85,000 bytes, in six chunks
    status, data = chunked_upload(worker, "app.log", text)
    assert status == 201 and data["size"] == len(text) and data["type"] == "text/plain"


def test_a_chunked_upload_over_the_limit_is_refused_before_it_ends(worker):
    status, data = chunked_upload(worker, "big.txt", b"x" * (LIMIT * 4), end=False)
    assert status == 413
    assert data["error"]["type"] == "file_too_large"
    assert "0.2 MB" in data["error"]["message"]
    assert not Attachment.objects.exists()


def test_a_declared_length_over_the_limit_is_refused_before_the_body(worker):
    connection = http.client.HTTPConnection(HOST, worker, timeout=20)
    connection.putrequest("POST", "/api/files")
    connection.putheader("Content-Type", "multipart/form-data; boundary=b")
    connection.putheader("Content-Length", str(LIMIT * 10))
    connection.endheaders()  # and not a byte of the body
    response = connection.getresponse()
    assert response.status == 413
    assert json.loads(response.read())["error"]["type"] == "file_too_large"
    connection.close()
