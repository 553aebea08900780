"""Messages: read-only records, filtered by outcome, model and date; the usage dashboard
and the CSV export hang off this admin's URLs."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import (
    HttpRequest,
    HttpResponseBase,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.text import Truncator

from chat.admin import dashboard
from chat.admin.attachments import MessageAttachmentInline
from chat.admin.display import (
    VersionFilter,
    cut,
    duration,
    message_badge,
    owner_name,
    purged_text,
    short_time,
    token_pair,
    version_label,
)
from chat.admin.export import messages_csv
from chat.admin.lists import LargeTableAdmin, ledger_filter, month_filter
from chat.admin.parts import parts_table, rounds_table
from chat.models import Message
from chat.money import usd
from chat.search import joins_the_text_index, messages_matching, newest_match_first, query_words
from chat.spend.prices import messages_recost

# Every field of a message's page, grouped as shown; none of them can be edited here.
FIELD_GROUPS: dict[str | None, tuple[str, ...]] = {
    None: ("conversation", "role", "status", "text"),
    "Model": ("provider", "api", "model", "response_id", "finish_reason"),
    "Usage": (
        "input_tokens",
        "output_tokens",
        "total_tokens",
        "cached_tokens",
        "reasoning_tokens",
        "usage_estimated",
        "cost",
    ),
    "Reply parts and model calls": ("parts_shown", "rounds_shown"),
    "Timing": ("created_at", "finished_at", "ttft_ms", "duration_ms"),
    "Error": ("error_type", "error_message"),
    "Version": ("version", "version_of", "superseded_at"),
    "Retention": ("purged_at",),
}


class MessageChangeList(ChangeList):
    """The message changelist; a search on SQLite, in the default order (newest first),
    is ordered by the text index's rowid, which SQLite reads newest first and stops at
    the page (`chat.search.newest_match_first`)."""

    def get_queryset(
        self, request: HttpRequest, exclude_parameters: list[str | None] | None = None
    ) -> QuerySet[Message]:
        queryset: QuerySet[Message] = super().get_queryset(request, exclude_parameters)
        if joins_the_text_index(queryset) and set(queryset.query.order_by) <= {"-id", "-pk"}:
            return queryset.order_by(newest_match_first())
        return queryset


@admin.register(Message)
class MessageAdmin(LargeTableAdmin[Message]):
    # Who spent what, on which model, when, and what went wrong: what fits a 1280 px
    # screen beside the filters. Cached and reasoning tokens, duration, provider and API
    # are on each message's page (and in the CSV export).
    list_display = [
        "created",
        "badge",
        "owner",
        "conversation_link",
        "model_name",
        "spent",
        "tokens",
        "ttft",
        "error",
    ]
    # Every filter has an index (model Meta); model, provider and API offer the values the
    # usage ledger has seen, and the month drill-down the ledger's months: none scans.
    list_filter = [
        "status",
        "role",
        ledger_filter("model", "model"),
        ledger_filter("provider", "provider"),
        ledger_filter("api", "API"),
        "usage_estimated",
        VersionFilter,
        "created_at",
        month_filter("created_at"),
    ]
    list_select_related = ["conversation", "conversation__owner"]
    # Through the full-text index (`chat.search`): whole words of the message text.
    search_fields = ["content"]
    search_help_text = "Finds messages containing every word (full-text index)."
    # Only the orderings an index serves: a sort on a joined column or an unindexed one
    # would read the whole table to show one page.
    list_display_links = ["created"]
    sortable_by = ["badge", "created", "model_name", "spent"]
    ordering = ["-id"]
    actions = ["export_csv", "recompute_cost"]
    fieldsets = [(title, {"fields": fields}) for title, fields in FIELD_GROUPS.items()]
    inlines = [MessageAttachmentInline]
    readonly_fields = [field for fields in FIELD_GROUPS.values() for field in fields]

    # The stored record must be trustworthy: nobody adds, edits or deletes one here. Text
    # is removed by purging (`chat_purge`), which keeps every row's usage and cost.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        return False

    def get_ordering(self, request: HttpRequest) -> list[str]:
        # A date range (the date filter, the month drill-down) is read through the
        # created_at index, newest first, stopping at the page's rows; by id it would read
        # every newer row before reaching the range.
        if any(name.startswith("created_at") for name in request.GET):
            return ["-created_at", "-id"]
        return list(super().get_ordering(request))

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Message], search_term: str
    ) -> tuple[QuerySet[Message], bool]:
        words = query_words(search_term)
        if not words:
            return queryset, False
        return messages_matching(queryset, words), False

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return MessageChangeList

    def has_change_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        return False

    def has_recost_permission(self, request: HttpRequest) -> bool:
        # Recomputing writes only `cost`, deliberately; the model's change permission
        # (granted to superusers or explicitly) stands for that.
        return request.user.has_perm("chat.change_message")

    @admin.display(description="status", ordering="status")
    def badge(self, message: Message) -> str:
        return message_badge(message)

    @admin.display(description="version")
    def version(self, message: Message) -> str:
        return version_label(message)

    @admin.display(description="content")
    def text(self, message: Message) -> str:
        return purged_text(message.content, message.purged_at)

    @admin.display(description="parts, in order")
    def parts_shown(self, message: Message) -> str:
        return parts_table(message.parts)

    @admin.display(description="each model call")
    def rounds_shown(self, message: Message) -> str:
        return rounds_table(message.rounds)

    @admin.display(description="model", ordering="model")
    def model_name(self, message: Message) -> str:
        return cut(message.model)

    @admin.display(description="cost", ordering="cost")
    def spent(self, message: Message) -> str:
        return "" if message.cost is None else usd(message.cost)

    @admin.display(description="tokens in → out")
    def tokens(self, message: Message) -> str:
        return token_pair(message)

    @admin.display(description="TTFT", ordering="ttft_ms")
    def ttft(self, message: Message) -> str:
        return "" if message.ttft_ms is None else duration(message.ttft_ms)

    @admin.display(description="time", ordering="created_at")
    def created(self, message: Message) -> str:
        # The row's link; its id is on its page (and in `manage.py chat`'s "message #7").
        return short_time(message.created_at)

    @admin.display(description="conversation", ordering="conversation__title")
    def conversation_link(self, message: Message) -> str:
        # The whole title on hover; the cell is cut to its column by the admin's CSS.
        url = reverse("admin:chat_conversation_change", args=[message.conversation_id])
        title = str(message.conversation)
        return format_html(
            '<a class="cut" href="{}" title="{}">{}</a>', url, title, Truncator(title).chars(60)
        )

    @admin.display(description="owner", ordering="conversation__owner__username")
    def owner(self, message: Message) -> str:
        return cut(owner_name(message.conversation))

    @admin.display(description="error", ordering="error_type")
    def error(self, message: Message) -> str:
        return cut(message.error_type)

    @admin.action(description="Export selected messages as CSV")
    def export_csv(
        self, request: HttpRequest, queryset: QuerySet[Message]
    ) -> StreamingHttpResponse:
        return messages_csv(request, queryset)

    @admin.action(description="Recompute cost from the current price list", permissions=["recost"])
    def recompute_cost(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        result = messages_recost(messages=queryset)
        self.message_user(
            request,
            f"Cost recomputed: {result.changed} changed, {result.unchanged} unchanged, "
            f"{result.skipped} skipped (no usage or no price).",
            messages.SUCCESS,
        )

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("usage/", view(self.usage_view), name="chat_message_usage"),
            path("usage/csv/", view(self.usage_csv_view), name="chat_message_usage_csv"),
            path("export/csv/", view(self.export_view), name="chat_message_export"),
            *super().get_urls(),
        ]

    def _require_view(self, request: HttpRequest) -> None:
        if not self.has_view_permission(request):
            raise PermissionDenied

    def export_view(self, request: HttpRequest) -> HttpResponseBase:
        """The changelist's current filters, search and ordering, as CSV."""
        self._require_view(request)
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            return HttpResponseRedirect(reverse("admin:chat_message_changelist"))
        return messages_csv(request, changelist.get_queryset(request))

    def usage_view(self, request: HttpRequest) -> TemplateResponse:
        self._require_view(request)
        return dashboard.usage_dashboard(request, admin_site=self.admin_site, opts=self.opts)

    def usage_csv_view(self, request: HttpRequest) -> StreamingHttpResponse:
        self._require_view(request)
        return dashboard.usage_csv(request)
