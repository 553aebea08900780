"""Indexes for every filter and ordering the admin offers, a full-text index over
conversation titles (the admin's conversation search), and when text was purged.

On PostgreSQL each index is built CONCURRENTLY, so turns keep being written while it is
built (no lock that blocks writes to the message table); on SQLite, a plain CREATE INDEX,
and an FTS5 table kept in step by triggers, as migration 0006 does for message text. The
two new columns are nullable: adding them rewrites no row."""

from django.conf import settings
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models
from django.db.migrations.operations import AddIndex

# The conversation table's key is a UUID and its rowid is not stable (VACUUM may renumber
# it), so titles are indexed under the INTEGER PRIMARY KEY of a small map table.
SQLITE_FORWARD = [
    "CREATE TABLE chat_conversation_fts_map ("
    "rowid INTEGER PRIMARY KEY, conversation_id char(32) NOT NULL UNIQUE)",
    "CREATE VIRTUAL TABLE chat_conversation_fts USING fts5("
    "title, tokenize='unicode61 remove_diacritics 2')",
    "CREATE TRIGGER chat_conversation_fts_insert AFTER INSERT ON chat_conversation BEGIN "
    "INSERT INTO chat_conversation_fts_map(conversation_id) VALUES (new.id); "
    "INSERT INTO chat_conversation_fts(rowid, title) VALUES ("
    "(SELECT rowid FROM chat_conversation_fts_map WHERE conversation_id = new.id), "
    "new.title); END",
    "CREATE TRIGGER chat_conversation_fts_update AFTER UPDATE OF title ON chat_conversation "
    "BEGIN UPDATE chat_conversation_fts SET title = new.title WHERE rowid = "
    "(SELECT rowid FROM chat_conversation_fts_map WHERE conversation_id = new.id); END",
    "CREATE TRIGGER chat_conversation_fts_delete AFTER DELETE ON chat_conversation BEGIN "
    "DELETE FROM chat_conversation_fts WHERE rowid = "
    "(SELECT rowid FROM chat_conversation_fts_map WHERE conversation_id = old.id); "
    "DELETE FROM chat_conversation_fts_map WHERE conversation_id = old.id; END",
    "INSERT INTO chat_conversation_fts_map(conversation_id) SELECT id FROM chat_conversation",
    "INSERT INTO chat_conversation_fts(rowid, title) SELECT m.rowid, c.title "
    "FROM chat_conversation_fts_map m JOIN chat_conversation c ON c.id = m.conversation_id",
]
SQLITE_BACKWARD = [
    "DROP TRIGGER IF EXISTS chat_conversation_fts_insert",
    "DROP TRIGGER IF EXISTS chat_conversation_fts_update",
    "DROP TRIGGER IF EXISTS chat_conversation_fts_delete",
    "DROP TABLE IF EXISTS chat_conversation_fts",
    "DROP TABLE IF EXISTS chat_conversation_fts_map",
]
POSTGRES_FORWARD = [
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS chat_conversation_title_fts ON chat_conversation "
    "USING gin (to_tsvector('simple', title))",
]
POSTGRES_BACKWARD = ["DROP INDEX CONCURRENTLY IF EXISTS chat_conversation_title_fts"]


def _run(statements_by_vendor):
    def run(apps, schema_editor):
        for statement in statements_by_vendor.get(schema_editor.connection.vendor, []):
            schema_editor.execute(statement)

    return run


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
            index=models.Index(fields=["updated_at", "id"], name="conversation_updated_id"),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="conversation",
            index=models.Index(
                fields=["model", "updated_at", "id"], name="conversation_model_updated"
            ),
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
            index=models.Index(
                condition=models.Q(("usage_estimated", True)),
                fields=["id"],
                name="message_estimated_id",
            ),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="message",
            index=models.Index(
                condition=models.Q(("superseded_at__isnull", False)),
                fields=["id"],
                name="message_superseded",
            ),
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
        migrations.RunPython(
            _run({"sqlite": SQLITE_FORWARD, "postgresql": POSTGRES_FORWARD}),
            _run({"sqlite": SQLITE_BACKWARD, "postgresql": POSTGRES_BACKWARD}),
        ),
    ]
