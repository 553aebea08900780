"""`manage.py chat`: the same turn lifecycle as the web, driven from the terminal."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from chat.access.owners import Owner
from chat.llm import wire
from chat.llm.demo import demo_reply
from chat.management.commands.chat import CLI_OWNER_KEY, Command, TurnOptions
from chat.models import Conversation, Message, ModelPrice
from tests.servers import database_url
from tests.upstream import Reply, chat_script

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
PARTS = ["Hel", "lo,\nwörld", ' "quoted" ', "👋🏽 日本"]
TEXT = "".join(PARTS)
USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


def run_chat(*args: str, **options) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("chat", *args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def assistant_rows() -> list[Message]:
    return list(Message.objects.filter(role="assistant").order_by("pk"))


def test_demo_reply_streams_to_stdout_and_is_stored():
    out, err = run_chat("Write a haiku about Django")
    [row] = assistant_rows()
    assert row.status == "completed" and row.content == demo_reply("Write a haiku about Django")
    assert out == row.content + "\n"
    conversation = row.conversation
    assert conversation.owner is None and conversation.anonymous_key == CLI_OWNER_KEY
    assert conversation.title == "Write a haiku about Django"
    user = Message.objects.get(role="user")
    assert user.content == "Write a haiku about Django"
    assert f"New conversation {conversation.pk}" in err
    summary = err.strip().splitlines()[-1]
    assert summary.startswith("offline-demo · ")
    assert f"{row.input_tokens} in / {row.output_tokens} out tokens" in summary
    assert f"message #{row.pk}" in summary


def test_streamed_text_equals_stored_content_with_usage_and_cost(upstream):
    ModelPrice.objects.create(
        model="gpt-4.1-mini",
        input_per_million=Decimal("0.40"),
        output_per_million=Decimal("1.60"),
        valid_from=timezone.now() - timezone.timedelta(days=1),
    )
    upstream.queue(Reply(script=chat_script(PARTS, usage=USAGE)))
    out, err = run_chat("hi")
    [row] = assistant_rows()
    assert row.content == TEXT and out == TEXT + "\n"
    assert (row.input_tokens, row.output_tokens, row.cost) == (10, 5, Decimal("0.000012"))
    summary = err.strip().splitlines()[-1]
    assert "gpt-4.1-mini · 10 in / 5 out tokens · $0.000012 · TTFT " in summary
    assert "usage estimated" not in summary


def test_usage_estimate_is_flagged_in_the_summary(upstream):
    upstream.queue(Reply(script=chat_script(["no usage sent"])))
    _, err = run_chat("hi")
    [row] = assistant_rows()
    assert row.usage_estimated
    assert "(usage estimated)" in err
    assert "cost unknown" in err  # no price row for this model


def test_options_reach_the_upstream_request(upstream):
    run_chat("hi", "--model", "gpt-4.1", "--system", "Be terse.", "--api", "chat")
    [body] = upstream.bodies
    assert body["model"] == "gpt-4.1"
    assert body["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "hi"},
    ]
    conversation = Conversation.objects.get()
    assert conversation.model == "gpt-4.1" and conversation.system_prompt == "Be terse."


def test_json_prints_the_stored_record(upstream):
    upstream.queue(Reply(script=chat_script(PARTS, usage=USAGE)))
    out, _ = run_chat("hi", "--json")
    record = json.loads(out)
    [row] = assistant_rows()
    assert record == {
        "conversation": str(row.conversation_id),
        "message": row.pk,
        "model": "gpt-4.1-mini",
        "reply": TEXT,
        "status": "completed",
        "finish_reason": "stop",
        "usage": {
            "input_tokens": 10,
            "output_tokens": 5,
            "total_tokens": 15,
            "cached_tokens": 0,
            "reasoning_tokens": 0,
        },
        "usage_estimated": False,
        "cost": None,
        "ttft_ms": row.ttft_ms,
        "duration_ms": row.duration_ms,
    }
    assert row.duration_ms is not None


def test_no_stream_prints_the_whole_reply_once(upstream):
    upstream.queue(Reply(script=chat_script(PARTS)))
    out, _ = run_chat("hi", "--no-stream")
    assert out == TEXT + "\n"


def test_prompt_is_read_from_a_pipe(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("from a pipe\nsecond line\n"))
    out, _ = run_chat()
    user = Message.objects.get(role="user")
    assert user.content == "from a pipe\nsecond line\n"
    assert "> from a pipe" in out


def test_dash_reads_the_prompt_from_stdin():
    run_chat("-", stdin=io.StringIO("dash prompt"))
    assert Message.objects.get(role="user").content == "dash prompt"


def test_file_dash_reads_one_prompt_per_line_from_stdin():
    run_chat("--file", "-", stdin=io.StringIO("one\n\ntwo\n"))
    assert [m.content for m in Message.objects.filter(role="user")] == ["one", "two"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_no_prompt_on_a_terminal_is_an_error():
    with pytest.raises(CommandError, match="Give a prompt"):
        run_chat(stdin=Terminal())
    assert not Message.objects.exists()


@pytest.mark.parametrize("prompt", ["", "   \n"])
def test_empty_prompt_is_refused_and_nothing_is_stored(prompt):
    with pytest.raises(CommandError, match="empty"):
        run_chat(prompt)
    assert not Message.objects.exists()


def test_file_sends_each_line_as_a_turn_of_one_conversation(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("first prompt\n\n   \nsecond prompt\nthird 日本\n", encoding="utf-8")
    out, err = run_chat("--file", str(prompts))
    rows = assistant_rows()
    assert [row.status for row in rows] == ["completed"] * 3
    users = Message.objects.filter(role="user").order_by("pk")
    assert [m.content for m in users] == ["first prompt", "second prompt", "third 日本"]
    assert len({row.conversation_id for row in rows}) == 1
    assert [m.conversation_id for m in users] == [rows[0].conversation_id] * 3
    # The replies, apart: a markdown rule between each two.
    assert out == "\n---\n\n".join(row.content + "\n" for row in rows)
    assert err.count("New conversation") == 1
    assert "[1/3] first prompt" in err and "[3/3] third 日本" in err
    table = err.strip().splitlines()[-5:]
    assert table[0].split()[:3] == ["#", "status", "model"]
    assert [line.split()[0] for line in table[1:4]] == ["1", "2", "3"]
    total_out = sum(row.output_tokens for row in rows)
    assert table[4].split()[:3] == ["total", str(sum(r.input_tokens for r in rows)), str(total_out)]


def test_file_with_json_prints_one_record_per_line(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("one\ntwo\n")
    out, _ = run_chat("--file", str(prompts), "--json")
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["message"] for r in records] == [row.pk for row in assistant_rows()]
    assert [r["status"] for r in records] == ["completed", "completed"]


def test_conversation_continues_with_earlier_messages_as_context(upstream):
    upstream.queue(Reply(script=chat_script(["first answer"], usage=USAGE)))
    upstream.queue(Reply(script=chat_script(["second answer"], usage=USAGE)))
    first = json.loads(run_chat("first question", "--json")[0])
    _, err = run_chat("second question", "--conversation", first["conversation"])
    assert upstream.bodies[1]["messages"] == [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
    ]
    assert "New conversation" not in err
    assert Conversation.objects.count() == 1


def test_file_lines_are_answered_with_the_earlier_ones_as_context(upstream, tmp_path):
    upstream.queue(Reply(script=chat_script(["first answer"], usage=USAGE)))
    upstream.queue(Reply(script=chat_script(["second answer"], usage=USAGE)))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("first question\nsecond question\n")
    out, _ = run_chat("--file", str(prompts))
    assert upstream.bodies[1]["messages"] == [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
    ]
    assert out == "first answer\n\n---\n\nsecond answer\n"


def test_user_option_owns_the_conversation():
    user = get_user_model().objects.create_user("ada")
    run_chat("hi", "--user", "ada")
    conversation = Conversation.objects.get()
    assert conversation.owner == user and conversation.anonymous_key == ""


def test_unknown_user_is_an_error():
    with pytest.raises(CommandError, match="No user 'nobody'"):
        run_chat("hi", "--user", "nobody")


def test_unknown_conversation_is_one_line_error():
    with pytest.raises(CommandError, match="No such conversation") as caught:
        run_chat("hi", "--conversation", str(uuid.uuid4()))
    assert "\n" not in str(caught.value)
    assert not Message.objects.exists()


def test_another_owners_conversation_is_not_found():
    user = get_user_model().objects.create_user("ada")
    run_chat("hi", "--user", "ada")
    conversation = Conversation.objects.get(owner=user)
    with pytest.raises(CommandError, match="No such conversation"):
        run_chat("again", "--conversation", str(conversation.pk))


def test_model_outside_the_allow_list_is_refused_before_anything_is_stored(upstream):
    with pytest.raises(CommandError, match="not allowed"):
        run_chat("hi", "--model", "gpt-9000")
    assert not Message.objects.exists() and upstream.calls == 0


def test_upstream_failure_exits_1_with_one_line_and_no_key(upstream):
    upstream.queue(
        Reply(status=401, json_body={"error": {"message": "bad key sk-test-secret-key-123456"}})
    )
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit) as exited:
        Command(stdout=out, stderr=err).run_from_argv(["manage.py", "chat", "hi"])
    assert exited.value.code == 1
    [row] = assistant_rows()
    assert row.status == "failed" and row.error_type == "upstream_auth"
    last = err.getvalue().strip().splitlines()[-1]
    assert last.startswith("CommandError: The model provider rejected our credentials")
    assert f"(upstream_auth; message #{row.pk})" in last
    assert "Traceback" not in err.getvalue() and "sk-test" not in err.getvalue() + out.getvalue()


def test_mid_stream_failure_keeps_partial_text(upstream):
    script = [*chat_script(["partial ", "text"])[:3], wire.api_error("overloaded")]
    upstream.queue(Reply(script=script))
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match="overloaded"):
        call_command("chat", "hi", stdout=out, stderr=err)
    [row] = assistant_rows()
    assert row.status == "failed" and row.content == "partial text"
    assert out.getvalue() == "partial text\n"


def test_failed_line_in_a_file_does_not_stop_the_others(upstream, tmp_path):
    upstream.queue(Reply(status=500, json_body={"error": {"message": "down"}}))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("one\ntwo\n")
    with pytest.raises(CommandError, match="1 of 2 turns failed"):
        run_chat("--file", str(prompts))
    assert [row.status for row in assistant_rows()] == ["failed", "completed"]


def cli_options() -> TurnOptions:
    return TurnOptions(
        owner=Owner(anonymous_key=CLI_OWNER_KEY),
        conversation_id=None,
        model=None,
        system=None,
        api=None,
        stream=True,
        as_json=False,
    )


class FirstWrite(io.StringIO):
    """stdout that tells the test when the first delta has been printed."""

    def __init__(self) -> None:
        super().__init__()
        self.written = asyncio.Event()

    def write(self, text: str) -> int:
        self.written.set()
        return super().write(text)


@pytest.mark.asyncio
async def test_cancelled_turn_is_recorded_with_its_partial_text(upstream):
    """What Ctrl-C does: asyncio.run cancels the command's task mid-stream."""
    script = chat_script(["one ", "two ", "three"], usage=USAGE)
    script.insert(2, 30.0)  # pause after the first delta
    upstream.queue(Reply(script=script))
    out = FirstWrite()
    command = Command(stdout=out, stderr=io.StringIO())
    task = asyncio.create_task(command.send("hi", cli_options()))
    await asyncio.wait_for(out.written.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    row = await Message.objects.aget(role="assistant")
    assert row.status == "cancelled" and row.content == "one "
    assert row.finished_at is not None and row.usage_estimated
    assert upstream.streams[0].closed
    assert out.getvalue() == "one \n"


@pytest.mark.asyncio
async def test_ctrl_c_while_the_rows_are_written_records_the_turn_as_cancelled(upstream):
    command = Command(stdout=io.StringIO(), stderr=io.StringIO())
    task = asyncio.create_task(command.send("hi", cli_options()))
    await asyncio.sleep(0)  # the task is now waiting for turn_start's transaction
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    row = await Message.objects.aget(role="assistant")
    assert row.status == "cancelled" and row.content == "" and row.finished_at is not None
    assert upstream.calls == 0


def test_ctrl_c_in_a_real_process_records_cancelled_and_exits_130():
    env = {**os.environ, "DATABASE_URL": database_url(), "CHAT_DEMO_DELAY": "0.05"}
    process = subprocess.Popen(
        [sys.executable, "manage.py", "chat", "interrupt me"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # A parent that ignores SIGINT (a background job) would pass that on.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        # Unbuffered, so the rest is left in the pipe for communicate().
        first = os.read(process.stdout.fileno(), 1)  # the first delta has been printed
        process.send_signal(signal.SIGINT)
        rest, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130
    errors = err.decode()
    assert "Traceback" not in errors
    [row] = assistant_rows()
    assert (
        errors.strip()
        .splitlines()[-1]
        .startswith(f"Interrupted: Stopped; message #{row.pk} is recorded as cancelled")
    )
    full = demo_reply("interrupt me")
    assert row.status == "cancelled" and row.content and full.startswith(row.content)
    assert len(row.content) < len(full)
    assert (first + rest).decode() == row.content + "\n"


class ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_closed_output_cancels_the_turn_with_one_line(upstream):
    script = chat_script(["one ", "two ", "three"], usage=USAGE)
    script.insert(2, 30.0)  # the reader leaves long before the reply would end
    upstream.queue(Reply(script=script))
    with pytest.raises(CommandError) as caught:
        call_command("chat", "hi", stdout=ClosedPipe(), stderr=io.StringIO())
    [row] = assistant_rows()
    assert row.status == "cancelled" and row.content == "one "
    assert str(caught.value) == (
        f"The output was closed; message #{row.pk} is recorded as cancelled "
        "with 4 characters of reply."
    )
    assert upstream.streams[0].closed


def test_tool_calls_and_results_are_noted_on_stderr_with_the_demo():
    out, err = run_chat("what time is it in Tokyo?")
    assert '[tool] current_time {"timezone": "Tokyo"}\n' in err
    assert '[tool] current_time → {"timezone": "Asia/Tokyo", "time": "' in err
    assert out.startswith("It is **") and "Asia/Tokyo" in out
    [row] = assistant_rows()
    assert [p["type"] for p in row.parts] == [
        "reasoning",
        "tool_call",
        "tool_result",
        "reasoning",
        "text",
    ]
