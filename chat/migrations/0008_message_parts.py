"""A reply's parts (reasoning, tool calls and results, text) and its model calls' usage.

On SQLite, adding a column with a default rebuilds `chat_message`, which drops the
triggers that keep the full-text index (0006) in step: they are made again, and the
index rebuilt, in the same migration."""

from importlib import import_module

from django.db import migrations, models

search_index = import_module("chat.migrations.0006_message_search")
TRIGGERS = [s for s in search_index.SQLITE_FORWARD if s.startswith("CREATE TRIGGER")]


def _triggers_again(apps, schema_editor):
    if schema_editor.connection.vendor != "sqlite":
        return
    for statement in TRIGGERS:
        schema_editor.execute(statement.replace("CREATE TRIGGER", "CREATE TRIGGER IF NOT EXISTS"))
    schema_editor.execute("INSERT INTO chat_message_fts(chat_message_fts) VALUES ('rebuild')")


class Migration(migrations.Migration):
    dependencies = [("chat", "0007_message_versions")]

    operations = [
        # Undone last: the rebuild that removing the columns does drops them too.
        migrations.RunPython(migrations.RunPython.noop, _triggers_again),
        migrations.AddField(
            model_name="message",
            name="parts",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.AddField(
            model_name="message",
            name="rounds",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.RunPython(_triggers_again, migrations.RunPython.noop),
    ]
