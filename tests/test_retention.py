"""Retention (CHAT_RETENTION_DAYS, `chat_purge --retention`): text older than the period
goes, in batches; every row's usage and cost, and the usage ledger, stay; the admin says
the text was purged."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.urls import reverse

from chat.conversations import history_purge
from chat.models import Conversation, DailyUsage, Message
from chat.spend.ledger import ledger_verify
from tests.usage_rows import TURNS, create_turns, noon

pytestmark = pytest.mark.django_db


def usage_of(rows) -> list[tuple]:
    return sorted(rows.values_list("pk", "input_tokens", "output_tokens", "cost", "status"))


def test_retention_removes_old_text_and_keeps_every_cent(settings, admin_client):
    create_turns()
    settings.CHAT_RETENTION_DAYS = 10
    usage = usage_of(Message.objects.all())
    texts = dict(Message.objects.values_list("pk", "content"))
    ledger = sorted(DailyUsage.objects.values_list("day", "model", "requests", "cost_e8"))
    out = io.StringIO()
    call_command("chat_purge", "--retention", stdout=out)

    old = [t for t in TURNS if t.days_ago > 10]
    assert f"removed the text of {2 * len(old)} message(s)" in out.getvalue()
    assert f"titles of {len(old)} conversation(s)" in out.getvalue()
    cutoff = noon(10)
    for message in Message.objects.all():
        if message.created_at < cutoff:
            assert message.content == "" and message.purged_at is not None
        else:
            assert message.content == texts[message.pk] and message.purged_at is None
    assert Conversation.objects.filter(title="", purged_at__isnull=False).count() == len(old)
    assert usage_of(Message.objects.all()) == usage
    assert sorted(DailyUsage.objects.values_list("day", "model", "requests", "cost_e8")) == ledger
    assert ledger_verify() == []

    purged = Message.objects.filter(purged_at__isnull=False, role="assistant").first()
    page = admin_client.get(reverse("admin:chat_message_change", args=[purged.pk]))
    assert "(text purged" in page.content.decode()

    again = io.StringIO()
    call_command("chat_purge", "--retention", stdout=again)  # nothing left to do
    assert "removed the text of 0 message(s)" in again.getvalue()


def test_retention_works_in_small_batches_and_reports_progress():
    create_turns()
    seen: list[tuple[int, int]] = []
    done = history_purge(before=noon(3), batch=2, progress=lambda m, c: seen.append((m, c)))
    assert done.messages == 2 * sum(t.days_ago > 3 for t in TURNS)
    assert len(seen) >= done.messages // 2  # one report per batch of two
    assert seen[-1] == (done.messages, done.conversations)


def test_without_a_retention_period_nothing_is_purged(settings):
    create_turns()
    settings.CHAT_RETENTION_DAYS = None
    out = io.StringIO()
    call_command("chat_purge", "--retention", stdout=out)
    assert "all text is kept" in out.getvalue()
    assert not Message.objects.filter(purged_at__isnull=False).exists()
