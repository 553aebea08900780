"""Where attachments' bytes live: Django's storage API, the `attachments` entry of
`STORAGES` (local files under MEDIA_ROOT by default, S3-compatible object storage through
django-storages when `CHAT_FILES_S3_BUCKET` is set; see settings). Never a public URL: the
bytes are read back here and served by `chat.files.serving`.

Storage calls block (disk, or HTTP to S3), so the async callers run them on the default
thread pool (`thread_sensitive=False`), not on the chat's database thread."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import IO

from asgiref.sync import sync_to_async
from django.core.files import File
from django.core.files.storage import Storage, storages

CHUNK = 64 * 1024


def attachments_storage() -> Storage:
    return storages["attachments"]


def stored_write(key: str, content: IO[bytes]) -> str:
    """Write `content` under `key`, streamed (chunks, or an S3 multipart upload); returns
    the key the storage chose (never overwriting another object)."""
    return attachments_storage().save(key, File(content, name=key))


def stored_read(key: str) -> bytes:
    with attachments_storage().open(key, "rb") as stored:
        data: bytes = stored.read()
    return data


def stored_delete(key: str) -> None:
    attachments_storage().delete(key)


async def stored_chunks(key: str) -> AsyncIterator[bytes]:
    """The stored bytes in chunks, for a response body, never all in memory."""
    stored = await sync_to_async(attachments_storage().open, thread_sensitive=False)(key, "rb")
    try:
        while chunk := await sync_to_async(stored.read, thread_sensitive=False)(CHUNK):
            yield chunk
    finally:
        await sync_to_async(stored.close, thread_sensitive=False)()
