"""Admin for personal API tokens: the raw token is shown once, on creation; only its hash
is stored."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from chat.access.tokens import token_fill
from chat.admin.pages import first_templates
from chat.models import ApiToken

NEW_FIELDS = ("user", "name")
DETAIL_FIELDS = ("user", "name", "prefix", "created_at", "last_used_at", "revoked_at")


@admin.register(ApiToken)
@first_templates
class ApiTokenAdmin(admin.ModelAdmin[ApiToken]):
    list_display = ["name", "user", "prefix", "created_at", "last_used_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter), "created_at"]
    list_select_related = ["user"]
    search_fields = ["name", "prefix", "user__username"]
    date_hierarchy = "created_at"
    actions = ["revoke"]

    def get_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> tuple[str, ...]:
        return NEW_FIELDS if obj is None else DETAIL_FIELDS

    def get_readonly_fields(
        self, request: HttpRequest, obj: ApiToken | None = None
    ) -> tuple[str, ...]:
        # Only the name can change: a token's owner and secret are fixed at birth.
        return () if obj is None else tuple(f for f in DETAIL_FIELDS if f != "name")

    def save_model(
        self, request: HttpRequest, obj: ApiToken, form: forms.ModelForm[ApiToken], change: bool
    ) -> None:
        raw = None if change else token_fill(obj)
        super().save_model(request, obj, form, change)
        if raw is not None:
            messages.success(
                request,
                f"The token for “{obj.name}” is {raw} — copy it now: it is stored only as "
                "a hash and will not be shown again.",
            )

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} token(s).", messages.SUCCESS)
