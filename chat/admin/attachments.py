"""Attachments: what people uploaded (name, type, size, whose, whether its bytes are still
stored), each person's storage in use, a message's files as a read-only inline, and the
bytes themselves for staff with the view permission on attachments (never a storage URL:
the same response the owner gets, through the admin)."""

from __future__ import annotations

import uuid

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet, Sum
from django.http import Http404, HttpRequest, HttpResponseBase
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from chat.admin.lists import LargeTableAdmin
from chat.files.serving import file_response
from chat.models import Attachment, Message, MessageAttachment


def size_label(size: int) -> str:
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def download_link(attachment: Attachment) -> str:
    if attachment.removed_at is not None:
        return "removed"
    url = reverse("admin:chat_attachment_download", args=[attachment.pk])
    return format_html('<a href="{}">open</a>', url)


ATTACHMENT_FIELDS = (
    "name",
    "kind",
    "content_type",
    "size",
    "width",
    "height",
    "owner",
    "anonymous_key",
    "sha256",
    "storage_key",
    "created_at",
    "removed_at",
    "stored",
)
INLINE_FIELDS = ("name", "type", "size", "link")


@admin.register(Attachment)
class AttachmentAdmin(LargeTableAdmin[Attachment]):
    list_display = [
        "name",
        "kind",
        "content_type",
        "size_shown",
        "owner_shown",
        "created_at",
        "stored",
    ]
    # No filter or date drill-down that reads every row for its choices (the table grows
    # with every upload): kind has fixed choices, the dates are relative.
    list_filter = ["kind", ("removed_at", admin.EmptyFieldListFilter), "created_at"]
    list_select_related = ["owner"]
    search_fields = ["name", "owner__username", "sha256"]
    ordering = ["-created_at"]
    fields = ATTACHMENT_FIELDS
    readonly_fields = ATTACHMENT_FIELDS

    # A record of what was uploaded: nobody adds or edits one here.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Attachment | None = None) -> bool:
        return False

    @admin.display(description="size", ordering="size")
    def size_shown(self, attachment: Attachment) -> str:
        return size_label(attachment.size)

    @admin.display(description="owner", ordering="owner__username")
    def owner_shown(self, attachment: Attachment) -> str:
        return attachment.owner.get_username() if attachment.owner else "anonymous"

    @admin.display(description="file")
    def stored(self, attachment: Attachment) -> str:
        return download_link(attachment)

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path(
                "<uuid:pk>/download/",
                view(self.download_view),
                name="chat_attachment_download",
            ),
            path("storage/", view(self.storage_view), name="chat_attachment_storage"),
            *super().get_urls(),
        ]

    def download_view(self, request: HttpRequest, pk: uuid.UUID) -> HttpResponseBase:
        if not self.has_view_permission(request):
            raise PermissionDenied
        attachment = Attachment.objects.filter(pk=pk, removed_at__isnull=True).first()
        if attachment is None:
            raise Http404("No such file, or its bytes were removed.")
        return file_response(attachment)

    def storage_view(self, request: HttpRequest) -> TemplateResponse:
        """Each person's storage in use: their stored files, largest total first (one
        grouped query, the first 200 people)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        rows = (
            Attachment.objects.filter(removed_at__isnull=True)
            .values("owner__username", "anonymous_key")
            .annotate(files=Count("pk"), total=Sum("size"))
            .order_by("-total")[:200]
        )
        people = [
            {
                "who": row["owner__username"] or f"anonymous {row['anonymous_key'][:8]}…",
                "files": row["files"],
                "size": size_label(row["total"] or 0),
            }
            for row in rows
        ]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Storage in use",
            "people": people,
        }
        return TemplateResponse(request, "admin/chat/attachment/storage.html", context)


class MessageAttachmentInline(admin.TabularInline[MessageAttachment, Message]):
    """A message's files, read-only, with a link to each."""

    model = MessageAttachment
    extra = 0
    can_delete = False
    fields = INLINE_FIELDS
    readonly_fields = INLINE_FIELDS
    verbose_name = "attachment"
    verbose_name_plural = "attachments"

    def get_queryset(self, request: HttpRequest) -> QuerySet[MessageAttachment]:
        return super().get_queryset(request).select_related("attachment")

    def has_add_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        return False

    @admin.display(description="name")
    def name(self, row: MessageAttachment) -> str:
        return row.attachment.name

    @admin.display(description="type")
    def type(self, row: MessageAttachment) -> str:
        return row.attachment.content_type

    @admin.display(description="size")
    def size(self, row: MessageAttachment) -> str:
        return size_label(row.attachment.size)

    @admin.display(description="file")
    def link(self, row: MessageAttachment) -> str:
        return download_link(row.attachment)
