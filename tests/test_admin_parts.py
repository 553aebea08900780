"""chat/admin/parts.py: a reply's parts and each model call, on the message's admin page."""

import pytest
from django.urls import reverse

from chat.models import Conversation, Message

pytestmark = pytest.mark.django_db


def test_a_message_page_shows_its_parts_in_order_and_each_round_escaped(admin_client):
    conversation = Conversation.objects.create(anonymous_key="k", title="t", model="m")
    round_usage = {"input_tokens": 10, "output_tokens": 5, "reasoning_tokens": 2}
    message = Message.objects.create(
        conversation=conversation,
        role="assistant",
        content="It is 5.",
        parts=[
            {
                "type": "reasoning",
                "text": "Sum <b>it</b>.",
                "duration_ms": 120,
                "item": {"id": "rs"},
            },
            {
                "type": "tool_call",
                "id": "call_a",
                "name": "add",
                "arguments": '{"a": 2}',
                "runner": "python",
            },
            {
                "type": "tool_result",
                "id": "call_a",
                "name": "add",
                "output": "5",
                "error": False,
                "duration_ms": 3,
            },
            {"type": "text", "text": "It is 5."},
        ],
        rounds=[
            {
                "response_id": "resp_1",
                "finish_reason": "tool_calls",
                "usage": round_usage,
                "cost": "0.00012000",
                "tool_calls": [{"tool": "add", "runner": "python", "cost": "0.00200000"}],
            },
            {
                "response_id": "resp_2",
                "finish_reason": "stop",
                "usage": round_usage,
                "usage_estimated": True,
                "cost": None,
            },
        ],
    )
    page = admin_client.get(
        reverse("admin:chat_message_change", args=[message.pk])
    ).content.decode()

    kinds = [
        "reasoning (120 ms, with the provider&#x27;s item)",
        "tool call: add (python, call_a)",
        "tool result: add in 3 ms",
        "<th>4</th><td>text</td>",
    ]
    positions = [page.index(kind) for kind in kinds]
    assert positions == sorted(positions)
    assert "Sum &lt;b&gt;it&lt;/b&gt;." in page and "<b>it</b>" not in page
    assert (
        "<td>resp_1</td><td>tool_calls</td><td>10</td><td>5</td><td>2</td><td>0.00012000</td>"
        "<td>add 0.00200000</td>" in page
    )
    assert (
        "<td>resp_2</td><td>stop</td><td>≈10</td><td>≈5</td><td>≈2</td><td>—</td><td>—</td>" in page
    )
