"""Messages as streamed, spreadsheet-safe CSV: what the changelist shows, or a selection.
Message text is not exported."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone

from chat.admin.csv_files import csv_response
from chat.models import Message
from chat.spend.reports import ANONYMOUS

EXPORT_COLUMNS: list[tuple[str, str]] = [
    ("id", "pk"),
    ("created_at", "created_at"),
    ("finished_at", "finished_at"),
    ("conversation", "conversation_id"),
    ("conversation_title", "conversation__title"),
    ("owner", "conversation__owner__username"),
    ("role", "role"),
    ("status", "status"),
    ("provider", "provider"),
    ("api", "api"),
    ("model", "model"),
    ("input_tokens", "input_tokens"),
    ("output_tokens", "output_tokens"),
    ("cached_tokens", "cached_tokens"),
    ("reasoning_tokens", "reasoning_tokens"),
    ("total_tokens", "total_tokens"),
    ("usage_estimated", "usage_estimated"),
    ("cost_usd", "cost"),
    ("ttft_ms", "ttft_ms"),
    ("duration_ms", "duration_ms"),
    ("finish_reason", "finish_reason"),
    ("error_type", "error_type"),
    ("error_message", "error_message"),
]


def messages_csv(request: HttpRequest, queryset: QuerySet[Message]) -> StreamingHttpResponse:
    values = queryset.values_list(*(field for _, field in EXPORT_COLUMNS))
    owner_index = [name for name, _ in EXPORT_COLUMNS].index("owner")

    def rows() -> Iterator[Sequence[object]]:
        yield [name for name, _ in EXPORT_COLUMNS]
        for row in values.iterator(chunk_size=2000):
            if row[owner_index] is None:
                row = (*row[:owner_index], ANONYMOUS, *row[owner_index + 1 :])
            yield row

    stamp = timezone.localtime().strftime("%Y%m%d-%H%M%S")
    return csv_response(request, filename=f"messages-{stamp}.csv", rows=rows())
