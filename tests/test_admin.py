"""The admin: conversations, messages, prices, the usage dashboard and CSV exports."""

import csv
import io
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from chat.models import Conversation, Message, ModelPrice
from chat.money import usd
from chat.spend.ledger import ledger_rebuild
from tests.asgi import asgi_request
from tests.usage_rows import TURNS, Turn, create_turns, expected, many_turns

pytestmark = pytest.mark.django_db

CONVERSATIONS = reverse("admin:chat_conversation_changelist")
MESSAGES = reverse("admin:chat_message_changelist")
DASHBOARD = reverse("admin:chat_message_usage")
EXPORT = reverse("admin:chat_message_export")


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    # Slow hashing protects real passwords; here it would only slow every login.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def read_csv(response) -> list[list[str]]:
    body = b"".join(response.streaming_content).decode("utf-8")
    assert body.startswith("\ufeff")  # Excel reads the file as UTF-8
    return list(csv.reader(io.StringIO(body[1:])))


def staff_client(*permissions: str) -> Client:
    user = get_user_model().objects.create_user("staffer", password="x", is_staff=True)
    for codename in permissions:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.force_login(user)
    return client


def test_index_links_the_dashboard(admin_client):
    response = admin_client.get(reverse("admin:index"))
    assert response.status_code == 200
    assert DASHBOARD.encode() in response.content
    assert CONVERSATIONS.encode() in response.content


def test_conversation_list_shows_owner_counts_tokens_and_cost(admin_client):
    create_turns()
    response = admin_client.get(CONVERSATIONS)
    assert response.status_code == 200
    rows = {c.title: c for c in response.context["cl"].result_list}
    assert len(rows) == len(TURNS)
    first = rows["A chat 0"]
    assert (first.message_count, first.token_sum, first.cost_sum) == (2, 200, Decimal("0.000176"))
    html = response.content.decode()
    assert "anonymous" in html and "alice" in html and "gpt-4.1-mini" in html
    assert ">$0.000176</td>" in html  # the one money format, precise when small


def test_conversation_search_finds_message_text_once(admin_client):
    create_turns()
    response = admin_client.get(CONVERSATIONS, {"q": '"Question 2"'})
    assert [c.title for c in response.context["cl"].result_list] == ["A chat 2"]
    # Both messages match "Hello": the conversation is still listed once, with its totals.
    response = admin_client.get(CONVERSATIONS, {"q": "hello there"})
    listed = response.context["cl"].result_list
    assert len(listed) == len({c.pk for c in listed}) == sum(t.status != "failed" for t in TURNS)
    assert all(c.message_count == 2 for c in listed)


def test_conversation_page_lists_its_messages_read_only(admin_client):
    [reply] = create_turns([Turn("alice", "gpt-4.1", 0, title="<script>alert(1)</script>")])
    url = reverse("admin:chat_conversation_change", args=[reply.conversation_id])
    response = admin_client.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    assert "Question 0" in html and "Hello there" in html
    assert "<textarea" not in html and 'name="title"' not in html
    assert admin_client.post(url, {"title": "changed"}).status_code == 403


def test_message_list_filters_failed_replies(admin_client):
    create_turns()
    response = admin_client.get(MESSAGES, {"status__exact": "failed"})
    assert response.status_code == 200
    listed = response.context["cl"].result_list
    assert {m.status for m in listed} == {"failed"}
    assert len(listed) == sum(t.status == "failed" for t in TURNS)
    html = response.content.decode()
    assert "rate_limit" in html and "timeout" in html
    assert reverse("admin:chat_conversation_change", args=[listed[0].conversation_id]) in html


@pytest.mark.parametrize(
    "query",
    [
        {"model__exact": "gpt-5-mini"},
        {"provider__exact": "demo"},
        {"usage_estimated__exact": "1"},
        {"role__exact": "user"},
        {"q": "Question 1"},
    ],
)
def test_message_list_filters(admin_client, query):
    create_turns()
    response = admin_client.get(MESSAGES, query)
    assert response.status_code == 200
    assert response.context["cl"].result_count >= 1
    assert response.context["cl"].result_count < Message.objects.count()


