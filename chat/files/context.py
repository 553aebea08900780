"""A turn's files for the model: the stored bytes of the attachments its context refers
to, read once per turn (never decoded or re-encoded again: that happened at upload)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence

from asgiref.sync import sync_to_async

from chat import llm
from chat.errors import ChatError
from chat.files.storage import stored_read
from chat.models import Attachment


async def files_in_context(
    context: list[llm.ContextMessage], attached: Mapping[int, list[uuid.UUID]]
) -> list[llm.ContextMessage]:
    """`context` with the files of each message (`attached`: its index in `context` → the
    attachment ids, in order) read from storage. A file whose bytes were removed is
    named in the text instead."""
    if not attached:
        return context
    ids = {pk for pks in attached.values() for pk in pks}
    rows = {a.pk: a async for a in Attachment.objects.filter(pk__in=ids)}
    live = [a for a in rows.values() if a.removed_at is None]
    read = sync_to_async(stored_read, thread_sensitive=False)
    read_all = await asyncio.gather(*(read(a.storage_key) for a in live))
    contents = dict(zip([a.pk for a in live], read_all, strict=True))
    messages: list[llm.ContextMessage] = []
    for index, message in enumerate(context):
        pks = attached.get(index)
        if not pks:
            messages.append(message)
            continue
        files: list[llm.InputFile] = []
        notes: list[str] = []
        for pk in pks:
            row = rows.get(pk)
            if row is None or pk not in contents:
                notes.append(f"[{row.name if row else 'A file'} was attached here and removed.]")
                continue
            kind = llm.file_kind(row.kind)
            files.append(llm.InputFile(kind, row.name, row.content_type, contents[pk]))
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
