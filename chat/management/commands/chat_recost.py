"""`manage.py chat_recost`: recompute stored costs from the current price list, on purpose.

Costs are snapshotted when a turn finishes and a later price edit never changes them; run
this after correcting a wrong price to fix the affected rows.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from chat.models import Message
from chat.spend.periods import period_bounds
from chat.spend.prices import messages_recost


class Command(BaseCommand):
    help = "Recompute the cost of chosen assistant messages from the current price list."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", help="first day, YYYY-MM-DD or Nd")
        parser.add_argument("--until", help="last day included, YYYY-MM-DD")
        parser.add_argument("--model", action="append", default=[], help="repeatable")
        parser.add_argument("--id", type=int, action="append", default=[], dest="ids")
        parser.add_argument("--all", action="store_true", help="every message (no filter)")
        parser.add_argument("--dry-run", action="store_true", help="count, change nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        messages = Message.objects.all()
        chosen = options["since"] or options["until"] or options["model"] or options["ids"]
        if not chosen and not options["all"]:
            raise CommandError("choose rows with --since/--until, --model or --id, or pass --all")
        if options["since"] or options["until"]:
            try:
                since, until = period_bounds(since=options["since"], until=options["until"])
            except ValueError as error:
                raise CommandError(str(error)) from None
            messages = messages.filter(created_at__gte=since, created_at__lt=until)
        if options["model"]:
            messages = messages.filter(model__in=options["model"])
        if options["ids"]:
            messages = messages.filter(pk__in=options["ids"])
        result = messages_recost(messages=messages, dry_run=options["dry_run"])
        verb = "would change" if options["dry_run"] else "changed"
        self.stdout.write(
            f"{verb} {result.changed}, unchanged {result.unchanged}, "
            f"skipped {result.skipped} (no usage or no price)"
        )
