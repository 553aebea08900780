"""`manage.py chat_purge --deleted-before 30d`: remove for good the text of conversations
their owners deleted long ago; their usage and cost stay in every report."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from chat.conversations import conversations_purge
from chat.spend.periods import cutoff_before


class Command(BaseCommand):
    help = "Remove the text of conversations deleted before a cutoff; usage numbers stay."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--deleted-before",
            required=True,
            help="30d (deleted more than 30 days ago) or YYYY-MM-DD",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            before = cutoff_before(options["deleted_before"])
        except ValueError as error:
            raise CommandError(str(error)) from None
        purged = conversations_purge(deleted_before=before)
        self.stdout.write(
            f"Purged the text of {purged} conversation(s) deleted before "
            f"{timezone.localtime(before):%Y-%m-%d %H:%M}; their usage and cost are kept."
        )
