"""`manage.py chat_doctor`: the configured backend, and whether it answers."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from chat.management.commands.chat_doctor import CHECK_PROMPT
from chat.models import Message
from tests.upstream import Reply, chat_script

KEY = "sk-test-secret-key-123456"  # what the `upstream` fixture configures
MODELS = {
    "object": "list",
    "data": [
        {"id": "gpt-4.1-mini", "object": "model", "created": 0, "owned_by": "test"},
        {"id": "text-embedding-3-small", "object": "model", "created": 0, "owned_by": "test"},
    ],
}


def run_doctor(*args: str) -> str:
    out = io.StringIO()
    call_command("chat_doctor", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def field(output: str, label: str) -> str:
    [line] = [line for line in output.splitlines() if line.startswith(f"{label}:")]
    return line.split(":", 1)[1].strip()


@pytest.mark.django_db
def test_demo_backend_lists_its_model_and_answers_without_storing_anything():
    output = run_doctor()
    assert field(output, "Provider") == "demo"
    assert "offline demo" in field(output, "Backend")
    assert field(output, "API key") == "not needed (offline demo)"
    assert field(output, "Models") == "ok, 1 offered"
    assert "offline-demo" in output.split("Models:", 1)[1]
    assert field(output, "Reply").startswith("ok, '**Offline demo model**")
    assert not Message.objects.exists()


def test_offline_prints_the_configuration_and_sends_nothing(upstream):
    output = run_doctor("--offline")
    assert upstream.calls == 0
    assert field(output, "Provider") == "compatible"
    assert field(output, "Base URL") == "http://upstream.test/v1"
    assert field(output, "API") == "chat"
    assert field(output, "Model") == "gpt-4.1-mini"
    assert field(output, "Allow-list") == "gpt-4.1-mini, gpt-4.1"
    assert field(output, "API key") == "set"
    assert "Models:" not in output
    assert KEY not in output and "sk-" not in output


def test_models_and_a_one_word_reply_through_the_configured_api(upstream):
    upstream.queue(Reply(json_body=MODELS))
    upstream.queue(Reply(script=chat_script(["ok"])))
    output = run_doctor()
    assert upstream.requests[0].method == "GET"
    assert upstream.requests[0].url.path == "/v1/models"
    assert upstream.requests[1].url.path == "/v1/chat/completions"
    assert upstream.bodies[1]["model"] == "gpt-4.1-mini"
    assert upstream.bodies[1]["messages"] == [{"role": "user", "content": CHECK_PROMPT}]
    assert field(output, "Models") == "ok, 2 offered"
    assert "gpt-4.1-mini, text-embedding-3-small" in output
    # gpt-4.1 is allowed here but the upstream does not offer it
    assert field(output, "Warning") == "not in the upstream's list: gpt-4.1"
    reply = field(output, "Reply")
    assert reply.startswith("ok, 'ok' from gpt-4.1-mini over the chat API")
    assert "no usage reported" in reply


def test_no_reply_only_lists_the_models(upstream):
    upstream.queue(Reply(json_body=MODELS))
    output = run_doctor("--no-reply")
    assert upstream.calls == 1
    assert "Reply:" not in output


def test_rejected_key_fails_with_the_key_free_reason(upstream):
    upstream.queue(
        Reply(status=401, json_body={"error": {"message": f"Incorrect API key provided: {KEY}"}})
    )
    out = io.StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("chat_doctor", stdout=out, stderr=io.StringIO())
    message = str(caught.value)
    assert message.startswith("The model backend does not answer: The model provider rejected")
    assert message.endswith("(upstream_auth)") and "\n" not in message
    assert field(out.getvalue(), "Models").startswith("FAILED: ")
    assert KEY not in out.getvalue() + message


def test_a_model_the_upstream_refuses_fails_the_reply_check(upstream):
    upstream.queue(Reply(json_body=MODELS))
    upstream.queue(
        Reply(status=404, json_body={"error": {"message": "The model gpt-4.1-mini is gone."}})
    )
    out = io.StringIO()
    with pytest.raises(CommandError, match="gpt-4.1-mini is gone"):
        call_command("chat_doctor", stdout=out, stderr=io.StringIO())
    assert field(out.getvalue(), "Reply") == (
        "FAILED: The model gpt-4.1-mini is gone. (upstream_bad_request)"
    )


def test_misconfiguration_is_one_line_not_a_traceback(settings):
    settings.CHAT_PROVIDER = "openai"
    settings.OPENAI_API_KEY = ""
    settings.OPENAI_BASE_URL = ""
    with pytest.raises(CommandError, match="misconfigured: CHAT_PROVIDER=openai needs"):
        run_doctor("--offline")


def test_azure_shows_endpoint_and_version_but_never_the_key(settings):
    settings.CHAT_PROVIDER = "auto"  # picks Azure because its endpoint is set
    settings.AZURE_OPENAI_ENDPOINT = "https://example.openai.azure.com"
    settings.AZURE_OPENAI_API_KEY = "azure-secret-value"
    settings.AZURE_OPENAI_API_VERSION = "2025-04-01-preview"
    output = run_doctor("--offline")
    assert field(output, "Provider") == "azure"
    assert field(output, "Base URL") == "https://example.openai.azure.com"
    assert field(output, "API version") == "2025-04-01-preview"
    assert field(output, "API key") == "set"
    assert "azure-secret-value" not in output


def test_summary_says_where_the_page_admin_model_and_database_are():
    out = io.StringIO()
    call_command("chat_doctor", "--summary", "http://127.0.0.1:8000/", stdout=out)
    lines = dict(line.split(":", 1) for line in out.getvalue().splitlines())
    assert lines["Chat"].strip() == "http://127.0.0.1:8000/"
    assert lines["Admin"].strip().startswith("http://127.0.0.1:8000/admin/")
    assert "createsuperuser" in lines["Admin"]
    assert "offline demo model" in lines["Model"]
    assert lines["Database"].split(",")[0].strip() in ("SQLite", "postgresql")
    assert "WARNING" not in lines  # one worker


def test_summary_warns_of_several_workers_without_redis(settings):
    settings.REDIS_URL = ""
    out = io.StringIO()
    call_command("chat_doctor", "--summary", "http://h:1/", "--workers", "2", stdout=out)
    assert "WARNING:    2 workers without REDIS_URL" in out.getvalue()
    settings.REDIS_URL = "redis://127.0.0.1:6379/0"
    out = io.StringIO()
    call_command("chat_doctor", "--summary", "http://h:1/", "--workers", "2", stdout=out)
    assert "Workers:    2, sharing Redis" in out.getvalue() and "WARNING" not in out.getvalue()
