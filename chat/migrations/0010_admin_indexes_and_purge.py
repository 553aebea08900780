"""Indexes for every filter and ordering the admin offers, and when text was purged. On
PostgreSQL each index is built with CREATE INDEX CONCURRENTLY, so turns keep being
written while it is built (no lock that blocks writes to the message table); on SQLite, a
plain CREATE INDEX. The two new columns are nullable: adding them rewrites no row."""

from django.conf import settings
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models
from django.db.migrations.operations import AddIndex


class AddIndexConcurrentlyOnPostgres(AddIndexConcurrently):
    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            return super().database_forwards(app_label, schema_editor, from_state, to_state)
        return AddIndex.database_forwards(self, app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            return super().database_backwards(app_label, schema_editor, from_state, to_state)
        return AddIndex.database_backwards(self, app_label, schema_editor, from_state, to_state)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("chat", "0009_usage_ledger_backfill"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="conversation",
            name="purged_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="message",
            name="purged_at",
            field=models.DateTimeField(
                blank=True,
                help_text="When its text was removed (chat_purge); usage stays.",
                null=True,
            ),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="conversation",
            index=models.Index(fields=["model", "updated_at"], name="conversation_model_updated"),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="conversation",
            index=models.Index(fields=["purged_at", "updated_at"], name="conversation_unpurged"),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="message",
            index=models.Index(fields=["status", "id"], name="message_status_id"),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="message",
            index=models.Index(fields=["model", "id"], name="message_model_id"),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="message",
            index=models.Index(fields=["provider", "id"], name="message_provider_id"),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="message",
            index=models.Index(fields=["api", "id"], name="message_api_id"),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="message",
            index=models.Index(fields=["usage_estimated", "id"], name="message_estimated_id"),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="message",
            index=models.Index(fields=["superseded_at"], name="message_superseded"),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="message",
            index=models.Index(fields=["finished_at"], name="message_finished"),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="message",
            index=models.Index(fields=["cost"], name="message_cost"),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="message",
            index=models.Index(fields=["purged_at", "created_at"], name="message_unpurged"),
        ),
    ]
