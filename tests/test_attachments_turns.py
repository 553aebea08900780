"""Attachments sent with a turn: the wire shapes of both APIs, refusals before any
upstream call, context replay, edit, and the offline demo's description of them."""

from __future__ import annotations

import base64
import io
import json

import httpx2
import pytest
from PIL import Image

from chat.models import Attachment, MessageAttachment
from tests.asgi import parse_sse
from tests.files import animated_gif, pdf, png, uploaded
from tests.upstream import Reply, chat_script, responses_script

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("local_storage"),  # attachments in a directory of the test's own
]


def data_url_bytes(url: str, content_type: str) -> bytes:
    prefix = f"data:{content_type};base64,"
    assert url.startswith(prefix)
    return base64.b64decode(url[len(prefix) :])


async def test_chat_completions_gets_image_url_file_and_text_parts(ada, upstream):
    image = await uploaded(ada, "shot.png", png(32, 16))
    document = await uploaded(ada, "report.pdf", pdf(2))
    notes = await uploaded(ada, "notes.md", b"# Plan\n- ship it\n")
    upstream.queue(Reply(script=chat_script(["It is red."])))
    response = await ada.post(
        "/api/chat",
        {"message": "What is this?", "attachments": [image["id"], document["id"], notes["id"]]},
    )
    assert response.status == 200, response.body
    assert response.json()["reply"] == "It is red."
    [user] = upstream.bodies[0]["messages"]
    assert user["role"] == "user"
    text, image_part, file_part, notes_part = user["content"]
    assert text == {"type": "text", "text": "What is this?"}
    assert image_part["type"] == "image_url"
    sent = data_url_bytes(image_part["image_url"]["url"], "image/png")
    assert Image.open(io.BytesIO(sent)).size == (32, 16)
    assert file_part["type"] == "file" and file_part["file"]["filename"] == "report.pdf"
    assert data_url_bytes(file_part["file"]["file_data"], "application/pdf") == pdf(2)
    assert notes_part == {"type": "text", "text": "Attached file notes.md:\n\n# Plan\n- ship it\n"}
    links = [row async for row in MessageAttachment.objects.order_by("position")]
    assert [str(link.attachment_id) for link in links] == [image["id"], document["id"], notes["id"]]


async def test_responses_api_gets_input_image_and_input_file(ada, upstream, settings):
    settings.CHAT_API = "responses"
    image = await uploaded(ada, "shot.png", png())
    document = await uploaded(ada, "report.pdf", pdf(1))
    upstream.queue(Reply(script=responses_script(["ok"])))
    response = await ada.post(
        "/api/chat", {"message": "Look", "attachments": [image["id"], document["id"]]}
    )
    assert response.status == 200, response.body
    [user] = upstream.bodies[0]["input"]
    text, image_part, file_part = user["content"]
    assert text == {"type": "input_text", "text": "Look"}
    assert image_part["type"] == "input_image" and image_part["detail"] == "auto"
    data_url_bytes(image_part["image_url"], "image/png")
    assert file_part["type"] == "input_file" and file_part["filename"] == "report.pdf"
    assert data_url_bytes(file_part["file_data"], "application/pdf") == pdf(1)


async def test_a_text_turn_is_sent_exactly_as_before(ada, upstream):
    upstream.queue(Reply(script=chat_script(["hi"])))
    await ada.post("/api/chat", {"message": "hello"})
    assert upstream.bodies[0]["messages"] == [{"role": "user", "content": "hello"}]


async def test_a_model_that_cannot_see_gets_400_before_any_upstream_call(ada, upstream, settings):
    settings.CHAT_MODELS = ["gpt-4.1-mini", "llama3.2"]
    image = await uploaded(ada, "shot.png", png())
    response = await ada.post(
        "/api/chat", {"message": "What?", "model": "llama3.2", "attachments": [image["id"]]}
    )
    assert response.status == 400
    error = response.json()["error"]
    assert error["type"] == "model_cannot_see_images" and "llama3.2" in error["message"]
    assert upstream.calls == 0
    # Text files go to every model.
    notes = await uploaded(ada, "notes.txt", b"plain words\n")
    upstream.queue(Reply(script=chat_script(["ok"])))
    response = await ada.post(
        "/api/chat", {"message": "Read", "model": "llama3.2", "attachments": [notes["id"]]}
    )
    assert response.status == 200 and upstream.calls == 1


