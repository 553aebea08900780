"""Changelists that stay fast at millions of rows: no `COUNT(*)` over the whole table on
each load, filter choices from the usage ledger instead of `SELECT DISTINCT` over
messages, and a month drill-down that reads the ledger's days.

Django's changelist counts the filtered rows (for the paginator) and, unless told not to,
every row again (for "N total"); with facets it counts once more per filter choice. Here:
an exact count only while it is small (counting stops at `EXACT_COUNT_LIMIT`), beyond
that PostgreSQL's planner estimate (from its table statistics, no scan) or, on SQLite
(which keeps no statistics), the limit itself; facets only when asked for.
"""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta
from functools import cached_property
from typing import Any, TypeVar

from django.contrib import admin
from django.contrib.admin import helpers
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _

from chat.admin.pages import first_templates
from chat.models import DailyUsage

# Counting stops here: pages beyond it are reached by filtering, not by paging. Above the
# changelist's "Show all" limit (200), or a capped count would show every row at once.
EXACT_COUNT_LIMIT = 10_000
# Filter choices read from the ledger are kept this long: a new model shows up within it.
CHOICES_CACHE_SECONDS = 60


def estimated_count(queryset: QuerySet[Any]) -> int:
    """The number of rows of `queryset`: exact up to `EXACT_COUNT_LIMIT`, estimated above."""
    capped = queryset.order_by().values("pk")[: EXACT_COUNT_LIMIT + 1].count()
    if capped <= EXACT_COUNT_LIMIT:
        return capped
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return EXACT_COUNT_LIMIT
    sql, params = queryset.order_by().values("pk").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return max(EXACT_COUNT_LIMIT, int(plan[0]["Plan"]["Plan Rows"]))


class EstimatedCountPaginator(Paginator):  # type: ignore[type-arg]  # Django's is untyped here
    """A paginator whose count never scans a large table (`estimated_count`)."""

    @cached_property
    def count(self) -> int:
        if isinstance(self.object_list, QuerySet):
            return estimated_count(self.object_list)
        return len(self.object_list)


M = TypeVar("M", bound=Model)


@first_templates
class LargeTableAdmin(admin.ModelAdmin[M]):
    """Defaults for a changelist over a table that grows with every turn."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    # Rendering a row costs more than fetching it: half Django's default page keeps a
    # reload cheap for the worker that also streams replies.
    list_per_page = 50
    # Facet counts are one more count per filter choice: shown when asked for (the
    # changelist's "Show counts" link), never on every load.
    show_facets = admin.ShowFacets.ALLOW

    def action_checkbox(self, obj: M) -> SafeString:
        """Django's row checkbox, the same HTML written directly: the stock one renders a
        form widget through the template engine for every row, the dearest cell of a
        page (`tests/test_admin_scale.py` compares the two)."""
        label = format_html(_("Select this object for an action - {}"), str(obj))
        return format_html(
            '<input type="checkbox" name="{}" value="{}" class="action-select" aria-label="{}">',
            helpers.ACTION_CHECKBOX_NAME,
            obj.pk,
            label,
        )


class LedgerValuesFilter(admin.SimpleListFilter):
    """A filter on a message field whose choices are the values the usage ledger has seen
    (a few rows per day) rather than a `SELECT DISTINCT` over every message."""

    field = ""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        key = f"chat:admin:ledger-values:{self.field}"
        values = cache.get(key)
        if values is None:
            values = list(
                DailyUsage.objects.exclude(**{self.field: ""})
                .order_by(self.field)
                .values_list(self.field, flat=True)
                .distinct()
            )
            cache.set(key, values, CHOICES_CACHE_SECONDS)
        return [(value, value) for value in values]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(**{self.field: value}) if value else queryset


class PersonFilter(admin.SimpleListFilter):
    """Conversations by owner: the people the ledger has seen (not a `SELECT DISTINCT`
    over every conversation), by username."""

    title = "owner"
    parameter_name = "owner"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        key = "chat:admin:ledger-people"
        people: list[tuple[str, str]] | None = cache.get(key)
        if people is None:
            ids = DailyUsage.objects.exclude(user_id=0).values_list("user_id", flat=True)
            people = [
                (str(pk), username)
                for pk, username in get_user_model()
                .objects.filter(pk__in=ids.distinct())
                .order_by("username")
                .values_list("pk", "username")
            ]
            cache.set(key, people, CHOICES_CACHE_SECONDS)
        return people

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if not value:
            return queryset
        return queryset.filter(owner_id=value) if value.isdigit() else queryset.none()


def ledger_filter(field: str, title: str, *, path: str = "") -> type[LedgerValuesFilter]:
    """A `LedgerValuesFilter` on `field` (of the ledger) filtering `path` (default the same
    field) of the listed rows."""
    target = path or field

    class Filter(LedgerValuesFilter):
        def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
            value = self.value()
            return queryset.filter(**{target: value}) if value else queryset

    Filter.field = field
    Filter.title = title
    Filter.parameter_name = target
    Filter.__name__ = f"{field.title()}Filter"
    return Filter


def month_filter(field: str) -> type[admin.SimpleListFilter]:
    """A month drill-down on a datetime `field`: the months the ledger has days for (a scan
    of the ledger's day index, never of the listed table), each a range on `field`."""

    class MonthFilter(admin.SimpleListFilter):
        title = "month"
        parameter_name = f"{field}_month"

        def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
            # The first and last day, each one seek in the ledger's index (SQLite reads
            # the whole index for MIN and MAX asked together); the months between.
            days = DailyUsage.objects.order_by("day").values_list("day", flat=True)
            first, last = days.first(), days.last()
            if first is None or last is None:
                return []
            months = []
            month = last.replace(day=1)
            while month >= first.replace(day=1):
                months.append((month.strftime("%Y-%m"), month.strftime("%B %Y")))
                month = (month - timedelta(days=1)).replace(day=1)
            return months

        def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
            value = self.value()
            if not value:
                return queryset
            try:
                first = date.fromisoformat(f"{value}-01")
            except ValueError:
                return queryset.none()
            after = date(first.year + first.month // 12, first.month % 12 + 1, 1)
            return queryset.filter(
                **{f"{field}__gte": _midnight(first), f"{field}__lt": _midnight(after)}
            )

    return MonthFilter


def _midnight(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))
