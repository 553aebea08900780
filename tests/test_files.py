"""Attachments through the HTTP API: upload, safety, serving to the owner only, limits."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from chat.files.storage import attachments_storage
from chat.models import Attachment
from tests.asgi import AsgiClient
from tests.files import (
    ELF,
    SVG,
    animated_gif,
    jpeg_with_gps,
    pdf,
    png,
    png_claiming,
    upload,
    uploaded,
)

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("local_storage"),  # attachments in a directory of the test's own
]


async def test_an_image_is_stored_and_served_to_its_owner_only(ada, bob, local_storage):
    response = await upload(ada, "screenshot.png", png(64, 48), "image/png")
    assert response.status == 201
    data = response.json()
    assert data["name"] == "screenshot.png" and data["type"] == "image/png"
    assert (data["width"], data["height"], data["kind"]) == (64, 48, "image")
    assert data["url"] == f"/api/files/{data['id']}"
    row = await Attachment.objects.aget(pk=data["id"])
    assert row.size == data["size"] and (local_storage / row.storage_key).is_file()

    served = await ada.get(data["url"])
    assert served.status == 200
    assert served.headers["content-type"] == "image/png"
    assert served.headers["x-content-type-options"] == "nosniff"
    assert served.headers["content-disposition"].startswith("inline")
    assert int(served.headers["content-length"]) == len(served.body) == row.size
    assert Image.open(io.BytesIO(served.body)).size == (64, 48)

    assert (await bob.get(data["url"])).status == 404
    assert (await AsgiClient().get(data["url"])).json()["error"]["type"] == "not_found"


async def test_exif_and_gps_are_stripped_and_orientation_applied(ada):
    original = jpeg_with_gps(40, 30)
    assert b"SpyCam" in original
    data = await uploaded(ada, "photo.jpg", original)
    body = (await ada.get(data["url"])).body
    assert b"SpyCam" not in body and b"Exif" not in body
    stored = Image.open(io.BytesIO(body))
    assert not stored.getexif()
    # Orientation 6 shows the picture turned: what is stored is upright, without the tag.
    assert stored.size == (30, 40) and (data["width"], data["height"]) == (30, 40)


async def test_an_animated_gif_keeps_its_frames_and_timing_and_nothing_else(ada):
    original = animated_gif()
    assert b"SpyCam" in original
    data = await uploaded(ada, "wave.gif", original)
    assert (data["type"], data["width"], data["height"]) == ("image/gif", 32, 24)
    body = (await ada.get(data["url"])).body
    assert b"SpyCam" not in body
    stored = Image.open(io.BytesIO(body))
    assert stored.n_frames == 3 and stored.info.get("loop") == 0
    seen = []
    for index in range(3):
        stored.seek(index)
        seen.append((stored.convert("RGB").getpixel((5, 5)), stored.info["duration"]))
    assert seen == [((255, 0, 0), 100), ((0, 255, 0), 200), ((0, 0, 255), 300)]


async def test_an_animation_over_the_pixel_cap_across_its_frames_is_refused(ada, settings):
    settings.CHAT_FILES_MAX_PIXELS = 32 * 24 * 2  # one frame fits; three do not
    response = await upload(ada, "long.gif", animated_gif())
    assert response.status == 413
    assert response.json()["error"]["type"] == "image_too_large"
    assert "across its frames" in response.json()["error"]["message"]
    assert await Attachment.objects.acount() == 0


async def test_a_pdf_is_a_download_and_text_is_text(ada):
    document = await uploaded(ada, "report.pdf", pdf(2))
    assert document["type"] == "application/pdf" and document["width"] is None
    served = await ada.get(document["url"])
    assert served.body == pdf(2)
    assert served.headers["content-disposition"] == 'attachment; filename="report.pdf"'
    notes = await uploaded(ada, "notes.md", "# Grüße\n\n- one\n".encode())
    assert (notes["type"], notes["kind"]) == ("text/markdown", "text")
    served = await ada.get(notes["url"])
    assert served.headers["content-type"] == "text/markdown; charset=utf-8"
    assert served.headers["content-disposition"].startswith("attachment")
    table = await uploaded(ada, "data.csv", b"a,b\n1,2\n")
    assert table["type"] == "text/csv"


async def test_the_type_comes_from_the_bytes_not_the_name(ada):
    # A PNG called .txt is an image; the name is made to say so.
    data = await uploaded(ada, "not-really.txt", png())
    assert data["type"] == "image/png" and data["name"] == "not-really.png"
    refused = await upload(ada, "cat.png", ELF, "image/png")
    assert refused.status == 415
    assert refused.json()["error"]["type"] == "unsupported_file_type"


@pytest.mark.parametrize(
    ("name", "data", "status", "error"),
    [
        ("empty.png", b"", 400, "empty_file"),
        ("truncated.jpg", jpeg_with_gps(400, 300)[:600], 400, "invalid_file"),
        ("huge.png", png_claiming(10_000, 10_000), 413, "image_too_large"),
        ("logo.svg", SVG, 415, "unsupported_file_type"),
        (
            "page.html",
            b"<!DOCTYPE html><html><script>x()</script></html>",
            415,
            "unsupported_file_type",
        ),
        ("bin.dat", bytes(range(256)), 415, "unsupported_file_type"),
        ("latin1.txt", "café".encode("latin-1"), 415, "unsupported_file_type"),
    ],
)
async def test_bad_files_are_refused_in_json_and_nothing_is_stored(
    ada, local_storage, name, data, status, error
):
    response = await upload(ada, name, data)
    assert response.status == status, response.body
    body = response.json()
    assert body["error"]["type"] == error and body["error"]["message"]
    assert await Attachment.objects.acount() == 0
    assert not local_storage.exists() or not any(local_storage.rglob("*.*"))


async def test_text_that_is_not_markup_at_first_sight_is_never_named_as_a_page(ada):
    data = await uploaded(ada, "page.html", b"just words, then <b>bold</b>\n")
    assert (data["name"], data["type"]) == ("page.txt", "text/plain")
    script = await uploaded(ada, "tool.py", b"print('hi')\n")
    assert script["name"] == "tool.py"
    notes = await uploaded(ada, "notes.md", b"Draw it with an <svg> element.\n")
    assert notes["type"] == "text/markdown"


async def test_names_are_made_safe(ada):
    data = await uploaded(ada, "../../etc/\u202egnp.exe\x07notes.txt", b"hello\n")
    assert data["name"] == "gnp.exenotes.txt"
    served = await ada.get(data["url"])
    assert "/" not in served.headers["content-disposition"]
    assert "\u202e" not in served.headers["content-disposition"]


async def test_identical_uploads_by_one_person_are_stored_once(ada, bob, local_storage):
    first = await uploaded(ada, "a.png", png())
    again = await uploaded(ada, "b.png", png())
    assert again["id"] == first["id"]
    theirs = await uploaded(bob, "a.png", png())
    assert theirs["id"] != first["id"]
    assert await Attachment.objects.acount() == 2
    assert len(list(local_storage.rglob("*.png"))) == 2


async def test_size_limits_answer_413(ada, settings, shared_cache):
    settings.CHAT_FILES_MAX_BYTES = 1000
    response = await upload(ada, "big.txt", b"x" * 5000)
    assert response.status == 413 and response.json()["error"]["type"] == "file_too_large"
    settings.CHAT_FILES_MAX_BYTES = 10_000
    settings.CHAT_FILES_DAILY_BYTES = 6000
    assert (await upload(ada, "one.txt", b"1" * 4000)).status == 201
    response = await upload(ada, "two.txt", b"2" * 4000)
    assert response.status == 413 and response.json()["error"]["type"] == "daily_upload_limit"
    # A refused file is not counted against the day; the same bytes again are free.
    assert (await upload(ada, "bad.bin", bytes(range(256)) * 7)).status == 415
    assert (await upload(ada, "again.txt", b"1" * 4000)).status == 201
    assert (await upload(ada, "three.txt", b"3" * 2000)).status == 201


async def test_anonymous_uploads_count_by_address_not_by_cookie(settings, shared_cache):
    settings.CHAT_FILES_DAILY_BYTES = 6000
    first, second = AsgiClient(), AsgiClient()  # two identities, one address
    assert (await upload(first, "one.txt", b"1" * 4000)).status == 201
    response = await upload(second, "two.txt", b"2" * 4000)
    assert response.status == 413 and response.json()["error"]["type"] == "daily_upload_limit"


async def test_upload_needs_multipart_and_the_file_field(ada):
    response = await ada.post("/api/files", {"file": "x"})
    assert response.status == 415
    body = b'--b\r\nContent-Disposition: form-data; name="other"\r\n\r\nx\r\n--b--\r\n'
    response = await ada.post(
        "/api/files",
        body,
        headers={
            "content-type": "multipart/form-data; boundary=b",
            "content-length": str(len(body)),
        },
    )
    assert response.status == 400 and "'file'" in response.json()["error"]["message"]


async def test_a_cross_site_upload_is_refused(ada):
    from tests.files import multipart

    body, header = multipart("a.png", png())
    response = await ada.post(
        "/api/files",
        body,
        headers={
            "content-type": header,
            "content-length": str(len(body)),
            "origin": "https://evil.example",
            "sec-fetch-site": "cross-site",
        },
    )
    assert response.status == 403
    assert await Attachment.objects.acount() == 0


async def test_anonymous_visitors_upload_into_their_own_cookie(settings):
    visitor, other = AsgiClient(), AsgiClient()
    await visitor.get("/api/account")
    await other.get("/api/account")
    data = await uploaded(visitor, "a.png", png())
    assert (await visitor.get(data["url"])).status == 200
    assert (await other.get(data["url"])).status == 404
    assert attachments_storage().exists((await Attachment.objects.aget()).storage_key)


async def test_the_same_file_uploaded_twice_at_once_is_stored_once(ada, local_storage):
    """Both pass the dedupe lookup before either row exists: the unique constraint stops
    the second, whose stored copy is deleted and which answers with the first's row."""
    import asyncio

    first, second = await asyncio.gather(
        upload(ada, "a.png", png(50, 50)), upload(ada, "b.png", png(50, 50))
    )
    assert first.status == second.status == 201
    assert first.json()["id"] == second.json()["id"]
    assert await Attachment.objects.acount() == 1
    assert len(list(local_storage.rglob("*.png"))) == 1
