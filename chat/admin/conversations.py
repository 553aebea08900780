"""Conversations: read-only records, with their messages inline and their totals."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, TypedDict

from django.contrib import admin
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery, Sum
from django.http import HttpRequest
from django.utils.text import Truncator

from chat.admin.display import (
    cut,
    owner_name,
    purged_text,
    short_time,
    status_badge,
    token_pair,
    version_label,
)
from chat.admin.lists import LargeTableAdmin, PersonFilter, ledger_filter, month_filter
from chat.models import Conversation, Message
from chat.money import usd
from chat.search import message_matches, query_words, title_words_match

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations

MESSAGE_FIELDS = (
    "role",
    "badge",
    "model",
    "excerpt",
    "version",
    "tokens",
    "spent",
    "ttft_ms",
    "duration_ms",
    "error_type",
)
CONVERSATION_FIELDS = (
    "id",
    "title",
    "owner",
    "anonymous_key",
    "model",
    "system_prompt",
    "created_at",
    "updated_at",
    "deleted_at",
    "purged_at",
)


class Totals(TypedDict):
    """What `ConversationAdmin.get_queryset` adds to each row."""

    message_count: int
    token_sum: int | None
    cost_sum: Decimal | None


class MessageInline(admin.TabularInline[Message, Conversation]):
    model = Message
    fields = MESSAGE_FIELDS
    readonly_fields = MESSAGE_FIELDS
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Conversation | None = None) -> bool:
        return False

    # An inline's permission hooks get the parent row; django-stubs says so for the inline
    # but its base class, BaseModelAdmin, types `obj` as the inline's own model.
    def has_change_permission(  # type: ignore[override]
        self, request: HttpRequest, obj: Conversation | None = None
    ) -> bool:
        return False

    @admin.display(description="status")
    def badge(self, message: Message) -> str:
        return "" if message.role != Message.Role.ASSISTANT else status_badge(message.status)

    @admin.display(description="version")
    def version(self, message: Message) -> str:
        return version_label(message)

    @admin.display(description="tokens in → out")
    def tokens(self, message: Message) -> str:
        return token_pair(message)

    @admin.display(description="cost")
    def spent(self, message: Message) -> str:
        return "" if message.cost is None else usd(message.cost)

    @admin.display(description="content")
    def excerpt(self, message: Message) -> str:
        return Truncator(purged_text(message.content, message.purged_at)).chars(120)


@admin.register(Conversation)
class ConversationAdmin(LargeTableAdmin[Conversation]):
    list_display = [
        "__str__",
        "owner_display",
        "model_name",
        "message_count",
        "total_tokens",
        "total_cost",
        "last_activity",
        "deleted",
    ]
    list_filter = [
        ledger_filter("model", "model"),
        PersonFilter,
        # Deleted by their owner: hidden from them, kept here with their usage and cost.
        ("deleted_at", admin.EmptyFieldListFilter),
        "created_at",
        "updated_at",
        month_filter("updated_at"),
    ]
    list_select_related = ["owner"]
    # Titles, and message text through the full-text index (`chat.search`).
    search_fields = ["title"]
    search_help_text = (
        "Finds conversations whose title, or one of whose messages, contains every word "
        "(full-text indexes)."
    )
    # The totals are computed for the page's rows only, so they cannot order the list.
    sortable_by = ["__str__", "owner_display", "model_name", "last_activity", "deleted"]
    fields = CONVERSATION_FIELDS
    readonly_fields = CONVERSATION_FIELDS
    inlines = [MessageInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Conversation]:
        # Correlated subqueries: the database evaluates them for the page's rows only,
        # through the message table's conversation index, not by grouping every message.
        mine = Message.objects.filter(conversation=OuterRef("pk")).order_by().values("conversation")
        return (
            super()
            .get_queryset(request)
            .annotate(
                message_count=Subquery(mine.annotate(n=Count("pk")).values("n")),
                token_sum=Subquery(mine.annotate(n=Sum("total_tokens")).values("n")),
                cost_sum=Subquery(mine.annotate(n=Sum("cost")).values("n")),
            )
        )

    def has_delete_permission(self, request: HttpRequest, obj: Conversation | None = None) -> bool:
        return False  # kept for its usage and cost: owners delete, `chat_purge` removes text

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Conversation], search_term: str
    ) -> tuple[QuerySet[Conversation], bool]:
        words = query_words(search_term)
        if not words:
            return queryset, False
        # Two id sets, each through its own index: `title matches OR id IN (…)` would
        # have PostgreSQL compute every title's tsvector to test the first half.
        in_text = Message.objects.filter(message_matches(words)).values("conversation_id")
        in_title = Conversation.objects.filter(title_words_match(words)).values("pk")
        return queryset.filter(Q(pk__in=in_text) | Q(pk__in=in_title)), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Conversation | None = None) -> bool:
        return False

    @admin.display(description="owner", ordering="owner__username")
    def owner_display(self, conversation: Conversation) -> str:
        return cut(owner_name(conversation))

    @admin.display(description="model", ordering="model")
    def model_name(self, conversation: Conversation) -> str:
        return cut(conversation.model)

    @admin.display(description="messages")
    def message_count(self, conversation: WithAnnotations[Conversation, Totals]) -> int:
        return conversation.message_count

    @admin.display(description="tokens")
    def total_tokens(self, conversation: WithAnnotations[Conversation, Totals]) -> str:
        return f"{conversation.token_sum or 0:,}"

    @admin.display(description="cost")
    def total_cost(self, conversation: WithAnnotations[Conversation, Totals]) -> str:
        # SQLite sums decimals as floats: `usd` rounds the float noise away.
        return usd(conversation.cost_sum or 0)

    @admin.display(description="last activity", ordering="updated_at")
    def last_activity(self, conversation: Conversation) -> str:
        return short_time(conversation.updated_at)

    @admin.display(description="deleted", ordering="deleted_at")
    def deleted(self, conversation: Conversation) -> str:
        # By its owner: hidden from them, kept here with its usage and cost.
        if conversation.deleted_at is None:
            return ""
        return short_time(conversation.deleted_at)
