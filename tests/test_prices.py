"""chat.spend.prices: which price applies, what a turn costs, and that stored costs stay put."""

from datetime import timedelta
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.utils import timezone

from chat.llm import Usage
from chat.models import Message, ModelPrice
from chat.spend.prices import cost_of, messages_recost, price_for, price_names
from tests.asgi import AsgiClient
from tests.upstream import Reply, chat_script
from tests.usage_rows import Turn, create_turns

EPOCH = timezone.make_aware(timezone.datetime(2020, 1, 1))


def price(model: str, *, at=EPOCH, inp="1", cached="0.5", out="2") -> ModelPrice:
    return ModelPrice.objects.create(
        model=model,
        input_per_million=Decimal(inp),
        cached_input_per_million=None if cached is None else Decimal(cached),
        output_per_million=Decimal(out),
        valid_from=at,
    )


def test_price_names_strip_a_dated_snapshot_suffix():
    assert price_names("gpt-4.1-mini-2025-04-14") == ["gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"]
    assert price_names("gpt-4.1-mini") == ["gpt-4.1-mini"]
    assert price_names("llama3.2") == ["llama3.2"]


@pytest.mark.django_db
def test_price_for_matches_exact_name_then_snapshot_base():
    base = price("test-model")
    now = timezone.now()
    assert price_for("test-model", now) == base
    assert price_for("test-model-2025-04-14", now) == base
    exact = price("test-model-2025-04-14")
    assert price_for("test-model-2025-04-14", now) == exact
    assert price_for("test-model-2024-01-01", now) == base
    assert price_for("other-model", now) is None


@pytest.mark.django_db
def test_price_for_takes_the_price_in_force_at_that_time():
    old = price("test-model", out="2")
    new = price("test-model", at=EPOCH + timedelta(days=30), out="3")
    assert price_for("test-model", EPOCH + timedelta(days=1)) == old
    assert price_for("test-model", EPOCH + timedelta(days=31)) == new
    assert price_for("test-model", EPOCH - timedelta(days=1)) is None


@pytest.mark.django_db
def test_seeded_prices_cover_common_openai_models():
    at = timezone.now()
    for model in ["gpt-4.1-mini", "gpt-4.1-mini-2025-04-14", "gpt-4o", "gpt-5", "o3"]:
        assert price_for(model, at) is not None, model


def test_cost_discounts_cached_input_tokens():
    entry = ModelPrice(
        model="m",
        input_per_million=Decimal("2"),
        cached_input_per_million=Decimal("0.5"),
        output_per_million=Decimal("8"),
    )
    usage = Usage(input_tokens=1000, output_tokens=500, cached_tokens=400)
    # 600 × 2 + 400 × 0.5 + 500 × 8 = 5400 per million
    assert cost_of(usage, entry) == Decimal("0.00540000")
    entry.cached_input_per_million = None
    assert cost_of(usage, entry) == Decimal("0.00600000")
    # More cached than input (a provider quirk) never goes negative.
    assert cost_of(Usage(input_tokens=10, cached_tokens=50), entry) == Decimal("0.00002000")


@pytest.mark.django_db
def test_recost_uses_current_prices_and_skips_rows_without_usage_or_price():
    [priced, unpriced, failed] = create_turns(
        [
            Turn("alice", "test-model", 1, input_tokens=1000, output_tokens=1000, cost="9"),
            Turn("alice", "unknown-model", 1, cost="9"),
            Turn("alice", "test-model", 1, "failed", None, None, None, None, "timeout"),
        ]
    )
    price("test-model", inp="1", out="2")
    dry = messages_recost(messages=Message.objects.all(), dry_run=True)
    assert (dry.changed, dry.unchanged, dry.skipped) == (1, 0, 2)
    priced.refresh_from_db()
    assert priced.cost == Decimal(9)

    result = messages_recost(messages=Message.objects.all())
    assert (result.changed, result.unchanged, result.skipped) == (1, 0, 2)
    priced.refresh_from_db()
    unpriced.refresh_from_db()
    assert priced.cost == Decimal("0.00300000")  # 1000 × 1 + 1000 × 2 per million
    assert unpriced.cost == Decimal(9)
    again = messages_recost(messages=Message.objects.all())
    assert (again.changed, again.unchanged) == (0, 1)


@pytest.mark.django_db
def test_chat_recost_command_needs_a_choice_of_rows(capsys):
    [reply] = create_turns([Turn("alice", "test-model", 1, cost="9")])
    price("test-model")
    with pytest.raises(Exception, match="choose rows"):
        call_command("chat_recost")
    call_command("chat_recost", "--model", "test-model")
    assert "changed 1" in capsys.readouterr().out
    reply.refresh_from_db()
    assert reply.cost == Decimal("0.00020000")


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_cost_is_snapshotted_and_a_price_edit_does_not_rewrite_it(upstream, mini_price):
    usage = {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}
    upstream.queue(Reply(script=chat_script(["Hi"], usage=usage)))
    response = await AsgiClient().post("/api/chat", {"message": "hi"})
    assert response.json()["cost"] == "0.00120000"  # 1000 × 0.40 + 500 × 1.60 per million

    mini_price.output_per_million = Decimal("100")
    await mini_price.asave()
    reply = await Message.objects.aget(role="assistant")
    assert reply.cost == Decimal("0.0012")

    # Recomputing on purpose is what changes it.
    await sync_to_async(messages_recost)(messages=Message.objects.filter(pk=reply.pk))
    await reply.arefresh_from_db()
    assert reply.cost == Decimal("0.05040000")
