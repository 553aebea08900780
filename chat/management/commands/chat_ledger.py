"""`manage.py chat_ledger --verify | --rebuild`: prove the usage ledger and the tool-call
ledger equal the rows, or refill a range of days of both from them."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from chat.spend.ledger import ledger_rebuild, ledger_verify
from chat.spend.periods import period_bounds
from chat.spend.tool_calls import tool_calls_rebuild, tool_calls_verify


class Command(BaseCommand):
    help = (
        "Compare the usage and tool-call ledgers with the message rows (--verify) "
        "or rebuild a range."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        action = parser.add_mutually_exclusive_group(required=True)
        action.add_argument("--verify", action="store_true", help="exit 1 if any key differs")
        action.add_argument("--rebuild", action="store_true", help="refill days from the rows")
        parser.add_argument("--since", help="first day, YYYY-MM-DD or Nd (default: all)")
        parser.add_argument("--until", help="last day included, YYYY-MM-DD (default: all)")

    def handle(self, *args: Any, **options: Any) -> None:
        since = until = None
        if options["since"] or options["until"]:
            try:
                start, end = period_bounds(
                    since=options["since"] or "1970-01-01", until=options["until"]
                )
            except ValueError as error:
                raise CommandError(str(error)) from None
            since = start.date() if options["since"] else None
            until = (end - timedelta(days=1)).date() if options["until"] else None
        span = _span(since, until)
        if options["rebuild"]:
            if since is None and not options["until"]:
                self.stdout.write("Rebuilding the whole ledger from the rows.")
            keys = ledger_rebuild(since=since, until=until)
            tools = tool_calls_rebuild(since=since, until=until)
            self.stdout.write(
                f"Rebuilt {span}: {keys} usage and {tools} tool-call ledger row(s) written "
                "from the messages."
            )
            return
        differences = ledger_verify(since=since, until=until)
        differences += tool_calls_verify(since=since, until=until)
        for difference in differences:
            self.stdout.write(difference.describe())
        if differences:
            self.stderr.write(f"{len(differences)} ledger key(s) differ from the rows ({span}).")
            raise SystemExit(1)
        self.stdout.write(f"The usage and tool-call ledgers match the rows ({span}).")


def _span(since: date | None, until: date | None) -> str:
    if since is None and until is None:
        return "all days"
    return f"{since or 'the first day'} to {until or 'today'}"