async def test_someone_elses_or_unknown_file_is_404_and_nothing_is_stored(ada, bob, upstream):
    theirs = await uploaded(bob, "theirs.png", png())
    response = await ada.post("/api/chat", {"message": "hi", "attachments": [theirs["id"]]})
    assert response.status == 404 and response.json()["error"]["type"] == "not_found"
    response = await ada.post(
        "/api/chat",
        {"message": "hi", "attachments": ["00000000-0000-0000-0000-000000000000"]},
    )
    assert response.status == 404
    assert upstream.calls == 0
    assert await MessageAttachment.objects.acount() == 0


async def test_too_many_files_and_bad_ids(ada, upstream, settings):
    settings.CHAT_FILES_PER_MESSAGE = 2
    ids = [(await uploaded(ada, f"{n}.txt", f"file {n}\n".encode()))["id"] for n in range(3)]
    response = await ada.post("/api/chat", {"message": "hi", "attachments": ids})
    assert response.status == 413 and response.json()["error"]["type"] == "too_many_files"
    response = await ada.post("/api/chat", {"message": "hi", "attachments": ["nope"]})
    assert response.status == 400
    response = await ada.post("/api/chat", {"message": "hi", "attachments": "x"})
    assert response.status == 400
    assert upstream.calls == 0


async def test_earlier_images_are_sent_again_as_context(ada, upstream):
    image = await uploaded(ada, "shot.png", png())
    upstream.queue(Reply(script=chat_script(["A red square."])))
    first = (await ada.post("/api/chat", {"message": "What?", "attachments": [image["id"]]})).json()
    upstream.queue(Reply(script=chat_script(["Red."])))
    await ada.post("/api/chat", {"message": "Which colour?", "conversation": first["conversation"]})
    user, assistant, follow_up = upstream.bodies[1]["messages"]
    assert user["content"][1]["type"] == "image_url"
    assert (
        user["content"][1]["image_url"]
        == upstream.bodies[0]["messages"][0]["content"][1]["image_url"]
    )
    assert assistant == {"role": "assistant", "content": "A red square."}
    assert follow_up == {"role": "user", "content": "Which colour?"}


async def test_deferred_turn_detail_and_edit_keep_the_files(ada, upstream):
    image = await uploaded(ada, "shot.png", png())
    upstream.queue(Reply(script=chat_script(["seen"])))
    started = await ada.post(
        "/api/chat?stream=defer", {"message": "See?", "attachments": [image["id"]]}
    )
    assert started.status == 201
    turn = started.json()
    events = parse_sse(
        (await ada.get(turn["stream_url"], headers={"accept": "text/event-stream"})).body
    )
    assert events[-1][0] == "end"
    assert upstream.bodies[0]["messages"][0]["content"][1]["type"] == "image_url"

    detail = (await ada.get(f"/api/conversations/{turn['conversation']}")).json()
    user, reply = detail["messages"]
    assert [f["id"] for f in user["attachments"]] == [image["id"]]
    assert user["attachments"][0]["url"] == image["url"] and reply["attachments"] == []

    # Edit without `attachments` keeps them; with an empty list drops them.
    upstream.queue(Reply(script=chat_script(["again"])))
    edited = await ada.post(f"/api/messages/{turn['user_message']}/edit", {"message": "Now?"})
    assert edited.status == 201, edited.body
    await ada.get(edited.json()["stream_url"], headers={"accept": "text/event-stream"})
    assert upstream.bodies[1]["messages"][0]["content"][1]["type"] == "image_url"
    upstream.queue(Reply(script=chat_script(["text only"])))
    dropped = await ada.post(
        f"/api/messages/{edited.json()['user_message']}/edit",
        {"message": "And now?", "attachments": []},
    )
    await ada.get(dropped.json()["stream_url"], headers={"accept": "text/event-stream"})
    assert upstream.bodies[2]["messages"] == [{"role": "user", "content": "And now?"}]


