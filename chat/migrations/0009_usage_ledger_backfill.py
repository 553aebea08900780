"""Fill the usage ledger from the messages already stored, a batch of ids per transaction,
printing progress: no lock on the message table outlives one batch's read.

Workers of the previous version that keep finishing turns while this runs do not write the
ledger; run `manage.py chat_ledger --verify` afterwards (and `--rebuild --since …` for
what it names) when the service was not stopped for the upgrade.
"""

import sys

from django.db import migrations


def backfill(apps, schema_editor):
    from chat.spend.ledger import ledger_backfill

    def progress(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    counted = ledger_backfill(apps.get_model("chat", "Message").objects, progress=progress)
    if counted:
        progress(f"  usage ledger: {counted} replies counted")


def empty(apps, schema_editor):
    apps.get_model("chat", "DailyUsage").objects.all().delete()


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("chat", "0008_usage_ledger"),
    ]

    operations = [migrations.RunPython(backfill, empty, elidable=True)]
