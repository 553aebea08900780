"""`manage.py chat_purge --deleted-before 30d`: remove for good the text of conversations
their owners deleted long ago; their usage and cost stay in every report."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from chat.conversations import conversations_purge

_AGE = re.compile(r"^(\d{1,5})d$")


def cutoff(value: str, now: datetime | None = None) -> datetime:
    """`30d` (that many days ago) or a date, `YYYY-MM-DD` (its midnight, local time)."""
    now = now or timezone.now()
    if match := _AGE.match(value.strip()):
        return now - timedelta(days=int(match.group(1)))
    try:
        day = datetime.fromisoformat(value.strip())
    except ValueError:
        raise CommandError(
            f"{value!r} is not a number of days such as 30d, or YYYY-MM-DD."
        ) from None
    return day if timezone.is_aware(day) else timezone.make_aware(day)


class Command(BaseCommand):
    help = "Remove the text of conversations deleted before a cutoff; usage numbers stay."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--deleted-before",
            required=True,
            help="30d (deleted more than 30 days ago) or YYYY-MM-DD",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        before = cutoff(options["deleted_before"])
        purged = conversations_purge(deleted_before=before)
        self.stdout.write(
            f"Purged the text of {purged} conversation(s) deleted before "
            f"{timezone.localtime(before):%Y-%m-%d %H:%M}; their usage and cost are kept."
        )
