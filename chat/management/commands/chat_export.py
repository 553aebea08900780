"""`manage.py chat_export --since 30d --format jsonl`: conversations as JSON Lines, one per
line with every message, for evaluation or fine-tuning datasets."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from chat.conversations import conversations_export
from chat.spend.periods import period_bounds


class Command(BaseCommand):
    help = "Export conversations created in a period as JSON Lines (one conversation a line)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--since", default="30d", help="first day, YYYY-MM-DD, or the last N days as Nd"
        )
        parser.add_argument("--until", help="last day included, YYYY-MM-DD (default today)")
        parser.add_argument("--format", choices=["jsonl"], default="jsonl")
        parser.add_argument(
            "--include-deleted",
            action="store_true",
            help="also conversations their owners deleted (not yet purged)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            since, until = period_bounds(since=options["since"], until=options["until"])
        except ValueError as error:
            raise CommandError(str(error)) from None
        count = 0
        for line in conversations_export(
            since=since, until=until, include_deleted=options["include_deleted"]
        ):
            self.stdout.write(line)
            count += 1
        self.stderr.write(f"Exported {count} conversation(s).")
