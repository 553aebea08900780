"""The admin: who spent what, on which model, when, and what went wrong.

Conversations and messages are records, so they are read-only here (view and delete only);
prices are editable; the usage dashboard and CSV exports hang off the Message admin.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet, Sum
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.text import Truncator

from chat import pricing
from chat.csv_export import csv_response
from chat.models import Conversation, Message, ModelPrice
from chat.pricing import messages_recost
from chat.usage import (
    ANONYMOUS,
    GROUPS,
    Group,
    UsageReport,
    period_bounds,
    usage_summary,
    usage_table,
)
from chat.usage_chart import day_chart

Status = Message.Status

# Colours readable on the admin's light and dark themes (white text on each).
STATUS_COLOURS = {
    Status.COMPLETED: "#2e7d32",
    Status.INCOMPLETE: "#b26a00",
    Status.FAILED: "#c62828",
    Status.CANCELLED: "#616161",
    Status.PENDING: "#1565c0",
    Status.STREAMING: "#1565c0",
}


def status_badge(status: str) -> str:
    return format_html(
        '<span style="background:{};color:#fff;padding:1px 7px;border-radius:8px;'
        'font-size:11px;white-space:nowrap">{}</span>',
        STATUS_COLOURS.get(status, "#616161"),
        status,
    )


def message_badge(message: Message) -> str:
    # A user or system message has no outcome of its own: its role says more.
    if message.role != Message.Role.ASSISTANT:
        return format_html('<span class="role-label">{}</span>', message.role)
    return status_badge(message.status)


def owner_name(conversation: Conversation) -> str:
    return conversation.owner.get_username() if conversation.owner_id else ANONYMOUS


class MessageInline(admin.TabularInline):
    model = Message
    fields = [
        "role",
        "badge",
        "model",
        "excerpt",
        "input_tokens",
        "output_tokens",
        "cost",
        "ttft_ms",
        "duration_ms",
        "error_type",
    ]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="status")
    def badge(self, message: Message) -> str:
        return "" if message.role != Message.Role.ASSISTANT else status_badge(message.status)

    @admin.display(description="content")
    def excerpt(self, message: Message) -> str:
        return Truncator(message.content).chars(120)


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "owner_display",
        "model",
        "message_count",
        "total_tokens",
        "total_cost",
        "updated_at",
    ]
    list_filter = ["model", ("owner", admin.RelatedOnlyFieldListFilter), "created_at", "updated_at"]
    list_select_related = ["owner"]
    # A match in any message finds the conversation; Django de-duplicates with EXISTS.
    search_fields = ["title", "owner__username", "messages__content"]
    date_hierarchy = "created_at"
    show_facets = admin.ShowFacets.ALWAYS
    fields = [
        "id",
        "title",
        "owner",
        "anonymous_key",
        "model",
        "system_prompt",
        "created_at",
        "updated_at",
    ]
    readonly_fields = fields
    inlines = [MessageInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Conversation]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                message_count=Count("messages"),
                token_sum=Sum("messages__total_tokens"),
                cost_sum=Sum("messages__cost"),
            )
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="owner", ordering="owner__username")
    def owner_display(self, conversation: Conversation) -> str:
        return owner_name(conversation)

    @admin.display(description="messages", ordering="message_count")
    def message_count(self, conversation: Conversation) -> int:
        return conversation.message_count

    @admin.display(description="tokens", ordering="token_sum")
    def total_tokens(self, conversation: Conversation) -> int:
        return conversation.token_sum or 0

    @admin.display(description="cost (USD)", ordering="cost_sum")
    def total_cost(self, conversation: Conversation) -> Decimal:
        # SQLite sums decimals as floats: show the stored precision, not the float noise.
        return Decimal(conversation.cost_sum or 0).quantize(Decimal("0.00000001"))


# --- Messages --------------------------------------------------------------------------

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


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    # What went wrong and what it cost first: the list scrolls sideways on small screens.
    list_display = [
        "id",
        "badge",
        "error_type",
        "created",
        "owner",
        "conversation_link",
        "model",
        "cost",
        "tokens_in",
        "tokens_out",
        "tokens_cached",
        "tokens_reasoning",
        "ttft",
        "duration",
        "provider_api",
    ]
    list_filter = [
        "status",
        "role",
        "model",
        "provider",
        "api",
        "usage_estimated",
        "created_at",
    ]
    list_select_related = ["conversation", "conversation__owner"]
    search_fields = ["content", "error_message", "conversation__title"]
    date_hierarchy = "created_at"
    show_facets = admin.ShowFacets.ALWAYS
    ordering = ["-id"]
    actions = ["export_csv", "recompute_cost"]
    fieldsets = [
        (None, {"fields": ["conversation", "role", "status", "content"]}),
        ("Model", {"fields": ["provider", "api", "model", "response_id", "finish_reason"]}),
        (
            "Usage",
            {
                "fields": [
                    "input_tokens",
                    "output_tokens",
                    "total_tokens",
                    "cached_tokens",
                    "reasoning_tokens",
                    "usage_estimated",
                    "cost",
                ]
            },
        ),
        ("Timing", {"fields": ["created_at", "finished_at", "ttft_ms", "duration_ms"]}),
        ("Error", {"fields": ["error_type", "error_message"]}),
    ]
    readonly_fields = [field for _, options in fieldsets for field in options["fields"]]

    # The stored record must be trustworthy: nobody adds or edits one here. Deleting needs
    # Django's delete permission, which the default action already checks.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_recost_permission(self, request: HttpRequest) -> bool:
        # Recomputing writes only `cost`, deliberately; the model's change permission
        # (granted to superusers or explicitly) stands for that.
        return request.user.has_perm("chat.change_message")

    @admin.display(description="status", ordering="status")
    def badge(self, message: Message) -> str:
        return message_badge(message)

    @admin.display(description="in", ordering="input_tokens")
    def tokens_in(self, message: Message) -> int | None:
        return message.input_tokens

    @admin.display(description="out", ordering="output_tokens")
    def tokens_out(self, message: Message) -> int | None:
        return message.output_tokens

    @admin.display(description="cached", ordering="cached_tokens")
    def tokens_cached(self, message: Message) -> int | None:
        return message.cached_tokens

    @admin.display(description="reasoning", ordering="reasoning_tokens")
    def tokens_reasoning(self, message: Message) -> int | None:
        return message.reasoning_tokens

    @admin.display(description="TTFT ms", ordering="ttft_ms")
    def ttft(self, message: Message) -> int | None:
        return message.ttft_ms

    @admin.display(description="duration ms", ordering="duration_ms")
    def duration(self, message: Message) -> int | None:
        return message.duration_ms

    @admin.display(description="created", ordering="created_at")
    def created(self, message: Message) -> str:
        return timezone.localtime(message.created_at).strftime("%Y-%m-%d %H:%M")

    @admin.display(description="conversation", ordering="conversation__title")
    def conversation_link(self, message: Message) -> str:
        url = reverse("admin:chat_conversation_change", args=[message.conversation_id])
        return format_html(
            '<a href="{}">{}</a>', url, Truncator(str(message.conversation)).chars(40)
        )

    @admin.display(description="owner", ordering="conversation__owner__username")
    def owner(self, message: Message) -> str:
        return owner_name(message.conversation)

    @admin.display(description="provider / API", ordering="provider")
    def provider_api(self, message: Message) -> str:
        return " / ".join(part for part in (message.provider, message.api) if part)

    @admin.action(description="Export selected messages as CSV")
    def export_csv(self, request: HttpRequest, queryset: QuerySet[Message]) -> HttpResponse:
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

    def get_urls(self) -> list[Any]:
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

    def export_view(self, request: HttpRequest) -> HttpResponse:
        """The changelist's current filters, search and ordering, as CSV."""
        self._require_view(request)
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            return HttpResponseRedirect(reverse("admin:chat_message_changelist"))
        return messages_csv(request, changelist.get_queryset(request))

    def usage_view(self, request: HttpRequest) -> TemplateResponse:
        self._require_view(request)
        form = UsagePeriodForm(request.GET or None)
        since, until = form.bounds()
        reports = {by: usage_summary(since=since, until=until, by=by) for by in GROUPS}
        query = form.query()
        context = {
            **self.admin_site.each_context(request),
            "title": "Usage",
            "opts": self.opts,
            "form": form,
            "since": since,
            "last_day": (until - timedelta(days=1)).date(),
            "totals": reports["day"].totals,
            "tables": [
                UsageTable(
                    by=by,
                    report=reports[by],
                    csv_url=f"{reverse('admin:chat_message_usage_csv')}?{query}&by={by}",
                    links=self._row_links(reports[by]),
                )
                for by in GROUPS
            ],
            "charts": [
                day_chart(reports["day"], metric="cost"),
                day_chart(reports["day"], metric="tokens"),
            ],
            "changelist_url": self._changelist_url(since, until),
        }
        return TemplateResponse(request, "admin/chat/usage_dashboard.html", context)

    def usage_csv_view(self, request: HttpRequest) -> HttpResponse:
        self._require_view(request)
        form = UsagePeriodForm(request.GET or None)
        by = request.GET.get("by", "day")
        if by not in GROUPS:
            by = "day"
        since, until = form.bounds()
        report = usage_summary(since=since, until=until, by=by)
        rows = usage_table(report)
        return csv_response(
            request, filename=f"usage-by-{by}-{since:%Y%m%d}-{until:%Y%m%d}.csv", rows=iter(rows)
        )

    def _changelist_url(self, since: datetime, until: datetime, **filters: str) -> str:
        query = {"role__exact": Message.Role.ASSISTANT, **filters}
        query["created_at__gte"] = str(since)
        query["created_at__lt"] = str(until)
        return f"{reverse('admin:chat_message_changelist')}?{urlencode(query)}"

    def _row_links(self, report: UsageReport) -> dict[str, str]:
        """Each day or model row opens the matching assistant messages."""
        if report.by == "model":
            return {
                row.key: self._changelist_url(report.since, report.until, model__exact=row.key)
                for row in report.rows
            }
        if report.by == "day":
            return {
                row.key: self._changelist_url(*period_bounds(since=row.key, until=row.key))
                for row in report.rows
            }
        return {}


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = [
        "model",
        "input_per_million",
        "cached_input_per_million",
        "output_per_million",
        "valid_from",
    ]
    list_filter = ["valid_from"]
    search_fields = ["model"]
    ordering = ["model", "-valid_from"]

    # Turns are priced from a per-process copy of this list: an edit here counts at once
    # in this process (other workers pick it up within pricing.PRICES_TTL_SECONDS).
    def save_model(self, request: HttpRequest, obj: ModelPrice, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        pricing.prices_forget()

    def delete_model(self, request: HttpRequest, obj: ModelPrice) -> None:
        super().delete_model(request, obj)
        pricing.prices_forget()

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ModelPrice]) -> None:
        super().delete_queryset(request, queryset)
        pricing.prices_forget()


