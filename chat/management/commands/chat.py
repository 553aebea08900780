"""`manage.py chat "prompt"`: one chat turn from the terminal, through the web's services.

The turn is started, streamed and recorded by `turn_start` / `turn_stream`, so it
is stored, billed and shown in the admin exactly like a turn from the page. Conversations
belong to `--user`, or without it to the anonymous owner key `cli`.

The reply goes to stdout (or the stored record as JSON with `--json`); everything about
the turn (new conversation id, progress, the usage summary) goes to stderr, so
`manage.py chat "…" > reply.md` keeps only the reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import sys
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from chat import llm
from chat.access.owners import Owner
from chat.errors import ChatError
from chat.models import Message
from chat.money import usd
from chat.streams import EndData, UsageData
from chat.text import shortened
from chat.turns import choose_model, stored_end_data, turn_start, turn_stream

# Anonymous web keys are random 32-character tokens, so this one can never collide.
CLI_OWNER_KEY = "cli"
EXIT_INTERRUPTED = 130  # what shells report for a process stopped by SIGINT
PROMPT_PREVIEW_CHARS = 60
# Between two replies of a --file run on stdout: a markdown rule, so the replies stay
# apart on a terminal and in `> replies.md` alike.
REPLY_SEPARATOR = "\n---\n\n"


class Interrupted(CommandError):
    """Ctrl-C: the turn was stopped and recorded as `cancelled`."""


def _plain(text: str) -> str:
    return text


class TurnRecord(EndData):
    """A turn as stored (`--json`): the web's JSON reply fields, read back from its row."""

    conversation: str
    message: int
    model: str
    reply: str


@dataclass(frozen=True, slots=True)
class TurnOptions:
    """What every turn of one invocation shares."""

    owner: Owner
    conversation_id: uuid.UUID | None
    model: str | None
    system: str | None
    api: str | None
    stream: bool
    as_json: bool


