"""Migrations on a table that already holds years of turns: 0009 fills the usage ledger
from existing rows (with progress), 0010 builds its indexes without blocking writes on
PostgreSQL, and the model state matches the migrations."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from chat.models import DailyUsage, Message
from chat.spend.ledger import ledger_verify
from tests.usage_rows import create_turns

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_models_match_the_migrations():
    out = io.StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


def test_migrating_an_existing_database_fills_the_ledger_from_its_rows(capsys):
    create_turns()
    want = sorted(DailyUsage.objects.values_list("day", "user_id", "model", "cost_e8"))
    executor = MigrationExecutor(connection)
    executor.migrate([("chat", "0008_usage_ledger")])  # back to before the backfill
    assert not DailyUsage.objects.exists()
    capsys.readouterr()
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes("chat"))
    printed = capsys.readouterr().out
    assert (
        "usage ledger" in printed
        and f"{Message.objects.filter(role='assistant').count()} replies" in printed
    )
    assert sorted(DailyUsage.objects.values_list("day", "user_id", "model", "cost_e8")) == want
    assert ledger_verify() == []


@pytest.mark.skipif(connection.vendor != "postgresql", reason="CONCURRENTLY is PostgreSQL's")
def test_indexes_on_the_message_table_are_built_concurrently():
    out = io.StringIO()
    call_command("sqlmigrate", "chat", "0010", stdout=out)
    sql = out.getvalue()
    creates = [line for line in sql.splitlines() if line.startswith("CREATE INDEX")]
    assert creates and all("CONCURRENTLY" in line for line in creates), creates
    assert "BEGIN;" not in sql  # not in one transaction: each index on its own