async def test_usage_estimate_counts_the_files_and_stays_flagged(ada, upstream):
    image = await uploaded(ada, "shot.png", png())
    upstream.queue(Reply(script=chat_script(["no usage sent"])))
    body = (await ada.post("/api/chat", {"message": "hi", "attachments": [image["id"]]})).json()
    assert body["usage"]["input_tokens"] > 700


async def test_the_demo_model_says_what_it_received(ada):
    image = await uploaded(ada, "shot.png", png(640, 480))
    document = await uploaded(ada, "report.pdf", pdf(3))
    response = await ada.post(
        "/api/chat", {"message": "Describe", "attachments": [image["id"], document["id"]]}
    )
    reply = response.json()["reply"]
    assert "a PNG image of 640×480 pixels" in reply
    assert "a PDF, report.pdf, of 3 page(s)" in reply


async def test_deleting_the_conversation_removes_its_files(ada, upstream, local_storage):
    image = await uploaded(ada, "shot.png", png())
    shared = await uploaded(ada, "shared.txt", b"in two conversations\n")
    first = (
        await ada.post("/api/chat", {"message": "a", "attachments": [image["id"], shared["id"]]})
    ).json()
    await ada.post("/api/chat", {"message": "b", "attachments": [shared["id"]]})
    response = await ada.request("DELETE", f"/api/conversations/{first['conversation']}")
    assert response.status == 204
    gone = await Attachment.objects.aget(pk=image["id"])
    assert gone.removed_at is not None and not (local_storage / gone.storage_key).exists()
    assert (await ada.get(image["url"])).status == 404
    # Still shown in the other conversation: kept.
    assert (await ada.get(shared["url"])).status == 200


async def test_a_model_that_cannot_see_gets_earlier_images_named_in_text(ada, upstream, settings):
    settings.CHAT_MODELS = ["gpt-4.1-mini", "llama3.2"]
    image = await uploaded(ada, "shot.png", png())
    upstream.queue(Reply(script=chat_script(["red"])))
    first = (await ada.post("/api/chat", {"message": "What?", "attachments": [image["id"]]})).json()
    upstream.queue(Reply(script=chat_script(["ok"])))
    response = await ada.post(
        "/api/chat",
        {"message": "And now?", "conversation": first["conversation"], "model": "llama3.2"},
    )
    assert response.status == 200
    user = upstream.bodies[1]["messages"][0]
    assert [part["type"] for part in user["content"]] == ["text", "text"]
    assert "shot.png was attached here" in user["content"][1]["text"]


async def test_a_file_whose_bytes_were_removed_is_named_instead(ada, upstream, local_storage):
    from asgiref.sync import sync_to_async
    from django.utils import timezone

    from chat.conversations import history_purge

    image = await uploaded(ada, "shot.png", png())
    upstream.queue(Reply(script=chat_script(["red"])))
    first = (await ada.post("/api/chat", {"message": "What?", "attachments": [image["id"]]})).json()
    # Retention: everything written before now goes, the file with it.
    done = await sync_to_async(history_purge)(before=timezone.now())
    assert done.files == 1 and (await ada.get(image["url"])).status == 404
    row = await Attachment.objects.aget(pk=image["id"])
    assert not (local_storage / row.storage_key).exists()
    upstream.queue(Reply(script=chat_script(["gone"])))
    response = await ada.post(
        "/api/chat", {"message": "Still there?", "conversation": first["conversation"]}
    )
    assert response.status == 200
    user = upstream.bodies[1]["messages"][0]
    # Its text went with retention too; what is left says a file was there.
    assert user["content"] == "\n[shot.png was attached here and removed.]"


async def test_the_export_names_the_files(ada, upstream):
    image = await uploaded(ada, "shot.png", png())
    turn = (await ada.post("/api/chat", {"message": "See", "attachments": [image["id"]]})).json()
    export = f"/api/conversations/{turn['conversation']}/export"
    markdown = (await ada.get(f"{export}?format=md")).body.decode()
    assert "## You\n\nSee\n\n*Attached: shot.png*\n" in markdown
    data = (await ada.get(f"{export}?format=json")).json()
    assert data["messages"][0]["attachments"][0]["name"] == "shot.png"


