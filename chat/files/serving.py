"""An attachment's bytes as an HTTP response, for its owner (`chat.views`) and for staff
(the admin): images shown inline, every other type a download, and the browser told
never to guess another type (`nosniff`) or run anything in it (a sandboxing CSP)."""

from __future__ import annotations

from django.utils.http import content_disposition_header

from chat.files.storage import stored_chunks
from chat.models import Attachment
from chat.seams import ClosingStreamingResponse

INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})


def file_response(attachment: Attachment) -> ClosingStreamingResponse:
    content_type = attachment.content_type
    if attachment.kind == Attachment.Kind.TEXT:
        content_type += "; charset=utf-8"
    response = ClosingStreamingResponse(
        stored_chunks(attachment.storage_key), content_type=content_type
    )
    response["Content-Length"] = str(attachment.size)
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, max-age=3600"
    inline = attachment.content_type in INLINE_TYPES
    disposition = content_disposition_header(not inline, attachment.name)
    if disposition:
        response["Content-Disposition"] = disposition
    return response