# --- Usage dashboard -------------------------------------------------------------------

PERIODS = [("today", "Today"), ("7d", "Last 7 days"), ("30d", "Last 30 days"), ("custom", "Custom")]


class UsagePeriodForm(forms.Form):
    period = forms.ChoiceField(choices=PERIODS, required=False, initial="7d")
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("period") == "custom":
            if not data.get("since"):
                self.add_error("since", "Choose the first day.")
            elif data.get("until") and data["since"] > data["until"]:
                self.add_error("until", "The last day is before the first.")
        return data

    def _choice(self) -> dict[str, Any]:
        if self.is_bound and self.is_valid():
            return self.cleaned_data
        return {"period": "7d"}

    def bounds(self) -> tuple[datetime, datetime]:
        data = self._choice()
        period = data.get("period") or "7d"
        if period == "custom":
            return period_bounds(since=data["since"], until=data.get("until"))
        return period_bounds(since="1d" if period == "today" else period)

    def query(self) -> str:
        """The chosen period as a query string, for the CSV links."""
        data = self._choice()
        query = {"period": data.get("period") or "7d"}
        for name in ("since", "until"):
            if data.get(name):
                query[name] = data[name].isoformat()
        return urlencode(query)


@dataclass(frozen=True, slots=True)
class UsageTable:
    by: Group
    report: UsageReport
    csv_url: str
    links: dict[str, str]

    @property
    def rows(self) -> list[tuple[Any, str]]:
        return [(row, self.links.get(row.key, "")) for row in self.report.rows]


def messages_csv(request: HttpRequest, queryset: QuerySet[Message]) -> StreamingHttpResponse:
    values = queryset.values_list(*(field for _, field in EXPORT_COLUMNS))
    owner_index = [name for name, _ in EXPORT_COLUMNS].index("owner")

    def rows() -> Iterator[Sequence[Any]]:
        yield [name for name, _ in EXPORT_COLUMNS]
        for row in values.iterator(chunk_size=2000):
            if row[owner_index] is None:
                row = (*row[:owner_index], ANONYMOUS, *row[owner_index + 1 :])
            yield row

    stamp = timezone.localtime().strftime("%Y%m%d-%H%M%S")
    return csv_response(request, filename=f"messages-{stamp}.csv", rows=rows())


# Admins that live beside their services: API tokens, and people with their budgets.
from chat import budget_admin, token_admin  # noqa: E402,F401
