"""Conversation search at scale: one person's 10,000 conversations (among another
10,000 of someone else's), searched through the database's full-text index.

    .venv/bin/python -m bench.search [--conversations 10000] [--json]

Runs on a fresh SQLite file (FTS5), and on PostgreSQL (GIN tsvector index) when
127.0.0.1:5432 answers, in a database of its own that it drops afterwards. Each query goes
through `chat.conversations.conversation_page`, as `GET /api/conversations?q=` does, and
is timed over repeated runs; the figures are milliseconds of wall time per page.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TypedDict

from bench.run import migrate

ROOT = Path(__file__).resolve().parent.parent
WORDS = [
    "garden",
    "tomato",
    "recipe",
    "travel",
    "budget",
    "python",
    "django",
    "invoice",
    "meeting",
    "summary",
    "report",
    "holiday",
    "weather",
    "train",
    "coffee",
    "music",
    "guitar",
    "running",
    "marathon",
    "bicycle",
    "mountain",
    "river",
    "letter",
    "contract",
    "review",
    "design",
    "kitchen",
    "bread",
    "cheese",
    "market",
    "server",
    "database",
    "cache",
]
RARE = "zanzibar"  # in a handful of conversations only
QUERIES = {
    "common word": "tomato",
    "two words": "tomato garden",
    "rare word": RARE,
    "no match": "xylophone",
    "list (no q)": "",
}
# The common words stand in nearly every conversation (60-word replies from a 36-word
# vocabulary): the worst case, where every row of the person's list matches.
TARGET_P95_MS = 200.0
RUNS = 30
PG_BENCH_DB = "chat_bench_search"


class QueryFigures(TypedDict):
    p50_ms: float
    p95_ms: float
    shown: int


class DatabaseRun(TypedDict):
    """What the child process prints for one database."""

    seeded_s: float
    queries: dict[str, QueryFigures]


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def seed(conversations: int) -> None:
    from django.contrib.auth import get_user_model

    from chat.models import Conversation, Message

    rng = random.Random(7)
    people = [get_user_model().objects.create(username=name) for name in ("ada", "bob")]
    for person in people:
        for start in range(0, conversations, 1000):
            batch = [
                Conversation(owner=person, title=sentence(rng, 4)[:80], model="m")
                for _ in range(min(1000, conversations - start))
            ]
            Conversation.objects.bulk_create(batch)
            rows = []
            for i, conversation in enumerate(batch):
                for turn in range(2):
                    text = sentence(rng, 12)
                    if person is people[0] and (start + i) % 2000 == 0 and turn == 0:
                        text += f" We talked about {RARE}."
                    rows += [
                        Message(conversation=conversation, role="user", content=text),
                        Message(
                            conversation=conversation,
                            role="assistant",
                            content=sentence(rng, 60),
                            status="completed",
                        ),
                    ]
            Message.objects.bulk_create(rows, batch_size=2000)


async def timings() -> dict[str, QueryFigures]:
    from django.contrib.auth import get_user_model

    from chat.access.owners import Owner
    from chat.conversations import conversation_page

    ada = await get_user_model().objects.aget(username="ada")
    owner = Owner(user_id=ada.pk)
    results: dict[str, QueryFigures] = {}
    for name, q in QUERIES.items():
        samples, found = [], 0
        for _ in range(RUNS):
            started = time.perf_counter()
            page = await conversation_page(owner=owner, q=q)
            samples.append((time.perf_counter() - started) * 1000)
            found = len(page["conversations"])
        samples.sort()
        results[name] = {
            "p50_ms": statistics.median(samples),
            "p95_ms": samples[int(0.95 * (len(samples) - 1))],
            "shown": found,
        }
    return results


def run_on(database_url: str, conversations: int) -> DatabaseRun:
    """In a child process, so each database gets Django set up afresh."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "CHAT_READ_DOTENV": "false",
        "DEBUG": "false",
        "SECRET_KEY": "bench-only",
        "DJANGO_SETTINGS_MODULE": "chatsite.settings",
    }
    env.pop("REDIS_URL", None)
    migrate(env)
    out = subprocess.run(
        [sys.executable, "-m", "bench.search", "--child", "--conversations", str(conversations)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    run: DatabaseRun = json.loads(out.stdout)
    return run


def child(conversations: int) -> None:
    import django

    django.setup()
    started = time.perf_counter()
    seed(conversations)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # what autovacuum (PostgreSQL) would have done by now
    seeded_s = time.perf_counter() - started
    run: DatabaseRun = {"seeded_s": seeded_s, "queries": asyncio.run(timings())}
    print(json.dumps(run))


def postgres_reachable() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5432), 1).close()
    except OSError:
        return False
    return True


def psql(sql: str) -> None:
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc", sql],
        check=True,
        capture_output=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.conversations)
        return
    results: dict[str, DatabaseRun] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = run_on(f"sqlite:///{tmp}/search.sqlite3", args.conversations)
    if postgres_reachable():
        psql(f"DROP DATABASE IF EXISTS {PG_BENCH_DB}")
        psql(f"CREATE DATABASE {PG_BENCH_DB}")
        try:
            url = f"postgres://postgres@127.0.0.1:5432/{PG_BENCH_DB}"
            results["postgresql"] = run_on(url, args.conversations)
        finally:
            psql(f"DROP DATABASE IF EXISTS {PG_BENCH_DB}")
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"search over {args.conversations} conversations of one person (and as many of another's)"
    )
    print(f"{'database':<11} {'query':<14} {'p50 ms':>8} {'p95 ms':>8} {'shown':>6}")
    worst = 0.0
    for database, result in results.items():
        for name, figures in result["queries"].items():
            worst = max(worst, figures["p95_ms"])
            print(
                f"{database:<11} {name:<14} {figures['p50_ms']:>8.1f} "
                f"{figures['p95_ms']:>8.1f} {figures['shown']:>6}"
            )
    verdict = "met" if worst <= TARGET_P95_MS else "missed"
    print(f"search p95 at most {worst:.1f} ms (target <= {TARGET_P95_MS:.0f}): {verdict}")


if __name__ == "__main__":
    main()
