"""The usage dashboard: totals, tables by day, model and user, and charts, for a period;
a CSV download per table. One aggregate query per table (`chat.spend.reports`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib.admin import AdminSite
from django.db.models.options import Options
from django.http import HttpRequest, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from chat.admin.charts import day_chart
from chat.admin.csv_files import csv_response
from chat.models import Message
from chat.money import usd
from chat.spend.periods import period_bounds
from chat.spend.reports import (
    GROUPS,
    Group,
    UsageReport,
    UsageRow,
    is_group,
    usage_summary,
    usage_table,
)
from chat.spend.tool_calls import ToolCallRow, tool_calls_summary

PERIODS = [
    ("today", "Today"),
    ("7d", "Last 7 days"),
    ("30d", "Last 30 days"),
    ("90d", "Last 90 days"),
    ("custom", "Custom"),
]


class UsagePeriodForm(forms.Form):
    period = forms.ChoiceField(choices=PERIODS, required=False, initial="7d")
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
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
    def rows(self) -> list[tuple[UsageRow, str, list[str]]]:
        return [(row, self.links.get(row.key, ""), table_cells(row)) for row in self.report.rows]

    @property
    def totals(self) -> list[str]:
        return table_cells(self.report.totals)

    @property
    def body(self) -> SafeString:
        """The rows as HTML, escaped here: a year's table of people and days is hundreds
        of rows, and the template engine's cost per cell made the tables most of the
        page's rendering, on the thread that shares the worker with the chat streams."""
        rows = self.rows
        if not rows:
            return SafeString("")
        # One format per row (every row has as many cells), not one per cell.
        cell_count = len(rows[0][2])
        shape = "<tr><td>{}</td>" + '<td class="num">{}</td>' * cell_count + "</tr>"
        return format_html_join(
            "\n",
            shape,
            (
                (format_html('<a href="{}">{}</a>', link, row.key) if link else row.key, *cells)
                for row, link, cells in rows
            ),
        )


def table_cells(row: UsageRow) -> list[str]:
    """A row's figures as the table shows them, formatted here: a year's table of people
    and days is hundreds of rows, and template filters would cost more than its query."""
    return [
        f"{row.requests:,}",
        f"{row.input_tokens:,}",
        f"{row.output_tokens:,}",
        usd(row.cost),
        f"{row.failure_percent:.1f}% ({row.failed})",
        "–" if row.ttft_median_ms is None else f"{row.ttft_median_ms:.0f}",
        "–" if row.ttft_p95_ms is None else f"{row.ttft_p95_ms:.0f}",
    ]


def tool_call_cells(row: ToolCallRow) -> list[str]:
    """A tool's row as the tool-call table shows it, formatted like `table_cells`."""
    mean = "–" if row.mean_ms is None else f"{row.mean_ms:.0f}"
    return [row.tool, row.runner, f"{row.calls:,}", f"{row.errors:,}", mean, usd(row.cost)]


def usage_dashboard(
    request: HttpRequest, *, admin_site: AdminSite, opts: Options[Message]
) -> TemplateResponse:
    form = UsagePeriodForm(request.GET or None)
    since, until = form.bounds()
    reports = {by: usage_summary(since=since, until=until, by=by) for by in GROUPS}
    query = form.query()
    context = {
        **admin_site.each_context(request),
        "title": "Usage",
        "opts": opts,
        "form": form,
        "since": since,
        "last_day": (until - timedelta(days=1)).date(),
        "totals": reports["day"].totals,
        "total_cost": usd(reports["day"].totals.cost),
        "tables": [
            UsageTable(
                by=by,
                report=reports[by],
                csv_url=f"{reverse('admin:chat_message_usage_csv')}?{query}&by={by}",
                links=row_links(reports[by]),
            )
            for by in GROUPS
        ],
        "charts": [
            day_chart(reports["day"], metric="cost"),
            day_chart(reports["day"], metric="tokens"),
        ],
        "changelist_url": changelist_url(since, until),
        "tool_calls": [
            tool_call_cells(row) for row in tool_calls_summary(since=since, until=until)
        ],
        # The day report's totals already sum them: no further pass over the ledger.
        "reasoning_tokens": f"{reports['day'].totals.reasoning_tokens:,}",
    }
    return TemplateResponse(request, "admin/chat/usage_dashboard.html", context)


def usage_csv(request: HttpRequest) -> StreamingHttpResponse:
    form = UsagePeriodForm(request.GET or None)
    asked = request.GET.get("by", "day")
    by: Group = asked if is_group(asked) else "day"
    since, until = form.bounds()
    report = usage_summary(since=since, until=until, by=by)
    rows = usage_table(report)
    return csv_response(
        request, filename=f"usage-by-{by}-{since:%Y%m%d}-{until:%Y%m%d}.csv", rows=iter(rows)
    )


def changelist_url(since: datetime, until: datetime, **filters: str) -> str:
    """The replies a ledger row counts: those that finished in the period."""
    query = {"role__exact": Message.Role.ASSISTANT, **filters}
    query["finished_at__gte"] = str(since)
    query["finished_at__lt"] = str(until)
    return f"{reverse('admin:chat_message_changelist')}?{urlencode(query)}"


def row_links(report: UsageReport) -> dict[str, str]:
    """Each day or model row opens the matching assistant messages."""
    if report.by == "model":
        return {
            row.key: changelist_url(report.since, report.until, model=row.key)
            for row in report.rows
        }
    if report.by == "day":
        return {
            row.key: changelist_url(*period_bounds(since=row.key, until=row.key))
            for row in report.rows
        }
    return {}
