"""`manage.py chat_doctor`: which model backend is configured, and does it answer?

Prints the resolved configuration (never a key, only whether one is set), then lists the
upstream's models and asks the default model for a one-word reply over the configured API,
through `chat.llm`, as the chat does. The check's reply is not stored. Any failure
is reported with the provider's own key-free message and exits non-zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from chat import llm
from chat.llm import Backend, Finished, ProviderError, TextDelta

CHECK_PROMPT = "Reply with the single word: ok"
LABEL_WIDTH = 12


class Command(BaseCommand):
    help = (
        "Show which model backend is configured and check that it answers: list its models "
        "and ask the default model for a one-word reply (not stored)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--offline",
            action="store_true",
            help="only print the configuration; send nothing",
        )
        parser.add_argument(
            "--summary",
            metavar="URL",
            help="only print what an operator starting the server at URL needs: where the "
            "page and the admin are, the model backend, the database (what `make run` shows)",
        )
        parser.add_argument(
            "--workers",
            type=int,
            default=1,
            help="with --summary: how many worker processes will serve",
        )
        parser.add_argument(
            "--no-reply",
            dest="reply",
            action="store_false",
            help="only list the models; skip the (billed, tiny) reply check",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        llm.reset()  # resolve from the settings as they are now
        try:
            config = llm.backend()
        except ImproperlyConfigured as exc:
            raise CommandError(f"The model backend is misconfigured: {exc}") from None
        if options["summary"]:
            for label, value in start_summary(config, options["summary"], options["workers"]):
                self.line(label, value)
            return
        for label, value in describe(config):
            self.line(label, value)
        if options["offline"]:
            return
        problem = asyncio.run(self.probe(config, reply=options["reply"]))
        if problem is not None:
            raise CommandError(f"The model backend does not answer: {problem}")

    async def probe(self, config: Backend, *, reply: bool) -> str | None:
        """Run the checks, printing each outcome; returns the first failure, if any."""
        try:
            models = await llm.list_models()
        except ProviderError as exc:
            self.line("Models", f"FAILED: {exc.message} ({exc.error_type})")
            return f"{exc.message} ({exc.error_type})"
        self.line("Models", f"ok, {len(models)} offered")
        for line in textwrap.wrap(", ".join(models), width=88):
            self.stdout.write(" " * LABEL_WIDTH + line)
        missing = [name for name in config.models if name not in models]
        if missing and config.name != "azure":
            self.line("Warning", f"not in the upstream's list: {', '.join(missing)}")
        if not reply:
            return None
        try:
            text, finished, ttft_ms = await reply_check(config)
        except ProviderError as exc:
            self.line("Reply", f"FAILED: {exc.message} ({exc.error_type})")
            return f"{exc.message} ({exc.error_type})"
        usage = "usage reported" if finished.usage else "no usage reported (will be estimated)"
        self.line(
            "Reply",
            f"ok, {text.strip()[:40]!r} from {config.default_model} over the {config.api} API, "
            f"first token after {ttft_ms} ms, {finished.status}, {usage}",
        )
        return None

    def line(self, label: str, value: str) -> None:
        self.stdout.write(f"{label + ':':<{LABEL_WIDTH}}{value}")


def describe(config: Backend) -> list[tuple[str, str]]:
    """The configuration as label/value pairs; says whether a key is set, never what it is."""
    if config.is_demo:
        key = "not needed (offline demo)"
    elif config.name == "azure":
        key = "set" if settings.AZURE_OPENAI_API_KEY else "not set (AZURE_OPENAI_API_KEY)"
    elif settings.OPENAI_API_KEY:
        key = "set"
    else:
        key = "not set (OPENAI_API_KEY; local servers usually need none)"
    rows = [
        ("Backend", config.label),
        ("Provider", config.name),
        ("Base URL", config.base_url),
        ("API", config.api),
        ("Model", config.default_model),
        ("Allow-list", ", ".join(config.models)),
        ("API key", key),
        ("Timeout", f"{settings.CHAT_TIMEOUT:g} s, {settings.CHAT_MAX_RETRIES} retries"),
    ]
    if config.name == "azure":
        rows.insert(3, ("API version", settings.AZURE_OPENAI_API_VERSION or "(SDK default)"))
    return rows


def start_summary(config: Backend, url: str, workers: int) -> list[tuple[str, str]]:
    """What the server about to start at `url` serves, in a few lines (never a secret)."""
    url = url.rstrip("/")
    rows = [
        ("Chat", f"{url}/"),
        ("Model", config.label),
        ("Database", database_label()),
        (
            "Admin",
            f"{url}/admin/ (first create a user: .venv/bin/python manage.py createsuperuser)",
        ),
    ]
    if workers > 1:
        if settings.REDIS_URL:
            rows.append(("Workers", f"{workers}, sharing Redis"))
        else:
            rows.append(
                (
                    "WARNING",
                    f"{workers} workers without REDIS_URL: each keeps its own rate limits, "
                    "quotas and stop requests, and a reply can only be resumed on the worker "
                    "that started it. Set REDIS_URL, or WORKERS=1.",
                )
            )
    return rows


def database_label() -> str:
    """The default database, without its password."""
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        name = Path(str(database["NAME"]))
        shown = (
            name.relative_to(settings.BASE_DIR) if name.is_relative_to(settings.BASE_DIR) else name
        )
        return f"SQLite, {shown}"
    host = database.get("HOST") or "local socket"
    port = f":{database['PORT']}" if database.get("PORT") else ""
    return f"{database['ENGINE'].rsplit('.', 1)[-1]}, {database['NAME']} on {host}{port}"


async def reply_check(config: Backend) -> tuple[str, Finished, int]:
    """A one-word reply from the default model: its text, how it finished, and the TTFT."""
    started = time.monotonic()
    ttft_ms: int | None = None
    parts: list[str] = []
    stream = llm.stream_reply(
        messages=[{"role": "user", "content": CHECK_PROMPT}],
        model=config.default_model,
        api=config.api,
    )
    async with contextlib.aclosing(stream):
        async for event in stream:
            if isinstance(event, TextDelta) and event.text:
                if ttft_ms is None:
                    ttft_ms = int((time.monotonic() - started) * 1000)
                parts.append(event.text)
            elif isinstance(event, Finished):
                return "".join(parts), event, ttft_ms or int((time.monotonic() - started) * 1000)
    raise ProviderError("upstream", "The model's stream ended before it finished.")
