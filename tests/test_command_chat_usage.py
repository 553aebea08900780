"""`manage.py chat_usage`: the dashboard's numbers in every format."""

import csv
import io
import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from chat.money import usd
from tests.usage_rows import TURNS, assert_in_buckets, create_turns, expected

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("chat_usage", *args, stdout=out)
    return out.getvalue()


def want(by: str, days: int) -> dict[str, tuple[int, int, int, int, Decimal]]:
    groups = expected(TURNS, days=days, by=by)
    groups["total"] = expected(TURNS, days=days, by="total")["total"]
    return {
        key: (v["requests"], v["failed"], v["input_tokens"], v["output_tokens"], v["cost"])
        for key, v in groups.items()
    }


@pytest.mark.parametrize("by", ["day", "model", "user"])
@pytest.mark.parametrize("since", ["7d", "30d"])
def test_csv_equals_a_direct_computation(by, since):
    create_turns()
    rows = list(csv.reader(io.StringIO(run("--by", by, "--since", since, "--format", "csv"))))
    assert rows[0][:2] == [by, "requests"]
    assert rows[-1][0] == "total"
    got = {
        row[0]: (int(row[1]), int(row[2]), int(row[4]), int(row[5]), Decimal(row[6]))
        for row in rows[1:]
    }
    assert got == want(by, int(since[:-1]))


@pytest.mark.parametrize("by", ["day", "model", "user"])
def test_json_equals_a_direct_computation(by):
    create_turns()
    data = json.loads(run("--by", by, "--format", "json"))
    rows = [*data["rows"], {**data["totals"], "group": "total"}]
    got = {
        row["group"]: (
            row["requests"],
            row["failed"],
            row["input_tokens"],
            row["output_tokens"],
            Decimal(row["cost"]),
        )
        for row in rows
    }
    assert got == want(by, 7)
    assert data["by"] == by
    ttft = expected(TURNS, days=7, by="total")["total"]
    assert_in_buckets(data["totals"]["ttft_median_ms"], ttft["ttfts"], 0.5)
    assert_in_buckets(data["totals"]["ttft_p95_ms"], ttft["ttfts"], 0.95)


def test_table_is_aligned_with_a_totals_row():
    create_turns()
    lines = run("--by", "model").splitlines()
    assert lines[0].split()[:3] == ["model", "requests", "failed"]
    assert set(lines[1]) == {"-", " "} and set(lines[-2]) == {"-", " "}
    body = {line.split()[0]: line.split() for line in lines[2:-2]}
    for model, (requests, failed, _, _, cost) in want("model", 7).items():
        if model == "total":
            continue
        assert body[model][1:3] == [str(requests), str(failed)]
        # People read the table: amounts in the one money format, precise when small.
        assert body[model][6] == usd(cost) and body[model][6].startswith("$")
    total = lines[-1].split()
    assert total[0] == "total" and int(total[1]) == want("model", 7)["total"][0]


def test_a_custom_period_is_inclusive_of_its_last_day():
    create_turns()
    day = (timezone.localdate() - timedelta(days=1)).isoformat()
    data = json.loads(run("--since", day, "--until", day, "--format", "json"))
    assert data["totals"]["requests"] == sum(t.days_ago == 1 for t in TURNS)


def test_empty_database_prints_a_zero_total():
    data = json.loads(run("--format", "json"))
    assert data["rows"] == [] and data["totals"]["requests"] == 0


@pytest.mark.parametrize(
    "args", [["--since", "last week"], ["--since", "2025-02-01", "--until", "2025-01-01"]]
)
def test_bad_periods_are_one_line_errors(args):
    with pytest.raises(CommandError):
        run(*args)


def test_by_user_shows_each_persons_budget_and_spend_this_period(settings):
    from django.contrib.auth import get_user_model

    from chat.models import Budget
    from chat.spend.budgets import spend_of
    from chat.spend.periods import budget_period

    settings.CHAT_BUDGET_USD = Decimal("5")
    create_turns()
    people = {u.username: u for u in get_user_model().objects.all()}
    assert len(people) >= 2
    first, second = sorted(people)[:2]
    Budget.objects.create(user=people[first], unlimited=True)
    Budget.objects.create(user=people[second], limit_usd=Decimal("12.50"))
    spent = spend_of([u.pk for u in people.values()], budget_period())

    rows = list(csv.reader(io.StringIO(run("--by", "user", "--format", "csv"))))
    header = rows[0]
    assert header[-2:] == ["budget_usd", "spent_this_period_usd"]
    by_name = {row[0]: row for row in rows[1:-1]}
    for name, user in people.items():
        if name not in by_name:
            continue
        budget = {first: "no limit", second: "12.50"}.get(name, "5.00")
        assert by_name[name][-2:] == [budget, f"{spent.get(user.pk, Decimal(0)):.8f}"]
    assert rows[-1][-2:] == ["", ""]  # the totals row has no budget

    data = json.loads(run("--by", "user", "--format", "json"))
    row = next(r for r in data["rows"] if r["group"] == second)
    assert row["budget"]["limit"] == "12.50" and row["budget"]["period"] == "month"
    table = run("--by", "user")
    assert "budget_usd" in table and "no limit" in table
