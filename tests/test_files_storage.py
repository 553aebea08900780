"""Where attachments' bytes go: S3-compatible object storage (a real S3-protocol server,
moto's, in its own process), retention and unsent uploads, and the memory an upload costs."""

from __future__ import annotations

import os
import sys
import tracemalloc
from datetime import timedelta
from io import StringIO

import boto3
import pytest
from django.core.management import call_command
from django.utils import timezone

from chat.models import Attachment
from tests.asgi import asgi_request
from tests.files import multipart, pdf, png, uploaded
from tests.servers import HOST, free_port, start, stop

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

BUCKET = "chat-attachments"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's standalone server: the S3 protocol over HTTP on a local port."""
    port = free_port()
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1"}
    proc = start([sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)], env, port)
    yield f"http://{HOST}:{port}"
    stop(proc)


@pytest.fixture
def s3(settings, s3_endpoint):
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", **CREDENTIALS)
    client.create_bucket(Bucket=BUCKET)
    settings.STORAGES = {
        **settings.STORAGES,
        "attachments": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": BUCKET,
                "endpoint_url": s3_endpoint,
                "region_name": "us-east-1",
                "access_key": CREDENTIALS["aws_access_key_id"],
                "secret_key": CREDENTIALS["aws_secret_access_key"],
                "location": "attachments",
                "default_acl": "private",
                "file_overwrite": False,
            },
        },
    }
    yield client
    for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)


async def test_s3_stores_private_objects_and_serves_them_through_the_api(ada, bob, s3, upstream):
    image = await uploaded(ada, "shot.png", png(20, 10))
    row = await Attachment.objects.aget(pk=image["id"])
    key = f"attachments/{row.storage_key}"
    stored = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert stored[:8] == b"\x89PNG\r\n\x1a\n" and len(stored) == row.size
    grants = s3.get_object_acl(Bucket=BUCKET, Key=key)["Grants"]
    assert [g["Permission"] for g in grants] == ["FULL_CONTROL"]  # the owner only
    assert "Group" not in str(grants)  # no AllUsers / AuthenticatedUsers grant
    assert image["url"] == f"/api/files/{image['id']}"  # never the bucket's URL

    served = await ada.get(image["url"])
    assert served.status == 200 and served.body == stored
    assert (await bob.get(image["url"])).status == 404

    # Sent to the model from S3, and removed from the bucket with its conversation.
    turn = (await ada.post("/api/chat", {"message": "hi", "attachments": [image["id"]]})).json()
    assert upstream.bodies[0]["messages"][0]["content"][1]["type"] == "image_url"
    await ada.request("DELETE", f"/api/conversations/{turn['conversation']}")
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


async def test_chat_purge_removes_unsent_uploads_after_a_day_and_deleted_conversations_files(
    ada, upstream, local_storage, time_machine
):
    old = await uploaded(ada, "old.txt", b"never sent\n")
    sent = await uploaded(ada, "sent.txt", b"sent\n")
    turn = (await ada.post("/api/chat", {"message": "hi", "attachments": [sent["id"]]})).json()
    fresh_key = None
    time_machine.move_to(timezone.now() + timedelta(hours=25))
    fresh = await uploaded(ada, "fresh.txt", b"just uploaded\n")
    fresh_key = (await Attachment.objects.aget(pk=fresh["id"])).storage_key

    out = StringIO()
    from asgiref.sync import sync_to_async

    await sync_to_async(call_command)("chat_purge", "--deleted-before", "30d", stdout=out)
    assert "Removed 1 upload(s) never sent" in out.getvalue()
    assert (await Attachment.objects.aget(pk=old["id"])).removed_at is not None
    assert (await ada.get(sent["url"])).status == 200  # sent: kept
    assert (local_storage / fresh_key).exists()  # younger than a day: kept

    # Retention: a conversation deleted long ago takes its files with its text.
    from chat.models import Conversation

    await Conversation.objects.filter(pk=turn["conversation"]).aupdate(
        deleted_at=timezone.now() - timedelta(days=40)
    )
    await sync_to_async(call_command)("chat_purge", "--deleted-before", "30d", stdout=out)
    assert (await Attachment.objects.aget(pk=sent["id"])).removed_at is not None


async def test_a_20_mb_upload_never_sits_in_memory_whole(ada, local_storage):
    """Uploads stream: the server receives the body in chunks (as uvicorn gives it), Django
    spools it to disk, and it is hashed, checked and stored chunk by chunk."""
    big = pdf(1) + b"%" + b"0" * 20_000_000
    body, header = multipart("big.pdf", big)
    headers = {"content-type": header, "content-length": str(len(body))}
    tracemalloc.start()
    try:
        response = await asgi_request(
            "POST", "/api/files", body=body, headers=headers, cookies=ada.cookies, body_chunk=65536
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status == 201, response.body
    assert response.json()["size"] == len(big)
    row = await Attachment.objects.aget()
    assert (local_storage / row.storage_key).stat().st_size == len(big)
    assert peak < len(big) / 4, f"peak {peak / 1e6:.1f} MB for a {len(big) / 1e6:.1f} MB upload"
