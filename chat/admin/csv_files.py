"""Streamed CSV downloads that open cleanly in a spreadsheet, under WSGI and ASGI."""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator, Generator, Iterable, Iterator, Sequence
from datetime import datetime

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone

# Spreadsheets run a cell that starts with one of these as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class _Line:
    """A file-like object whose write returns the line, so csv.writer can stream."""

    def write(self, value: str) -> str:
        return value


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _csv_chunks(
    rows: Iterator[Sequence[object]], *, rows_per_chunk: int = 500
) -> Generator[str, None, None]:
    writer = csv.writer(_Line())
    # The byte-order mark makes Excel read the file as UTF-8.
    buffer = ["\ufeff"]
    for row in rows:
        buffer.append(writer.writerow([_cell(value) for value in row]))
        if len(buffer) >= rows_per_chunk:
            yield "".join(buffer)
            buffer = []
    if buffer:
        yield "".join(buffer)


async def _from_thread(chunks: Generator[str, None, None]) -> AsyncIterator[str]:
    """Under ASGI a sync iterator would be read whole into memory first; pull it chunk by
    chunk on Django's sync thread instead, where the database connection lives."""
    pull = sync_to_async(lambda: next(chunks, None), thread_sensitive=True)
    try:
        while (chunk := await pull()) is not None:
            yield chunk
    finally:
        await sync_to_async(chunks.close, thread_sensitive=True)()


def csv_response(
    request: HttpRequest, *, filename: str, rows: Iterator[Sequence[object]]
) -> StreamingHttpResponse:
    chunks = _csv_chunks(rows)
    content: Iterable[str] | AsyncIterator[str] = (
        _from_thread(chunks) if isinstance(request, ASGIRequest) else chunks
    )
    response = StreamingHttpResponse(content, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
