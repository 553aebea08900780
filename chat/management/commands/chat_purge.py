"""`manage.py chat_purge`: remove message text and attachments for good, keeping every
row's usage and cost and the usage ledger. `--deleted-before 30d`: conversations their
owners deleted long ago; `--retention`: everything older than CHAT_RETENTION_DAYS
(deploy/systemd runs both daily through chat-purge.timer). Every run also removes
uploads never sent with a message (`--unsent-before`, a day by default)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from chat.conversations import conversations_purge, history_purge
from chat.files.lifecycle import files_purge_unsent
from chat.spend.periods import cutoff_before


class Command(BaseCommand):
    help = (
        "Remove the text and files of conversations deleted before a cutoff "
        "(--deleted-before) and of everything older than CHAT_RETENTION_DAYS (--retention), "
        "and uploads never sent; usage numbers stay."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--deleted-before", help="30d (deleted more than 30 days ago) or YYYY-MM-DD"
        )
        parser.add_argument(
            "--retention",
            action="store_true",
            help="purge text older than CHAT_RETENTION_DAYS (nothing when it is unset)",
        )
        parser.add_argument(
            "--unsent-before",
            default="1d",
            help="uploads never sent, older than this: 1d (the default) or YYYY-MM-DD",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["deleted_before"] and not options["retention"]:
            raise CommandError("choose --deleted-before 30d, --retention, or both")
        try:
            unsent_before = cutoff_before(options["unsent_before"])
        except ValueError as error:
            raise CommandError(str(error)) from None
        if options["deleted_before"]:
            try:
                before = cutoff_before(options["deleted_before"])
            except ValueError as error:
                raise CommandError(str(error)) from None
            purged = conversations_purge(deleted_before=before)
            self.stdout.write(
                f"Purged the text of {purged} conversation(s) deleted before "
                f"{timezone.localtime(before):%Y-%m-%d %H:%M}, and their files; their usage "
                "and cost are kept."
            )
        if options["retention"]:
            self._retention(verbose=options["verbosity"] > 1)
        unsent = files_purge_unsent(uploaded_before=unsent_before)
        self.stdout.write(f"Removed {unsent} upload(s) never sent with a message.")

    def _retention(self, *, verbose: bool) -> None:
        days = settings.CHAT_RETENTION_DAYS
        if days is None:
            self.stdout.write("CHAT_RETENTION_DAYS is not set: all text is kept.")
            return
        before = timezone.now() - timedelta(days=days)

        def progress(messages: int, conversations: int) -> None:
            if verbose:
                self.stdout.write(f"  … {messages} message(s), {conversations} conversation(s)")

        done = history_purge(before=before, progress=progress)
        self.stdout.write(
            f"Retention ({days} days): removed the text of {done.messages} message(s) and the "
            f"titles of {done.conversations} conversation(s) older than "
            f"{timezone.localtime(before):%Y-%m-%d %H:%M}, and {done.files} file(s); their "
            "usage and cost are kept."
        )
