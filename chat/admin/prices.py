"""Model prices: the one editable table; an edit counts for turns finished after it."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from chat.models import ModelPrice
from chat.spend import prices


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin[ModelPrice]):
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
    # in this process (other workers pick it up within prices.PRICES_TTL_SECONDS).
    def save_model(
        self, request: HttpRequest, obj: ModelPrice, form: forms.ModelForm[ModelPrice], change: bool
    ) -> None:
        super().save_model(request, obj, form, change)
        prices.prices_forget()

    def delete_model(self, request: HttpRequest, obj: ModelPrice) -> None:
        super().delete_model(request, obj)
        prices.prices_forget()

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ModelPrice]) -> None:
        super().delete_queryset(request, queryset)
        prices.prices_forget()
