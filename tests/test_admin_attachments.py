"""Attachments in the admin: a message's files on its page, the bytes for staff with the
view permission only, the attachment list and each person's storage in use."""

from __future__ import annotations

import io

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from chat.files.storage import stored_write
from chat.models import Attachment, Conversation, Message, MessageAttachment
from tests.asgi import asgi_request
from tests.files import png
from tests.test_admin import staff_client

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _setup(settings, tmp_path):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.STORAGES = {
        **settings.STORAGES,
        "attachments": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "attachments")},
        },
    }


@pytest.fixture
def sent_image():
    """Ada's message with a screenshot, stored as an upload would store it."""
    ada = get_user_model().objects.create_user("ada")
    data = png(30, 20)
    key = stored_write("ab/screenshot.png", io.BytesIO(data))
    attachment = Attachment.objects.create(
        owner=ada,
        name="screenshot.png",
        kind="image",
        content_type="image/png",
        size=len(data),
        width=30,
        height=20,
        sha256="0" * 64,
        storage_key=key,
    )
    conversation = Conversation.objects.create(owner=ada, model="gpt-4.1-mini")
    message = Message.objects.create(conversation=conversation, role="user", content="see")
    MessageAttachment.objects.create(message=message, attachment=attachment)
    return message, attachment, data


def served(client: Client, url: str):
    """`url` through the ASGI application, as uvicorn serves it, with `client`'s session:
    the bytes are an async stream, which Django's sync test client cannot read cleanly."""
    cookies = {"sessionid": client.cookies["sessionid"].value}
    return async_to_sync(asgi_request)("GET", url, cookies=cookies)


def test_a_message_page_lists_its_files_with_a_link(admin_client, sent_image):
    message, attachment, _ = sent_image
    page = admin_client.get(reverse("admin:chat_message_change", args=[message.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    download = reverse("admin:chat_attachment_download", args=[attachment.pk])
    assert "screenshot.png" in html and "image/png" in html and download in html


@pytest.mark.django_db(transaction=True)  # the ASGI app reads the rows from its own thread
def test_staff_with_the_permission_get_the_bytes_and_others_do_not(sent_image):
    _, attachment, data = sent_image
    url = reverse("admin:chat_attachment_download", args=[attachment.pk])
    allowed = staff_client("view_attachment")
    response = served(allowed, url)
    assert response.status == 200 and response.body == data
    assert response.headers["x-content-type-options"] == "nosniff"
    get_user_model().objects.create_user("other", is_staff=True)
    refused = Client()
    refused.force_login(get_user_model().objects.get(username="other"))
    assert refused.get(url).status_code == 403
    visitor = Client()
    assert visitor.get(url).status_code == 302  # to the admin's sign-in


def test_the_list_and_each_persons_storage(admin_client, sent_image):
    listing = admin_client.get(reverse("admin:chat_attachment_changelist"))
    assert listing.status_code == 200 and "screenshot.png" in listing.content.decode()
    storage = admin_client.get(reverse("admin:chat_attachment_storage"))
    html = storage.content.decode()
    assert storage.status_code == 200 and "<td>ada</td><td>1</td>" in html
