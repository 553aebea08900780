"""A turn's files for the model: the stored bytes of the attachments its context refers
to, as the model takes them (an image or PDF as a base64 `data:` URL already encoded as
the request's JSON string, `chat.llm.bodies`; a text file as text). Nothing is decoded or
re-encoded again (that happened once, at upload), and a conversation sends its earlier
images again on every turn, so each worker keeps the newest encoded files
(`CHAT_FILES_CACHE_BYTES`) rather than read and encode them again each turn: a stored
file's bytes never change under its key."""

from __future__ import annotations

import asyncio
import io
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from PIL import Image

from chat import llm
from chat.errors import ChatError
from chat.files.storage import stored_read
from chat.models import Attachment


class EncodedFiles:
    """Data URLs as JSON strings (and text files' text) by storage key, the most recently
    used kept up to `budget` bytes (characters, for text). Filled from the thread pool,
    hence the lock."""

    def __init__(self) -> None:
        self._urls: OrderedDict[str, str | bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> str | bytes | None:
        with self._lock:
            url = self._urls.get(key)
            if url is not None:
                self._urls.move_to_end(key)
            return url

    def put(self, key: str, url: str | bytes, *, budget: int) -> None:
        if len(url) > budget:
            return
        with self._lock:
            if key in self._urls:
                return
            self._urls[key] = url
            self._size += len(url)
            while self._size > budget:
                _, dropped = self._urls.popitem(last=False)
                self._size -= len(dropped)

    def clear(self) -> None:
        with self._lock:
            self._urls.clear()
            self._size = 0


encoded = EncodedFiles()


def _cached_file(attachment: Attachment) -> llm.InputFile | None:
    """The file from this worker's cache, or None: checked on the event loop, so a turn
    whose files are all cached makes no thread hop for them."""
    kind = llm.file_kind(attachment.kind)
    value = encoded.get(attachment.storage_key)
    if isinstance(value, str):
        return llm.InputFile(kind, attachment.name, attachment.content_type, text=value)
    if value is None:
        return None
    return llm.InputFile(kind, attachment.name, attachment.content_type, data_url_json=value)


def _input_file(attachment: Attachment) -> llm.InputFile:
    """Runs on the thread pool: storage reads block. What it made is cached."""
    kind = llm.file_kind(attachment.kind)
    data = stored_read(attachment.storage_key)
    budget = settings.CHAT_FILES_CACHE_BYTES
    if kind == "text":
        text = data.decode("utf-8", "replace")
        limit = settings.CHAT_FILES_MAX_TEXT_CHARS
        if len(text) > limit:
            text = f"{text[:limit]}\n[… cut here: {len(text) - limit:,} more characters]"
        encoded.put(attachment.storage_key, text, budget=budget)
        return llm.InputFile(kind, attachment.name, attachment.content_type, text=text)
    url = _model_data_url(attachment.content_type, data)
    encoded.put(attachment.storage_key, url, budget=budget)
    return llm.InputFile(kind, attachment.name, attachment.content_type, data_url_json=url)


def file_remember(*, storage_key: str, content_type: str, data: bytes) -> None:
    """Cache an image just stored (its re-encoded bytes are at hand): its first turn, on
    this worker, then reads nothing back from storage. Part of the one-time upload cost."""
    url = _model_data_url(content_type, data)
    encoded.put(storage_key, url, budget=settings.CHAT_FILES_CACHE_BYTES)


def _model_data_url(content_type: str, data: bytes) -> bytes:
    """The file as a data URL for the model, as a JSON string. An animated GIF (kept
    animated for people) goes as its first frame, a PNG: models take still images only."""
    if content_type == "image/gif":
        with Image.open(io.BytesIO(data)) as image:
            if getattr(image, "is_animated", False):
                out = io.BytesIO()
                image.convert("RGBA").save(out, format="PNG")
                return llm.data_url_json("image/png", out.getvalue())
    return llm.data_url_json(content_type, data)


async def files_in_context(
    context: list[llm.ContextMessage], attached: Mapping[int, list[Attachment]]
) -> list[llm.ContextMessage]:
    """`context` with the files of each message (`attached`: its index in `context` → its
    attachments, as read with the context, in order). A file whose bytes were removed is
    named in the text instead."""
    if not attached:
        return context
    live = {a.pk: a for files in attached.values() for a in files if a.removed_at is None}
    loaded: dict[Any, llm.InputFile] = {}
    missing: list[Attachment] = []
    for pk, attachment in live.items():
        cached = _cached_file(attachment)
        if cached is None:
            missing.append(attachment)
        else:
            loaded[pk] = cached
    if missing:
        load = sync_to_async(_input_file, thread_sensitive=False)
        read = await asyncio.gather(*map(load, missing))
        loaded.update(zip((a.pk for a in missing), read, strict=True))
    messages: list[llm.ContextMessage] = []
    for index, message in enumerate(context):
        rows = attached.get(index)
        if not rows:
            messages.append(message)
            continue
        files = [loaded[a.pk] for a in rows if a.pk in loaded]
        notes = [f"[{a.name} was attached here and removed.]" for a in rows if a.pk not in loaded]
        text = "\n".join([message["content"], *notes])
        messages.append({"role": message["role"], "content": text, "files": files})
    return messages


def files_check_model(attachments: Sequence[Attachment], *, model: str) -> None:
    """Refuse (400, before any upstream call) images or PDFs for a model that cannot take
    them (`CHAT_VISION_MODELS`); text files go to every model."""
    unseen = [a.name for a in attachments if a.kind != Attachment.Kind.TEXT]
    if unseen and not llm.sees_images(model):
        raise ChatError(
            "model_cannot_see_images",
            f"Model {model!r} cannot read images or PDFs ({', '.join(unseen)}); "
            "choose a model that can, or send text only.",
        )
