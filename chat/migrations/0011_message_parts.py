"""A reply's parts (reasoning, tool calls and results, web searches, text, citations) and
its model calls' usage, for turns that are more than one text reply. Both columns are
nullable without a default: adding them rewrites no row (and on SQLite does not rebuild
the table, whose full-text triggers from 0006 would go with it)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("chat", "0010_admin_indexes_and_purge")]

    operations = [
        migrations.AddField(
            model_name="message",
            name="parts",
            field=models.JSONField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="message",
            name="rounds",
            field=models.JSONField(blank=True, null=True),
        ),
    ]
