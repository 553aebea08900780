"""`manage.py chat_usage`: the admin dashboard's numbers on the command line."""

from __future__ import annotations

import csv
import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from chat.money import usd
from chat.spend.periods import DEFAULT_SINCE, period_bounds
from chat.spend.reports import GROUPS, usage_json, usage_summary, usage_table
from chat.spend.tool_calls import (
    ToolCallRow,
    tool_calls_json,
    tool_calls_summary,
    tool_calls_table,
)


class Command(BaseCommand):
    # A report, run from scripts and cron as often as by hand: Django's system checks
    # (importing every URL pattern and view to check them) were most of its start-up, and
    # they check nothing it reads. `manage.py check`, `migrate` and every server start
    # still run them.
    requires_system_checks: list[str] = []
    help = (
        "Requests, tokens, cost, failure rate and TTFT of assistant replies, by day, model or "
        "user; or tool calls by tool."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--by", choices=[*GROUPS, "tool"], default="day")
        parser.add_argument(
            "--since",
            default=DEFAULT_SINCE,
            help="first day, YYYY-MM-DD, or the last N days including today as Nd (default 7d)",
        )
        parser.add_argument("--until", help="last day included, YYYY-MM-DD (default today)")
        parser.add_argument("--format", choices=["table", "csv", "json"], default="table")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            since, until = period_bounds(since=options["since"], until=options["until"])
        except ValueError as error:
            raise CommandError(str(error)) from None
        if options["by"] == "tool":
            self._tools(tool_calls_summary(since=since, until=until), options["format"])
            return
        report = usage_summary(since=since, until=until, by=options["by"])
        if options["format"] == "json":
            self.stdout.write(json.dumps(usage_json(report), indent=2))
        elif options["format"] == "csv":
            writer = csv.writer(self.stdout, lineterminator="\n")
            writer.writerows(usage_table(report))
        else:
            self.stdout.write(_aligned(usage_table(report, readable=True)))

    def _tools(self, rows: list[ToolCallRow], output: str) -> None:
        if output == "json":
            self.stdout.write(json.dumps({"tool_calls": tool_calls_json(rows)}, indent=2))
        elif output == "csv":
            csv.writer(self.stdout, lineterminator="\n").writerows(tool_calls_table(rows))
        else:
            self.stdout.write(_aligned(tool_calls_table(rows, money=usd)))


def _aligned(rows: list[list[str]]) -> str:
    """Text columns left, numbers right, a rule above the totals row."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def line(row: list[str]) -> str:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(rows[0]), rule, *map(line, rows[1:-1]), rule, line(rows[-1])])
