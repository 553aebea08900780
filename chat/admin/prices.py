"""Model and tool prices: the editable tables; an edit counts for turns finished after it."""

from __future__ import annotations

from typing import TypeVar

from django import forms
from django.contrib import admin
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from chat.admin.pages import first_templates
from chat.models import ModelPrice, ToolPrice
from chat.spend import prices

M = TypeVar("M", bound=Model)


@first_templates
class PriceAdmin(admin.ModelAdmin[M]):
    """Turns are priced from a per-process copy of the price lists: an edit here counts at
    once in this process (other workers pick it up within prices.PRICES_TTL_SECONDS)."""

    list_filter = ["valid_from"]

    def save_model(
        self, request: HttpRequest, obj: M, form: forms.ModelForm[M], change: bool
    ) -> None:
        super().save_model(request, obj, form, change)
        prices.prices_forget()

    def delete_model(self, request: HttpRequest, obj: M) -> None:
        super().delete_model(request, obj)
        prices.prices_forget()

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[M]) -> None:
        super().delete_queryset(request, queryset)
        prices.prices_forget()


@admin.register(ModelPrice)
class ModelPriceAdmin(PriceAdmin[ModelPrice]):
    list_display = [
        "model",
        "input_per_million",
        "cached_input_per_million",
        "output_per_million",
        "valid_from",
    ]
    search_fields = ["model"]
    ordering = ["model", "-valid_from"]


@admin.register(ToolPrice)
class ToolPriceAdmin(PriceAdmin[ToolPrice]):
    """Per 1,000 calls, by the name the model calls the tool (`<server>__<tool>` for MCP,
    `web_search` for hosted searches); a tool without a row is free."""

    list_display = ["tool", "per_thousand_calls", "valid_from"]
    search_fields = ["tool"]
    ordering = ["tool", "-valid_from"]