class Command(BaseCommand):
    help = (
        "Send a prompt to the configured model, stream the reply to stdout and store the "
        "turn like one from the chat page. Reads the prompt from stdin when it is '-' or "
        "piped, or one prompt per line with --file."
    )
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "prompt", nargs="?", help="the message; '-' (or a pipe) reads it from stdin"
        )
        parser.add_argument("--model", help="a model from the allow-list (CHAT_MODELS)")
        parser.add_argument("--system", help="system prompt for a new conversation")
        parser.add_argument("--api", choices=llm.APIS, help="Responses or Chat Completions")
        parser.add_argument(
            "--conversation", type=uuid.UUID, metavar="UUID", help="continue this conversation"
        )
        parser.add_argument(
            "--user",
            metavar="USERNAME",
            help=f"act as this user (default: the anonymous owner key {CLI_OWNER_KEY!r})",
        )
        parser.add_argument(
            "--file",
            metavar="PATH",
            help="send each non-empty line as its own turn, all in one new conversation "
            "(or in --conversation); '-' reads the lines from stdin",
        )
        parser.add_argument(
            "--no-stream",
            dest="stream",
            action="store_false",
            help="print the reply once it is complete",
        )
        parser.add_argument(
            "--json",
            dest="as_json",
            action="store_true",
            help="print the stored record of each turn as one JSON line instead of the reply",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdin: TextIO = options.get("stdin") or sys.stdin
        self.in_flight: int | None = None
        self.records: list[TurnRecord] = []
        prompts: list[str] = []
        try:
            prompts = self.read_prompts(options["prompt"], options["file"])
            turn_options = TurnOptions(
                owner=self.resolve_owner(options["user"]),
                conversation_id=options["conversation"],
                model=options["model"],
                system=options["system"],
                api=options["api"],
                stream=options["stream"],
                as_json=options["as_json"],
            )
            # Refuse a bad --model before anything is stored or sent.
            choose_model(options["model"])
            with quiet_turn_log(options["verbosity"]):
                records = asyncio.run(self.send_all(prompts, turn_options))
        except KeyboardInterrupt:
            raise self.interrupted(prompts) from None
        except BrokenPipeError:
            # The reader left (`| head`): Python's own flush at exit must not fail again.
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), self.stdout.fileno())
            raise CommandError(f"The output was closed{self.in_flight_outcome()}.") from None
        except ChatError as exc:
            message = exc.message
            if exc.type == "not_found" and options["conversation"] is not None:
                message = "No such conversation for this owner (use the --user that started it)."
            raise CommandError(message) from None
        except ImproperlyConfigured as exc:
            raise CommandError(f"The model backend is misconfigured: {exc}") from None
        if len(prompts) > 1:
            self.note(summary_table(prompts, records))
        failed = [r for r in records if r["status"] == Message.Status.FAILED]
        if failed:
            raise CommandError(
                failure_line(failed[0])
                if len(records) == 1
                else f"{len(failed)} of {len(records)} turns failed."
            )

    def read_prompts(self, prompt: str | None, path: str | None) -> list[str]:
        if path is not None:
            if prompt is not None:
                raise CommandError("Give a prompt or --file, not both.")
            try:
                text = self.stdin.read() if path == "-" else Path(path).read_text("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise CommandError(f"Cannot read {path}: {exc}") from None
            prompts = [line.strip() for line in text.splitlines() if line.strip()]
            if not prompts:
                raise CommandError(f"{path} has no prompts (no non-empty lines).")
        else:
            if prompt is None and self.stdin.isatty():
                raise CommandError("Give a prompt, '-' to read it from stdin, or --file.")
            prompts = [self.stdin.read() if prompt is None or prompt == "-" else prompt]
            if not prompts[0].strip():
                raise CommandError("The prompt is empty.")
        for n, text in enumerate(prompts, 1):
            if len(text) > settings.CHAT_MAX_MESSAGE_CHARS:
                where = f"Line {n}" if path is not None else "The prompt"
                raise CommandError(
                    f"{where} is longer than {settings.CHAT_MAX_MESSAGE_CHARS} characters."
                )
        return prompts

    def resolve_owner(self, username: str | None) -> Owner:
        if username is None:
            return Owner(anonymous_key=CLI_OWNER_KEY)
        User = get_user_model()
        try:
            user = User._default_manager.get_by_natural_key(username)
        except User.DoesNotExist:
            raise CommandError(f"No user {username!r}.") from None
        return Owner(user_id=user.pk)

    async def send_all(self, prompts: list[str], options: TurnOptions) -> list[TurnRecord]:
        for n, prompt in enumerate(prompts, 1):
            if len(prompts) > 1:
                if n > 1 and not options.as_json:
                    self.stdout.write(REPLY_SEPARATOR, ending="")
                self.note(f"[{n}/{len(prompts)}] {preview(prompt)}")
            record = await self.send(prompt, options)
            self.records.append(record)
            if options.conversation_id is None:
                # A file is one conversation: each line is answered with the earlier
                # ones as context, as in the chat page.
                conversation = uuid.UUID(record["conversation"])
                options = dataclasses.replace(options, conversation_id=conversation)
        return self.records

    async def send(self, prompt: str, options: TurnOptions) -> TurnRecord:
        """Run one turn, writing the reply as it arrives; returns the stored record."""
        # turn_start leaves no row claimed if Ctrl-C lands while it writes.
        turn = await turn_start(
            owner=options.owner,
            message=prompt,
            conversation_id=options.conversation_id,
            model=options.model,
            system=options.system,
            api=options.api,
        )
        self.in_flight = turn.message_id
        if options.conversation_id is None and not options.as_json:
            self.note(
                f"New conversation {turn.conversation_id} "
                f"(continue it with --conversation {turn.conversation_id})"
            )
        live = options.stream and not options.as_json
        parts: list[str] = []
        try:
            # Closed here, not by the garbage collector, if writing fails (a closed pipe).
            async with contextlib.aclosing(turn_stream(turn=turn)) as events:
                async for event in events:
                    if event.type in ("tool_call", "tool_result") and live:
                        self.note(tool_line(event.type, event.data))
                    if event.type != "delta":
                        continue
                    parts.append(event.data["text"])
                    if live:
                        self.stdout.write(event.data["text"], ending="")
                        self.stdout.flush()
        finally:
            # Also on Ctrl-C: end the partial line so the shell prompt starts afresh.
            if live and parts and not parts[-1].endswith("\n"):
                self.stdout.write("")
                self.stdout.flush()
        self.in_flight = None
        row = await Message.objects.aget(pk=turn.message_id)
        record = stored_record(row)
        if options.as_json:
            self.stdout.write(json.dumps(record, ensure_ascii=False))
        else:
            if not live and record["reply"]:
                self.stdout.write(record["reply"])
            self.note(summary_line(record))
        self.stdout.flush()
        return record

    def interrupted(self, prompts: list[str]) -> Interrupted:
        if len(prompts) > 1 and self.records:
            self.note(summary_table(prompts, self.records))
        if self.in_flight is None:
            where = "between turns" if self.records else "before anything was sent"
            return Interrupted(f"Stopped {where}.", returncode=EXIT_INTERRUPTED)
        return Interrupted(f"Stopped{self.in_flight_outcome()}.", returncode=EXIT_INTERRUPTED)

    def in_flight_outcome(self) -> str:
        """How the turn that was running when we stopped is recorded (for the last line)."""
        if self.in_flight is None:
            return ""
        row = Message.objects.get(pk=self.in_flight)
        return (
            f"; message #{row.pk} is recorded as {row.status} "
            f"with {len(row.content)} characters of reply"
        )

    def note(self, line: str) -> None:
        """A line for the operator on stderr, uncoloured (stderr defaults to error red)."""
        self.stderr.write(line, style_func=_plain)
        self.stderr.flush()


@contextlib.contextmanager
def quiet_turn_log(verbosity: int) -> Iterator[None]:
    """Hide the services' per-turn log line below `-v 2`: the summary line says the same."""
    logger = logging.getLogger("chat")
    level = logger.level
    if verbosity < 2:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def stored_record(message: Message) -> TurnRecord:
    """The turn as stored: the web's JSON reply fields, read back from the row."""
    return {
        "conversation": str(message.conversation_id),
        "message": message.pk,
        "model": message.model,
        "reply": message.content,
        **stored_end_data(message),
    }


def summary_line(record: TurnRecord) -> str:
    """`model · 12 in / 80 out tokens · $0.000140 · TTFT 210 ms · 1840 ms · message #7`."""
    usage = record["usage"]
    parts = [record["model"]]
    if record["status"] != Message.Status.COMPLETED:
        error = record.get("error")
        reason = record["finish_reason"] or (error["type"] if error else "")
        parts.append(f"{record['status'].upper()}" + (f" ({reason})" if reason else ""))
    if usage is not None:
        tokens = f"{usage['input_tokens']} in / {usage['output_tokens']} out tokens"
        parts.append(tokens + (" (usage estimated)" if record["usage_estimated"] else ""))
    parts.append(format_cost(record["cost"]))
    if record["ttft_ms"] is not None:
        parts.append(f"TTFT {record['ttft_ms']} ms")
    if record["duration_ms"] is not None:
        parts.append(f"{record['duration_ms']} ms")
    parts.append(f"message #{record['message']}")
    return " · ".join(parts)


def format_cost(cost: str | None) -> str:
    return "cost unknown (no price)" if cost is None else usd(cost)


def failure_line(record: TurnRecord) -> str:
    error = record.get("error")
    message, type = (error["message"], error["type"]) if error else ("", "")
    return (
        f"{message or 'The model failed.'} "
        f"({type or 'upstream_error'}; message #{record['message']})"
    )


def preview(prompt: str) -> str:
    return shortened(prompt, PROMPT_PREVIEW_CHARS)


def summary_table(prompts: list[str], records: list[TurnRecord]) -> str:
    """One row per turn and a totals row, as aligned plain text."""
    header = ["#", "status", "model", "in", "out", "cost", "ttft_ms", "ms", "message", "prompt"]
    rows: list[list[str]] = []
    total_in = total_out = 0
    total_cost = Decimal(0)
    for n, (prompt, record) in enumerate(zip(prompts, records, strict=False), 1):
        usage: UsageData | dict[str, int] = record["usage"] or {}
        total_in += usage.get("input_tokens", 0)
        total_out += usage.get("output_tokens", 0)
        total_cost += Decimal(record["cost"] or 0)
        rows.append(
            [
                str(n),
                record["status"],
                record["model"],
                str(usage.get("input_tokens", "")),
                str(usage.get("output_tokens", "")),
                "" if record["cost"] is None else usd(record["cost"]),
                _str(record["ttft_ms"]),
                _str(record["duration_ms"]),
                str(record["message"]),
                preview(prompt),
            ]
        )
    rows.append(["", "total", "", str(total_in), str(total_out), usd(total_cost), "", "", "", ""])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def _str(value: int | None) -> str:
    return "" if value is None else str(value)


def tool_line(kind: str, data: Mapping[str, Any]) -> str:
    """A tool call or its result, one line on stderr while the reply streams."""
    if kind == "tool_call":
        return f"[tool] {data['name']} {data['arguments']}"
    output = " ".join(str(data["output"]).split())
    cut = output if len(output) <= 200 else output[:200] + "…"
    return f"[tool] {data['name']} {'failed: ' if data['error'] else '→ '}{cut}"