async def test_regenerating_with_a_model_that_cannot_see_is_refused_first(ada, upstream, settings):
    settings.CHAT_MODELS = ["gpt-4.1-mini", "llama3.2"]
    image = await uploaded(ada, "shot.png", png())
    upstream.queue(Reply(script=chat_script(["red"])))
    turn = (await ada.post("/api/chat", {"message": "What?", "attachments": [image["id"]]})).json()
    refused = await ada.post(f"/api/messages/{turn['message']}/regenerate", {"model": "llama3.2"})
    assert refused.status == 400
    assert refused.json()["error"]["type"] == "model_cannot_see_images"
    assert upstream.calls == 1


async def test_a_long_text_file_is_cut_for_the_model_with_a_note(ada, upstream, settings):
    settings.CHAT_FILES_MAX_TEXT_CHARS = 10
    notes = await uploaded(ada, "log.txt", b"0123456789abcdef\n")
    upstream.queue(Reply(script=chat_script(["ok"])))
    await ada.post("/api/chat", {"message": "Read", "attachments": [notes["id"]]})
    text = upstream.bodies[0]["messages"][0]["content"][1]["text"]
    assert text == "Attached file log.txt:\n\n0123456789\n[… cut here: 7 more characters]"


async def test_turns_read_a_file_from_storage_once_per_worker_an_uploaded_image_never(
    ada, upstream, local_storage
):
    """Each worker keeps the files it sent (an image from its upload on): a conversation's
    turns send its earlier files again without reading them back. Shown by taking the
    bytes from under the storage: the turns still send them."""
    image = await uploaded(ada, "shot.png", png(24, 24))
    notes = await uploaded(ada, "notes.txt", b"line one\n")

    async def take_away(file: dict) -> None:
        row = await Attachment.objects.aget(pk=file["id"])
        (local_storage / row.storage_key).unlink()

    await take_away(image)  # its upload left it encoded: the first turn reads nothing
    upstream.queue(Reply(script=chat_script(["one"])))
    first = await ada.post(
        "/api/chat", {"message": "What?", "attachments": [image["id"], notes["id"]]}
    )
    await take_away(notes)  # read once, by the first turn
    upstream.queue(Reply(script=chat_script(["two"])))
    await ada.post("/api/chat", {"message": "And?", "conversation": first.json()["conversation"]})
    sent, again = (body["messages"][0]["content"] for body in upstream.bodies)
    assert again == sent
    assert Image.open(
        io.BytesIO(data_url_bytes(again[1]["image_url"]["url"], "image/png"))
    ).size == (24, 24)
    assert again[2]["text"].endswith("line one\n")


