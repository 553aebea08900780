"""`file_upload`: an upload checked, made safe and stored, once per person and content.

The upload arrives as Django's `UploadedFile` (in memory up to FILE_UPLOAD_MAX_MEMORY_SIZE,
else a temporary file): it is hashed and inspected in chunks and written to storage as a
stream, so a large PDF never sits in memory; an image is decoded and re-encoded
(`validation`), which needs its pixels in memory, capped by `CHAT_FILES_MAX_PIXELS`.
Blocking work (hashing, Pillow, storage) runs on the thread pool; the ORM through its
async methods."""

from __future__ import annotations

import hashlib
import io
import uuid
from typing import IO

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError

from chat.access.owners import Owner
from chat.errors import ChatError
from chat.files import storage
from chat.files.context import file_remember
from chat.files.names import safe_name
from chat.files.selectors import FileData, file_data, owned
from chat.files.validation import CHUNK, Inspected, inspect
from chat.models import Attachment
from chat.spend import limits


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def too_large(size: int) -> ChatError:
    limit = settings.CHAT_FILES_MAX_BYTES
    return ChatError(
        "file_too_large",
        f"The file is {_megabytes(size)}; files of up to {_megabytes(limit)} are accepted.",
    )


async def file_upload(*, owner: Owner, upload: UploadedFile, limits_key: str) -> FileData:
    """Store `upload` for `owner` and describe it. The same bytes uploaded again by the
    same person give the stored attachment back (not counted again against the day).
    `limits_key`: whom the daily bytes are counted against (`chat.spend.limits`)."""
    size = upload.size or 0
    if size > settings.CHAT_FILES_MAX_BYTES:
        raise too_large(size)
    digest = await sync_to_async(_sha256, thread_sensitive=False)(upload)
    mine = owned(owner)
    existing = await mine.filter(sha256=digest).afirst()
    if existing is not None:
        return file_data(existing)
    await limits.upload_take(limits_key, size)
    try:
        attachment, stored = await _stored(owner, upload, digest)
    except ChatError:
        await limits.upload_return(limits_key, size)
        raise
    if not stored:  # the same bytes, stored by a request that just won
        await limits.upload_return(limits_key, size)
    return file_data(attachment)


async def _stored(owner: Owner, upload: UploadedFile, digest: str) -> tuple[Attachment, bool]:
    """The upload checked and written; False with the row of an identical upload that was
    stored meanwhile."""
    name = upload.name or ""
    inspected: Inspected = await sync_to_async(inspect, thread_sensitive=False)(
        upload, name=name, max_pixels=settings.CHAT_FILES_MAX_PIXELS
    )
    content: IO[bytes] = upload
    size = upload.size or 0
    if inspected.reencoded is not None:
        content, size = io.BytesIO(inspected.reencoded), len(inspected.reencoded)
        if size > settings.CHAT_FILES_MAX_BYTES:
            raise too_large(size)
    content.seek(0)
    pk = uuid.uuid4()
    key = await sync_to_async(storage.stored_write, thread_sensitive=False)(
        f"{pk.hex[:2]}/{pk.hex}.{inspected.extension}", content
    )
    try:
        attachment = await Attachment.objects.acreate(
            id=pk,
            owner_id=owner.user_id,
            anonymous_key=owner.anonymous_key,
            name=safe_name(name, extension=_name_extension(inspected, name)),
            kind=inspected.kind,
            content_type=inspected.content_type,
            size=size,
            width=inspected.width,
            height=inspected.height,
            sha256=digest,
            storage_key=key,
        )
    except IntegrityError:
        # The unique constraint (owner, sha256): keep the first copy.
        await sync_to_async(storage.stored_delete, thread_sensitive=False)(key)
        return await owned(owner).aget(sha256=digest), False
    if inspected.reencoded is not None:
        await sync_to_async(file_remember, thread_sensitive=False)(
            storage_key=key, content_type=inspected.content_type, data=inspected.reencoded
        )
    return attachment, True


# Extensions a browser or desktop would open as a page, whatever the bytes: a text file
# named so is saved as .txt.
MARKUP_EXTENSIONS = frozenset({"htm", "html", "xhtml", "shtml", "svg", "svgz", "xml", "mht"})


def _name_extension(inspected: Inspected, name: str) -> str:
    """The extension the name should end in: the type's, except that a text file keeps
    a text extension of its own (`.log`, `.py` are plain text too), never a markup one."""
    if inspected.kind == Attachment.Kind.TEXT and inspected.content_type == "text/plain":
        ext = name.rpartition(".")[2].lower() if "." in name else ""
        keep = ext.isalnum() and len(ext) <= 10 and ext not in MARKUP_EXTENSIONS
        return ext if keep else "txt"
    return inspected.extension


def _sha256(upload: UploadedFile) -> str:
    digest = hashlib.sha256()
    upload.seek(0)
    for chunk in upload.chunks(CHUNK):
        digest.update(chunk)
    upload.seek(0)
    return digest.hexdigest()
