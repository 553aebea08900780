"""What the admin shows for a message's outcome and version, and a conversation's owner."""

from __future__ import annotations

from datetime import datetime

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html

from chat.models import Conversation, Message
from chat.spend.reports import ANONYMOUS

Status = Message.Status

# Colours readable on the admin's light and dark themes (white text on each, WCAG AA).
STATUS_COLOURS: dict[str, str] = {
    Status.COMPLETED: "#2e7d32",
    Status.INCOMPLETE: "#8a5300",
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


def token_pair(message: Message) -> str:
    """`1,200 → 80`, marked `≈` when the upstream sent no usage and it was estimated."""
    if message.input_tokens is None and message.output_tokens is None:
        return ""
    pair = f"{message.input_tokens or 0:,} → {message.output_tokens or 0:,}"
    return f"≈ {pair}" if message.usage_estimated else pair


def version_label(message: Message) -> str:
    """Whether the row is its turn's current version or one a regenerate/edit replaced."""
    if message.superseded_at is not None:
        return "earlier version"
    return "current (regenerated/edited)" if message.version_of_id else "current"


class VersionFilter(admin.SimpleListFilter):
    title = "version"
    parameter_name = "version"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Message]
    ) -> list[tuple[str, str]]:
        return [("current", "Current"), ("earlier", "Earlier versions")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Message]) -> QuerySet[Message]:
        if self.value() == "current":
            return queryset.filter(superseded_at__isnull=True)
        if self.value() == "earlier":
            return queryset.filter(superseded_at__isnull=False)
        return queryset


def purged_text(text: str, purged_at: datetime | None) -> str:
    """Stored text, or what became of it: purged text is gone, not empty."""
    if purged_at is not None and not text:
        return f"(text purged {timezone.localtime(purged_at):%Y-%m-%d}; usage kept)"
    return text


def cut(text: str) -> str:
    """`text` in a changelist cell that the admin's CSS cuts to its column with an
    ellipsis (templates/admin/base_site.html), whole on hover."""
    return format_html('<span class="cut" title="{}">{}</span>', text, text) if text else ""


def short_time(moment: datetime) -> str:
    """`6 Dec 12:13` in TIME_ZONE, in a changelist cell (the whole date on hover)."""
    local = timezone.localtime(moment)
    return format_html(
        '<time datetime="{}" title="{}">{} {}</time>',
        local.isoformat(),
        f"{local:%Y-%m-%d %H:%M:%S %Z}",
        local.day,
        f"{local:%b %H:%M}" if local.year == timezone.localdate().year else f"{local:%b %Y}",
    )


def duration(ms: int) -> str:
    """`850 ms`, `12.3 s`: milliseconds while they are the unit that reads."""
    return f"{ms} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def owner_name(conversation: Conversation) -> str:
    return conversation.owner.get_username() if conversation.owner is not None else ANONYMOUS