def test_message_search_lists_every_match_newest_first_under_filters_and_orderings(
    admin_client,
):
    [reply] = create_turns([Turn("alice", "gpt-4.1", 0)])
    conversation = reply.conversation
    for n in range(90):
        Message.objects.create(
            conversation=conversation,
            role="assistant" if n % 2 else "user",
            content=f"rotate the logs {n}" if n % 3 else f"something else {n}",
            model="o3" if n % 4 == 1 else "gpt-4.1",
        )
    matching = Message.objects.filter(content__startswith="rotate the logs")
    newest_first = list(matching.order_by("-id").values_list("pk", flat=True))

    def listed(**query: str) -> list[int]:
        response = admin_client.get(MESSAGES, {"q": "logs", **query})
        assert response.status_code == 200
        return [m.pk for m in response.context["cl"].result_list]

    # Two pages of 50 (the list's page size), newest first, nothing skipped or repeated.
    assert listed() + listed(p="2") == newest_first
    model_of = dict(matching.values_list("pk", "model"))
    assert listed(model="o3") == [pk for pk in newest_first if model_of[pk] == "o3"]
    # An ordering someone chose (the model column, then newest first) still applies.
    by_model = sorted(newest_first, key=lambda pk: model_of[pk])
    assert listed(o="5") + listed(o="5", p="2") == by_model


