"""`manage.py chat_expire_stale`: finish turns left `pending`/`streaming` by a dead worker."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from chat.turns import turns_expire_stale


class Command(BaseCommand):
    help = "Mark pending/streaming replies older than --older-than seconds as incomplete."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=int,
            default=None,
            metavar="SECONDS",
            help="Default: CHAT_STALE_TURN_SECONDS.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        seconds = options["older_than"]
        if seconds is None:
            seconds = settings.CHAT_STALE_TURN_SECONDS
        count = turns_expire_stale(older_than=timedelta(seconds=seconds))
        self.stdout.write(f"Marked {count} stale repl{'y' if count == 1 else 'ies'} incomplete.")
