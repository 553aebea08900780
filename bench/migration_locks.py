"""Does upgrading a big database stop the chat? Migrations 0008–0010 (the usage ledger,
its backfill, the admin's indexes and the purge columns) run on PostgreSQL over N stored
messages while a writer keeps recording turns as the service does (insert a reply,
then finish it), and every write's time is kept: a migration that locked the message
table would show as a write waiting for it.

    python -m bench.migration_locks --database-url postgres://…/empty [--messages 5000000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK_TARGET_S = 1.0
BEFORE = "0007_message_versions"


def _env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHAT_", "OPENAI_"))}
    env.update(
        DATABASE_URL=database_url,
        CHAT_READ_DOTENV="false",
        DEBUG="false",
        SECRET_KEY="bench-only-not-secret",
        DJANGO_SETTINGS_MODULE="chatsite.settings",
    )
    env.pop("REDIS_URL", None)
    return env


def _manage(env: dict[str, str], *args: str) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, "manage.py", *args], env=env, cwd=ROOT, check=True)
    return time.perf_counter() - began


class Writer(threading.Thread):
    """Records a turn every `every` seconds on its own connection: the reply's row, then
    its finish; keeps how long each statement took."""

    def __init__(self, database_url: str, every: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.database_url = database_url
        self.every = every
        self.times: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        import psycopg

        with psycopg.connect(self.database_url, autocommit=True) as db:
            first = db.execute("SELECT id FROM chat_conversation LIMIT 1").fetchone()
            assert first is not None, "seed the database first"
            conversation = first[0]
            while not self.stop.is_set():
                began = time.perf_counter()
                row = db.execute(
                    "INSERT INTO chat_message (conversation_id, role, content, status, provider,"
                    " api, model, response_id, finish_reason, usage_estimated, error_type,"
                    " error_message, created_at) VALUES (%s, 'assistant', '', 'streaming',"
                    " 'openai', 'chat', 'gpt-4.1', '', '', false, '', '', now()) RETURNING id",
                    [conversation],
                ).fetchone()
                assert row is not None
                self.times.append(time.perf_counter() - began)
                began = time.perf_counter()
                db.execute(
                    "UPDATE chat_message SET status = 'completed', content = 'done',"
                    " input_tokens = 10, output_tokens = 5, finished_at = now() WHERE id = %s",
                    [row[0]],
                )
                self.times.append(time.perf_counter() - began)
                time.sleep(self.every)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="an empty PostgreSQL database")
    parser.add_argument("--messages", type=int, default=5_000_000)
    args = parser.parse_args()
    env = _env(args.database_url)
    _manage(env, "migrate", "--no-input", "-v", "0")
    _manage(env, "migrate", "chat", BEFORE, "--no-input", "-v", "0")
    print(f"seeding {args.messages:,} messages at {BEFORE}…", file=sys.stderr, flush=True)
    seeded = _manage(
        env,
        "shell",
        "-c",
        "from bench.seed import seed_history; "
        f"seed_history(messages={args.messages}, fill_ledger=False)",
    )
    writer = Writer(args.database_url)
    writer.start()
    time.sleep(2)
    before = len(writer.times)
    took = _manage(env, "migrate", "--no-input")
    during = writer.times[before:]
    writer.stop.set()
    writer.join(10)
    worst = max(during) if during else float("nan")
    slow = sum(t > LOCK_TARGET_S for t in during)
    verdict = "met" if during and worst <= LOCK_TARGET_S else "MISSED"
    print(f"{args.messages:,} messages seeded in {seeded:.0f} s at {BEFORE}")
    print(
        f"migrate to the latest: {took:.0f} s; {len(during)} turn writes meanwhile, the "
        f"slowest {worst * 1000:.0f} ms, {slow} over {LOCK_TARGET_S:.0f} s "
        f"(target: none over {LOCK_TARGET_S:.0f} s) {verdict}"
    )


if __name__ == "__main__":
    main()
