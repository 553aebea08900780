"""A team's stored history, written straight into the database through Django's
connection (SQLite or PostgreSQL): people, their conversations, and messages spread over
the last days, a share of replies failed; then the usage ledger is filled from the rows,
as migration 0009 does for an existing database. Used by the `ledger` bench scenario and
by the scale tests, which seed smaller amounts.

    python -m bench.seed --messages 1000000   (settings from the environment, like manage.py)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

MODELS = ("gpt-4.1-mini", "gpt-4.1", "gpt-5-mini", "o3")
PRICES = {  # $ per million input / output tokens, roughly the list prices
    "gpt-4.1-mini": (Decimal("0.40"), Decimal("1.60")),
    "gpt-4.1": (Decimal("2.00"), Decimal("8.00")),
    "gpt-5-mini": (Decimal("0.25"), Decimal("2.00")),
    "o3": (Decimal("2.00"), Decimal("8.00")),
}
# A word in a fixed number of messages, whatever the size: searches for it find the same
# rows at any scale, so their cost can be compared across sizes.
RARE_WORD = "zanzibar"
RARE_COUNT = 5
# And one in nearly every message (twelve of the thirteen words each): a search for it
# matches most of the table.
COMMON_WORD = "logging"
WORDS: tuple[str, ...] = ("the", "reply", "explains", "how", "to", "configure", COMMON_WORD)
WORDS += ("rotate", "files", "and", "check", "disk", "usage")


def _message_text(i: int, rare_every: int) -> str:
    """Twelve common words; every `rare_every`-th message, up to RARE_COUNT, also the rare
    one."""
    words = [WORDS[(i * 7 + k) % len(WORDS)] for k in range(12)]
    if i % rare_every == 0 and i // rare_every < RARE_COUNT:
        words.append(RARE_WORD)
    return " ".join(words)


def seed_history(
    *,
    messages: int,
    people: int = 200,
    conversations: int | None = None,
    days: int = 90,
    failed_share: float = 0.04,
    models: tuple[str, ...] = MODELS,
    batch: int = 20_000,
    progress: Callable[[str], None] | None = None,
    now: datetime | None = None,
    owners: list[int] | None = None,
    fill_ledger: bool = True,
) -> list[int]:
    """Write `messages` messages (user and assistant rows alternating) in `conversations`
    conversations (default one per 50 messages) of `people` people (new accounts, or the
    ids in `owners`) over the last `days` days, ids in time order; fill the ledger (unless
    `fill_ledger` is false: a database migrated only as far as before it).
    Returns the people's user ids."""
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction
    from django.utils import timezone

    from chat.models import Conversation, Message
    from chat.spend.ledger import ledger_rebuild

    rare_every = max(1, messages // (RARE_COUNT * 2)) * 2  # user rows: even indexes
    say = progress or (lambda line: None)
    now = now or timezone.now()
    conversations = conversations or max(1, messages // 50)
    per_conversation = max(2, messages // conversations // 2 * 2)
    User = get_user_model()
    if owners is None:
        existing = User.objects.count()
        with transaction.atomic():
            User.objects.bulk_create(
                [User(username=f"person{existing + n:05d}") for n in range(people)],
                batch_size=1000,
            )
        owners = list(
            User.objects.filter(username__startswith="person")
            .order_by("-pk")
            .values_list("pk", flat=True)[:people]
        )
    span = timedelta(days=days) - timedelta(minutes=5)
    start = now - span
    ops = connection.ops
    conv_id = Conversation._meta.get_field("id")
    table_c = Conversation._meta.db_table
    table_m = Message._meta.db_table

    def moment(i: int) -> Any:
        return ops.adapt_datetimefield_value(start + span * (i / max(1, messages)))

    convs = [uuid.uuid4() for _ in range(conversations)]

    def conversation_rows() -> Iterator[tuple[Any, ...]]:
        for c, cid in enumerate(convs):
            at = moment(c * per_conversation)
            yield (
                conv_id.get_db_prep_value(cid, connection),
                owners[c % len(owners)],
                "",
                f"Conversation {c} about logging",
                models[c % len(models)],
                "",
                at,
                at,
            )

    def message_rows() -> Iterator[tuple[Any, ...]]:
        for i in range(messages):
            c = min(i // per_conversation, conversations - 1)
            model = models[c % len(models)]
            at = moment(i)
            if i % 2 == 0:
                yield (
                    conv_id.get_db_prep_value(convs[c], connection),
                    "user",
                    _message_text(i, rare_every),
                    "completed",
                    "",
                    "",
                    model,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    "",
                    at,
                    None,
                )
                continue
            failed = (i // 2) % round(1 / failed_share) == 0 if failed_share else False
            tokens_in, tokens_out = 200 + i % 300, 0 if failed else 100 + i % 700
            price_in, price_out = PRICES.get(model, (Decimal("1"), Decimal("2")))
            cost = (tokens_in * price_in + tokens_out * price_out) / 1_000_000
            yield (
                conv_id.get_db_prep_value(convs[c], connection),
                "assistant",
                "" if failed else _message_text(i, messages + 1),
                "failed" if failed else "completed",
                "openai",
                "responses",
                model,
                tokens_in,
                tokens_out,
                tokens_in + tokens_out,
                0,
                None if failed else 150 + (i * 37) % 2500,
                400 + i % 5000,
                ops.adapt_decimalfield_value(cost.quantize(Decimal("1e-8")), 14, 8),
                "upstream_timeout" if failed else "",
                at,
                at,
            )

    columns_c = "id, owner_id, anonymous_key, title, model, system_prompt, created_at, updated_at"
    columns_m = (
        "conversation_id, role, content, status, provider, api, model, input_tokens,"
        " output_tokens, total_tokens, cached_tokens, ttft_ms, duration_ms, cost, error_type,"
        " created_at, finished_at"
    )
    fixed = "response_id, finish_reason, usage_estimated, error_message"
    began = time.monotonic()
    with connection.cursor() as cursor:
        _insert(cursor, table_c, columns_c, "", conversation_rows(), batch, say, "conversations")
        _insert(
            cursor,
            table_m,
            f"{columns_m}, {fixed}",
            ", '', '', %s, ''" % ("false" if connection.vendor == "postgresql" else "0"),
            message_rows(),
            batch,
            say,
            "messages",
        )
    say(f"  wrote {messages:,} messages in {time.monotonic() - began:.0f} s")
    if fill_ledger:  # not before migration 0008, which makes the ledger (and fills it)
        began = time.monotonic()
        ledger_rebuild()
        say(f"  ledger filled in {time.monotonic() - began:.0f} s")
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {table_m}")
            cursor.execute(f"ANALYZE {table_c}")
    return owners


def _insert(
    cursor: Any,
    table: str,
    columns: str,
    constants: str,
    rows: Iterator[tuple[Any, ...]],
    batch: int,
    say: Callable[[str], None],
    what: str,
) -> None:
    from django.db import transaction

    count = len(columns.split(","))
    placeholders = ", ".join(["%s"] * (count - constants.count(",")))
    sql = f"INSERT INTO {table} ({columns}) VALUES ({placeholders}{constants})"
    done = 0
    while True:
        chunk = [row for _, row in zip(range(batch), rows, strict=False)]
        if not chunk:
            return
        with transaction.atomic():
            cursor.executemany(sql, chunk)
        done += len(chunk)
        say(f"  {what}: {done:,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--people", type=int, default=200)
    parser.add_argument("--days", type=int, default=90)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    import django

    django.setup()
    seed_history(
        messages=args.messages,
        people=args.people,
        days=args.days,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    _vacuum()


def _vacuum() -> None:
    """On PostgreSQL, vacuum what was written, as autovacuum keeps a database with a
    year's history: otherwise autovacuum starts on the millions of new rows a minute
    later and runs for minutes, through the measurements, on the machine's two cores,
    and the first reads of each page write its hint bits."""
    from django.db import connection

    from chat.models import Conversation, DailyUsage, Message

    if connection.vendor != "postgresql":
        return
    began = time.monotonic()
    with connection.cursor() as cursor:
        for model in (Message, Conversation, DailyUsage):
            cursor.execute(f"VACUUM (ANALYZE) {model._meta.db_table}")
    print(f"  vacuumed in {time.monotonic() - began:.0f} s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