async def test_an_animated_gif_goes_to_the_model_as_its_first_frame(ada, upstream):
    """Models take still images: the animation is kept for people, the model gets a PNG."""
    wave = await uploaded(ada, "wave.gif", animated_gif())
    still = await uploaded(ada, "still.gif", animated_gif(((9, 9, 9),)))
    upstream.queue(Reply(script=chat_script(["Red."])))
    await ada.post("/api/chat", {"message": "What?", "attachments": [wave["id"], still["id"]]})
    _, first, second = upstream.bodies[0]["messages"][0]["content"]
    frame = Image.open(io.BytesIO(data_url_bytes(first["image_url"]["url"], "image/png")))
    assert frame.format == "PNG" and frame.convert("RGB").getpixel((5, 5)) == (255, 0, 0)
    assert data_url_bytes(second["image_url"]["url"], "image/gif").startswith(b"GIF8")


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_files_go_into_the_body_as_the_sdk_would_encode_them_but_once(
    ada, upstream, settings, monkeypatch, api
):
    """A file's data URL is encoded as JSON once per worker and spliced into the body as
    it is sent; the SDK's own encoder never reads its bytes. The bytes on the wire are
    exactly what the SDK would have written: the body re-encoded by the SDK's encoder from
    what it holds is the same bytes, and a person's text cannot be taken for a file."""
    from openai import _base_client

    from chat import llm

    settings.CHAT_API = api
    encoded: list[int] = []
    sdk_encoded: list[int] = []
    real_data_url_json, real_dumps = llm.data_url_json, _base_client.openapi_dumps

    def counted(content_type: str, data: bytes) -> bytes:
        encoded.append(len(data))
        return real_data_url_json(content_type, data)

    def sdk_dumps(obj: object) -> bytes:
        body = real_dumps(obj)
        sdk_encoded.append(len(body))
        return body

    monkeypatch.setattr(llm, "data_url_json", counted)
    monkeypatch.setattr(_base_client, "openapi_dumps", sdk_dumps)
    photo = io.BytesIO()
    Image.effect_noise((200, 150), 80).convert("RGB").save(photo, "PNG")  # ~90 KB
    image = await uploaded(ada, "photo.png", photo.getvalue())
    document = await uploaded(ada, "report.pdf", pdf(2))
    assert len(encoded) == 1  # the image, at its upload
    script = chat_script if api == "chat" else responses_script
    trap = 'Not a file: "data:x" and \\u0000 and a " quote'
    upstream.queue(Reply(script=script(["Red."])))
    first = await ada.post(
        "/api/chat", {"message": trap, "attachments": [image["id"], document["id"]]}
    )
    upstream.queue(Reply(script=script(["Still red."])))
    await ada.post(
        "/api/chat", {"message": "And now?", "conversation": first.json()["conversation"]}
    )
    assert len(encoded) == 2  # the PDF, at the turn that first sent it: once per worker

    for request in upstream.requests:
        raw = request.content
        assert raw == real_dumps(json.loads(raw))
        assert request.headers["content-length"] == str(len(raw))
        assert "transfer-encoding" not in request.headers
    assert max(sdk_encoded) < 4096 < len(photo.getvalue())  # no file went through it
    for body in upstream.bodies:
        [user, *_] = body["messages"] if api == "chat" else body["input"]
        text, image_part, file_part = user["content"]
        assert text["text"] == trap
        url = image_part["image_url"]["url"] if api == "chat" else image_part["image_url"]
        assert Image.open(io.BytesIO(data_url_bytes(url, "image/png"))).size == (200, 150)
        data = file_part["file"]["file_data"] if api == "chat" else file_part["file_data"]
        assert data_url_bytes(data, "application/pdf") == pdf(2)


async def test_over_aiohttp_as_deployed_the_server_gets_those_bytes(
    ada, settings, fake_upstream, local_storage
):
    """The deployed HTTP client (aiohttp) sends a body with files in pieces, so a file's
    bytes are never copied into one body: a real server gets one body of the declared
    length (not chunked), byte for byte what the SDK would have written."""
    from openai._utils._json import openapi_dumps

    from chat import llm

    settings.CHAT_PROVIDER = "openai"
    settings.OPENAI_API_KEY = "sk-test-not-secret"
    settings.OPENAI_BASE_URL = f"{fake_upstream}/v1"
    settings.CHAT_API = "chat"
    settings.CHAT_HTTP_CLIENT = "aiohttp"
    settings.CHAT_MODEL = "fake-model"
    settings.CHAT_MODELS = ["fake-model"]
    settings.CHAT_VISION_MODELS = ["fake-model"]
    llm.reset()
    async with httpx2.AsyncClient() as http:
        await http.post(f"{fake_upstream}/_config", json={"ttft_ms": 1, "delay_ms": 0, "tokens": 3})
        photo = io.BytesIO()
        Image.effect_noise((300, 200), 80).convert("RGB").save(photo, "PNG")
        image = await uploaded(ada, "photo.png", photo.getvalue())
        response = await ada.post("/api/chat", {"message": "What?", "attachments": [image["id"]]})
        assert response.status == 200 and response.json()["status"] == "completed", response.body
        last = (await http.get(f"{fake_upstream}/_last")).json()
    head, body = last["head"].lower(), base64.b64decode(last["body"])
    assert "transfer-encoding" not in head and f"content-length: {len(body)}\r\n" in head
    assert body == openapi_dumps(json.loads(body))
    [user] = json.loads(body)["messages"]
    url = user["content"][1]["image_url"]["url"]
    assert Image.open(io.BytesIO(data_url_bytes(url, "image/png"))).size == (300, 200)