def test_messages_cannot_be_added_changed_or_deleted_even_by_a_superuser(admin_client):
    [reply] = create_turns([Turn("alice", "gpt-4.1", 0)])
    change = reverse("admin:chat_message_change", args=[reply.pk])
    page = admin_client.get(change)
    assert page.status_code == 200 and b'name="content"' not in page.content
    assert admin_client.post(change, {"content": "rewritten", "cost": "0"}).status_code == 403
    assert admin_client.get(reverse("admin:chat_message_add")).status_code == 403
    reply.refresh_from_db()
    assert reply.content == "Hello there"
    # A billing record: its text goes by purging, its usage never (chat_purge).
    delete = reverse("admin:chat_message_delete", args=[reply.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    conversation = reverse("admin:chat_conversation_delete", args=[reply.conversation_id])
    assert admin_client.post(conversation, {"post": "yes"}).status_code == 403
    assert Message.objects.filter(pk=reply.pk).exists()


def test_view_only_staff_can_read_but_not_delete():
    [reply] = create_turns([Turn("alice", "gpt-4.1", 0)])
    client = staff_client("view_message", "view_conversation")
    assert client.get(MESSAGES).status_code == 200
    assert client.get(DASHBOARD).status_code == 200
    delete = reverse("admin:chat_message_delete", args=[reply.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    response = client.post(
        MESSAGES, {"action": "recompute_cost", "_selected_action": [reply.pk]}, follow=True
    )
    assert "No action selected" in response.content.decode()
    assert Message.objects.filter(pk=reply.pk).exists()


@pytest.mark.parametrize("url", [CONVERSATIONS, MESSAGES, DASHBOARD, EXPORT])
def test_non_staff_are_sent_to_the_login_page(client, url):
    user = get_user_model().objects.create_user("visitor", password="x")
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 302 and response.url.startswith(reverse("admin:login"))


def test_a_signed_in_person_who_is_not_staff_is_told_so_and_sent_back_to_chat(client):
    user = get_user_model().objects.create_user("visitor", password="x")
    client.force_login(user)
    html = client.get(reverse("admin:index"), follow=True).content.decode()
    assert "<h1>No access</h1>" in html and "visitor" in html
    assert f'href="{reverse("chat:index")}">Back to chat</a>' in html
    assert 'name="password"' not in html  # not a form asking them to sign in again


def test_a_visitor_who_is_not_signed_in_gets_the_sign_in_form(client):
    html = client.get(reverse("admin:index"), follow=True).content.decode()
    assert 'name="password"' in html and "No access" not in html


@pytest.mark.parametrize("url", [DASHBOARD, EXPORT, reverse("admin:chat_message_usage_csv")])
def test_staff_without_message_permission_are_forbidden(url):
    assert staff_client().get(url).status_code == 403


def test_changelist_queries_do_not_grow_with_rows(admin_client):
    def queries(url: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(url).status_code == 200
        return len(captured)

    create_turns(many_turns(3))
    few = {url: queries(url) for url in (CONVERSATIONS, MESSAGES)}
    create_turns(many_turns(30))
    assert {url: queries(url) for url in (CONVERSATIONS, MESSAGES)} == few


def test_conversation_page_queries_do_not_grow_with_messages(
    admin_client, django_assert_max_num_queries
):
    [reply] = create_turns([Turn("alice", "gpt-4.1", 0)])
    for n in range(30):
        Message.objects.create(conversation_id=reply.conversation_id, role="user", content=f"{n}")
    with django_assert_max_num_queries(12):
        admin_client.get(reverse("admin:chat_conversation_change", args=[reply.conversation_id]))


def test_dashboard_numbers_equal_a_direct_computation(admin_client):
    create_turns()
    response = admin_client.get(DASHBOARD, {"period": "30d"})
    assert response.status_code == 200
    want_total = expected(TURNS, days=30, by="total")["total"]
    totals = response.context["totals"]
    assert (totals.requests, totals.failed, totals.cost) == (
        want_total["requests"],
        want_total["failed"],
        want_total["cost"],
    )
    assert (totals.input_tokens, totals.output_tokens) == (
        want_total["input_tokens"],
        want_total["output_tokens"],
    )
    for table in response.context["tables"]:
        want = expected(TURNS, days=30, by=table.by)
        got = {row.key: (row.requests, row.failed, row.cost) for row in table.report.rows}
        assert got == {k: (v["requests"], v["failed"], v["cost"]) for k, v in want.items()}
    html = response.content.decode()
    assert "<svg" in html and "<rect" in html and "o3" in html and "anonymous" in html
    # People read one money format: the card and every table's cost cell.
    assert f'<div class="value">{usd(want_total["cost"])}</div>' in html
    for table in response.context["tables"]:
        assert [cells[3] for _, _, cells in table.rows] == [
            usd(row.cost) for row in table.report.rows
        ]


def test_dashboard_reads_the_ledger_once_per_table(admin_client):
    """The reasoning card comes from the day table's totals: three passes over the usage
    ledger (day, model, user), however many cards and charts the page shows."""
    replies = create_turns()
    # The first two replies finished today and yesterday.
    Message.objects.filter(pk__in=[r.pk for r in replies[:2]]).update(reasoning_tokens=1234)
    ledger_rebuild()
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(DASHBOARD, {"period": "30d"})
    ledger_reads = [q["sql"] for q in queries if '"chat_dailyusage"' in q["sql"]]
    assert len(ledger_reads) == 3, ledger_reads
    assert response.context["reasoning_tokens"] == "2,468"


@pytest.mark.parametrize(
    ("query", "days"), [({"period": "today"}, 1), ({}, 7), ({"period": "30d"}, 30)]
)
def test_dashboard_periods(admin_client, query, days):
    create_turns()
    totals = admin_client.get(DASHBOARD, query).context["totals"]
    assert totals.requests == sum(t.days_ago < days for t in TURNS)


def test_dashboard_custom_period_and_bad_input(admin_client):
    create_turns()
    day = (timezone.localdate() - timezone.timedelta(days=2)).isoformat()
    custom = admin_client.get(DASHBOARD, {"period": "custom", "since": day, "until": day})
    assert custom.context["totals"].requests == sum(t.days_ago == 2 for t in TURNS)
    chart = custom.context["charts"][0]
    assert len(chart.bars) == 1
    # An impossible period falls back to the default and says why.
    bad = admin_client.get(
        DASHBOARD, {"period": "custom", "since": "2025-02-02", "until": "2025-01-01"}
    )
    assert bad.status_code == 200 and bad.context["form"].errors
    assert bad.context["totals"].requests == sum(t.days_ago < 7 for t in TURNS)


def test_dashboard_chart_has_a_bar_per_day(admin_client):
    create_turns()
    charts = admin_client.get(DASHBOARD, {"period": "7d"}).context["charts"]
    cost, tokens = charts
    assert len(cost.bars) == len(tokens.bars) == 7
    # The tallest token bar is the day with the most tokens; empty days have height 0.
    heights = [sum(s.height for s in bar.segments) for bar in tokens.bars]
    assert max(heights) > 0 and min(heights) == 0


def test_dashboard_chart_axis_reads_in_the_money_format(admin_client):
    create_turns()
    cost, _ = admin_client.get(DASHBOARD, {"period": "7d"}).context["charts"]
    labels = [tick.label for tick in cost.ticks]
    assert len(labels) == len(set(labels)) == 5 and labels[0] == "$0.00"
    assert all(label == usd(label.removeprefix("$")) for label in labels)


def test_dashboard_charts_of_an_empty_period_have_one_zero_line(admin_client):
    cost, tokens = admin_client.get(DASHBOARD, {"period": "7d"}).context["charts"]
    assert [tick.label for tick in cost.ticks] == ["$0.00"]
    assert [tick.label for tick in tokens.ticks] == ["0"]
    html = admin_client.get(DASHBOARD, {"period": "7d"}).content.decode()
    assert html.count(">$0.00</text>") == 1


def test_dashboard_csv_matches_the_table(admin_client):
    create_turns()
    response = admin_client.get(
        reverse("admin:chat_message_usage_csv"), {"period": "7d", "by": "user"}
    )
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert "attachment" in response["Content-Disposition"]
    rows = read_csv(response)
    assert rows[0] == [
        "user",
        "requests",
        "failed",
        "failure_rate",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "ttft_median_ms",
        "ttft_p95_ms",
        "reasoning_tokens",
        "budget_usd",
        "spent_this_period_usd",
    ]
    want = expected(TURNS, days=7, by="user")
    got = {row[0]: (int(row[1]), Decimal(row[6])) for row in rows[1:-1]}
    assert got == {k: (v["requests"], v["cost"]) for k, v in want.items()}
    assert rows[-1][0] == "total"


def test_export_streams_the_filtered_message_list(admin_client):
    create_turns()
    response = admin_client.get(EXPORT, {"status__exact": "failed"})
    assert response.streaming
    rows = read_csv(response)
    header = rows[0]
    assert header[:6] == [
        "id",
        "created_at",
        "finished_at",
        "conversation",
        "conversation_title",
        "owner",
    ]
    assert "cost_usd" in header and "error_type" in header and "content" not in header
    records = [dict(zip(header, row, strict=True)) for row in rows[1:]]
    failed = Message.objects.filter(status="failed")
    assert sorted(int(r["id"]) for r in records) == sorted(failed.values_list("pk", flat=True))
    assert {r["status"] for r in records} == {"failed"}
    assert {r["owner"] for r in records} == {"alice", "bob", "anonymous"}
    # A cell that a spreadsheet would run as a formula is defused.
    assert "'=cmd|' /C calc'!A0 7" in {r["conversation_title"] for r in records}


def test_export_button_carries_the_current_filters(admin_client):
    create_turns()
    response = admin_client.get(MESSAGES, {"status__exact": "failed"})
    assert f"{EXPORT}?status__exact=failed".encode() in response.content


def test_export_action_exports_the_selected_rows(admin_client):
    replies = create_turns()
    chosen = [replies[0].pk, replies[4].pk]
    response = admin_client.post(MESSAGES, {"action": "export_csv", "_selected_action": chosen})
    rows = read_csv(response)
    assert sorted(int(row[0]) for row in rows[1:]) == sorted(chosen)


def test_price_edit_keeps_stored_costs_and_recompute_applies_it(admin_client):
    [reply] = create_turns(
        [Turn("alice", "test-model", 0, input_tokens=1000, output_tokens=1000, cost="0.00300000")]
    )
    entry = ModelPrice.objects.create(
        model="test-model",
        input_per_million=Decimal("1"),
        output_per_million=Decimal("2"),
        valid_from=timezone.now() - timezone.timedelta(days=365),
    )
    change = reverse("admin:chat_modelprice_change", args=[entry.pk])
    form = admin_client.get(change)
    assert b'name="output_per_million"' in form.content
    valid_from = timezone.localtime(entry.valid_from)
    response = admin_client.post(
        change,
        {
            "model": "test-model",
            "input_per_million": "1",
            "cached_input_per_million": "",
            "output_per_million": "10",
            "valid_from_0": valid_from.strftime("%Y-%m-%d"),
            "valid_from_1": valid_from.strftime("%H:%M:%S"),
        },
    )
    assert response.status_code == 302
    entry.refresh_from_db()
    assert entry.output_per_million == Decimal("10")
    reply.refresh_from_db()
    assert reply.cost == Decimal("0.003")

    response = admin_client.post(
        MESSAGES, {"action": "recompute_cost", "_selected_action": [reply.pk]}, follow=True
    )
    assert "1 changed" in response.content.decode()
    reply.refresh_from_db()
    assert reply.cost == Decimal("0.011")  # 1000 × 1 + 1000 × 10 per million


def test_a_tool_price_added_in_the_admin_counts_at_once(admin_client):
    from chat.models import ToolPrice
    from chat.spend.prices import tool_price_now

    now = timezone.now()
    assert tool_price_now("order_status", now) is None  # free, and the list is now cached
    added = timezone.localtime(now - timezone.timedelta(days=1))
    response = admin_client.post(
        reverse("admin:chat_toolprice_add"),
        {
            "tool": "order_status",
            "per_thousand_calls": "3.5",
            "valid_from_0": added.strftime("%Y-%m-%d"),
            "valid_from_1": added.strftime("%H:%M:%S"),
        },
    )
    assert response.status_code == 302 and ToolPrice.objects.count() == 1
    assert tool_price_now("order_status", now) == Decimal("3.5")
    listed = admin_client.get(reverse("admin:chat_toolprice_changelist"), {"q": "order"})
    assert b"order_status" in listed.content


def test_model_prices_are_listed(admin_client):
    response = admin_client.get(reverse("admin:chat_modelprice_changelist"), {"q": "gpt-4.1"})
    assert response.status_code == 200
    assert b"gpt-4.1-mini" in response.content
    assert Conversation.objects.count() == 0


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_export_streams_chunk_by_chunk_under_asgi():
    def setup() -> str:
        [reply] = create_turns([Turn("alice", "gpt-4.1", 0)])
        Message.objects.bulk_create(
            Message(conversation_id=reply.conversation_id, role="user", content=f"{n}")
            for n in range(1198)
        )
        user = get_user_model().objects.create_superuser("root", password="x")
        client = Client()
        client.force_login(user)
        return client.cookies["sessionid"].value

    session = await sync_to_async(setup)()
    response = await asgi_request("GET", EXPORT, cookies={"sessionid": session})
    assert response.status == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    # 1200 rows arrive in several body chunks instead of one buffered body.
    assert len([c for c in response.chunks if c]) > 2
    rows = list(csv.reader(io.StringIO(response.body.decode("utf-8").lstrip("\ufeff"))))
    assert len(rows) == 1 + 1200


def test_people_list_shows_budget_and_spend_and_the_inline_sets_an_own_limit(
    admin_client, settings
):
    from chat.models import Budget
    from chat.spend import budgets

    settings.CHAT_BUDGET_USD = Decimal("5")
    create_turns()
    user = get_user_model().objects.exclude(is_superuser=True).first()
    spent = budgets.spend_of([user.pk], budgets.budget_period()).get(user.pk, Decimal(0))
    with CaptureQueriesContext(connection) as queries:
        page = admin_client.get(reverse("admin:auth_user_changelist"))
    html = page.content.decode()
    assert "Spent this period" in html and "$5.00 / month" in html
    assert usd(spent) in html
    assert len(queries) < 10  # spend comes in the list's own query, not one per person

    change = reverse("admin:auth_user_change", args=[user.pk])
    form = admin_client.get(change).context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None and k != "password"}
    data.update(
        {
            "username": user.username,
            "date_joined_0": timezone.localtime(user.date_joined).strftime("%Y-%m-%d"),
            "date_joined_1": timezone.localtime(user.date_joined).strftime("%H:%M:%S"),
            "chat_budget-TOTAL_FORMS": "1",
            "chat_budget-INITIAL_FORMS": "0",
            "chat_budget-MIN_NUM_FORMS": "0",
            "chat_budget-MAX_NUM_FORMS": "1",
            "chat_budget-0-limit_usd": "20",
            "chat_budget-0-user": str(user.pk),
        }
    )
    data.pop("groups", None)
    data.pop("user_permissions", None)
    data.pop("last_login", None)
    # This worker holds the person's limit (the default) in its cache before the change.
    limit_now = async_to_sync(budgets.budget_status)
    assert limit_now(user_id=user.pk, with_spend=False).limit == Decimal("5")
    response = admin_client.post(change, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert Budget.objects.get(user=user).limit_usd == Decimal("20")
    # Every worker re-reads it; this one at once, not when its cached limit expires.
    assert limit_now(user_id=user.pk, with_spend=False).limit == Decimal("20")
    assert (
        "$20.00 / month" in admin_client.get(reverse("admin:auth_user_changelist")).content.decode()
    )


def test_a_conversation_its_owner_deleted_is_shown_as_deleted(admin_client):
    create_turns()
    gone = Conversation.objects.first()
    gone.deleted_at = timezone.now()
    gone.save(update_fields=["deleted_at"])
    listing = admin_client.get(
        reverse("admin:chat_conversation_changelist"), {"deleted_at__isempty": "0"}
    )
    assert list(listing.context["cl"].result_list) == [gone]
    detail = admin_client.get(reverse("admin:chat_conversation_change", args=[gone.pk]))
    assert "Deleted at" in detail.content.decode()


def test_earlier_versions_of_a_regenerated_turn_are_shown_and_filtered(admin_client):
    [reply] = create_turns([Turn("alice", "gpt-4.1", 0)])
    replaced_at = timezone.now()
    Message.objects.filter(pk=reply.pk).update(superseded_at=replaced_at)
    newer = Message.objects.create(
        conversation_id=reply.conversation_id,
        role="assistant",
        content="A better answer",
        model="gpt-4.1",
        version_of=reply,
    )
    page = admin_client.get(reverse("admin:chat_conversation_change", args=[newer.conversation_id]))
    html = page.content.decode()
    assert "earlier version" in html and "current (regenerated/edited)" in html
    earlier = admin_client.get(MESSAGES, {"version": "earlier"})
    assert list(earlier.context["cl"].result_list) == [reply]
    current = admin_client.get(MESSAGES, {"version": "current"})
    assert reply not in current.context["cl"].result_list
    assert newer in current.context["cl"].result_list
    detail = admin_client.get(reverse("admin:chat_message_change", args=[newer.pk]))
    assert "A better answer" in detail.content.decode() and "Version of" in detail.content.decode()


def test_large_lists_are_counted_exactly_only_while_small(monkeypatch):
    """Past the limit, PostgreSQL's planner estimates (its statistics, no scan); SQLite,
    which keeps none, says the limit."""
    from django.db import connection

    from chat.admin import lists

    create_turns(TURNS)
    messages = Message.objects.all()
    total = messages.count()
    assert lists.estimated_count(messages) == total  # under the limit: exact
    monkeypatch.setattr(lists, "EXACT_COUNT_LIMIT", 5)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE chat_message")
        assert lists.estimated_count(messages) == pytest.approx(total, abs=2)
    else:
        assert lists.estimated_count(messages) == 5
    few = [m for m in messages if m.model == "o3"]
    assert 0 < len(few) <= 5
    assert lists.estimated_count(messages.filter(model="o3")) == len(few)  # few: exact


def test_conversation_search_finds_title_words_and_message_words_through_the_indexes(
    admin_client,
):
    create_turns([Turn("alice", "gpt-4.1", 0, title="Quarterly budget"), Turn("bob", "o3", 0)])
    Conversation.objects.filter(title__startswith="Quarterly").update(title="Renamed offsite")
    found = admin_client.get(CONVERSATIONS, {"q": "offsite"}).content.decode()
    assert "Renamed offsite" in found and "A chat 1" not in found
    assert "Quarterly" not in admin_client.get(CONVERSATIONS, {"q": "quarterly"}).content.decode()
    # Words of a message find its conversation (each turn's question is "Question <n>").
    by_text = admin_client.get(CONVERSATIONS, {"q": "question 1"}).content.decode()
    assert "A chat 1" in by_text and "Renamed offsite" not in by_text


def test_the_site_names_this_product_and_hides_single_sign_on_while_it_is_off(admin_client):
    html = admin_client.get(reverse("admin:index")).content.decode()
    assert "Chat administration" in html and "Django administration" not in html
    assert "<title>Usage, people and prices | Chat admin</title>" in html
    # CHAT_OIDC_ISSUER is empty in the tests: allauth's social accounts mean nothing.
    assert "socialaccount" not in html and "Social accounts" not in html
    assert "/admin/account/emailaddress/" in html  # allauth's own accounts stay


def test_the_budget_comes_right_after_the_username_on_a_persons_page(admin_client):
    user = get_user_model().objects.create_user("dana", password="x")
    html = admin_client.get(reverse("admin:auth_user_change", args=[user.pk])).content.decode()
    budget = html.index('<h2 id="chat_budget-heading" class="inline-heading">')
    assert html.index('name="username"') < budget < html.index("Personal info")
    section = html[budget : html.index("Personal info")]
    assert "Spending budget" in section and "Limit (USD)" in section and "#1" not in section


def test_provider_and_api_filters_offer_no_empty_choice(admin_client):
    from django.core.cache import cache

    from chat.models import DailyUsage

    create_turns()
    # A turn that failed before the model answered has no provider or API in the ledger.
    DailyUsage.objects.filter(model="o3").update(provider="", api="")
    cache.clear()  # the filters' choices are cached for a minute
    response = admin_client.get(MESSAGES, {"_facets": "True"})
    filters = {spec.title: spec for spec in response.context["cl"].filter_specs}
    cl = response.context["cl"]
    for title in ("provider", "API"):
        labels = [choice["display"] for choice in filters[title].choices(cl)]
        assert labels[0] == "All" and all(str(label).strip() for label in labels), labels
    assert [c["display"] for c in filters["provider"].choices(cl)][1:] == [
        "demo (2)",
        "openai (11)",
    ]


def test_row_checkboxes_are_djangos_own_html(rf):
    """The large tables write the action checkbox directly (it was the dearest cell of a
    page): the same HTML as Django's widget, the object's name escaped once."""
    from django.contrib import admin

    from chat.admin.conversations import ConversationAdmin
    from chat.admin.messages import MessageAdmin

    [reply] = create_turns([Turn("alice", "gpt-4.1", 0, title='<b>"Q&A"</b> it\'s')])
    for model_admin, obj in (
        (ConversationAdmin(Conversation, admin.site), reply.conversation),
        (MessageAdmin(Message, admin.site), reply),
    ):
        ours = model_admin.action_checkbox(obj)
        assert ours == admin.ModelAdmin.action_checkbox(model_admin, obj)
        assert "<b>" not in ours


def test_dashboard_tables_and_charts_escape_what_they_show(admin_client):
    """Rows and bars are drawn in Python (`format_html`), not template loops: a model's
    or person's name is text, never markup, and every row links as before."""
    create_turns(
        [
            Turn("<img src=x onerror=alert(1)>", "<script>m</script>", 0),
            Turn("bob", "gpt-4.1", 1),
        ]
    )
    html = admin_client.get(DASHBOARD, {"period": "7d"}).content.decode()
    assert "<script>m</script>" not in html and "<img src=x" not in html
    assert "&lt;script&gt;m&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    # A model row opens its messages; seven days, seven bars in each chart, each titled.
    assert "model=%3Cscript%3Em%3C%2Fscript%3E" in html
    assert html.count("<g><title>") == 14
    # Day, model and person: two rows and the totals each, seven figures a row.
    assert html.count('<td class="num">') == 7 * 3 * 3
