"""chat.spend.reports: the report equals a direct computation over the fixture rows."""

from datetime import date, datetime

import pytest
from django.utils import timezone

from chat.models import TTFT_BUCKETS_MS, TTFT_FIELDS
from chat.spend.periods import period_bounds
from chat.spend.reports import histogram_percentile, usage_json, usage_summary, usage_table
from tests.usage_rows import TURNS, Turn, assert_in_buckets, create_turns, expected

pytestmark = pytest.mark.django_db


def actual(row) -> dict:
    return {
        "requests": row.requests,
        "failed": row.failed,
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "cost": row.cost,
    }


def without_ttft(values: dict) -> dict:
    return {k: v for k, v in values.items() if k not in ("median", "p95", "ttfts")}


def assert_ttfts(row, want: dict) -> None:
    assert_in_buckets(row.ttft_median_ms, want["ttfts"], 0.5)
    assert_in_buckets(row.ttft_p95_ms, want["ttfts"], 0.95)


@pytest.mark.parametrize("by", ["day", "model", "user"])
@pytest.mark.parametrize("days", [1, 7, 30])
def test_summary_equals_a_direct_computation(by, days):
    create_turns()
    since, until = period_bounds(since=f"{days}d")
    report = usage_summary(since=since, until=until, by=by)
    want = expected(TURNS, days=days, by=by)
    assert {row.key: actual(row) for row in report.rows} == {
        key: without_ttft(values) for key, values in want.items()
    }
    total = expected(TURNS, days=days, by="total")["total"]
    assert actual(report.totals) == without_ttft(total)
    for row in [*report.rows, report.totals]:
        assert_ttfts(row, want.get(row.key, total))


def test_user_messages_and_rows_outside_the_period_are_not_requests():
    create_turns()
    since, until = period_bounds(since="7d")
    report = usage_summary(since=since, until=until, by="user")
    assert report.totals.requests == sum(t.days_ago < 7 for t in TURNS)
    assert "carol" not in {row.key for row in report.rows}  # her only turn was 12 days ago
    assert "anonymous" in {row.key for row in report.rows}


def test_model_rows_are_ordered_by_cost_and_days_by_date():
    create_turns()
    since, until = period_bounds(since="30d")
    by_model = usage_summary(since=since, until=until, by="model").rows
    assert [row.cost for row in by_model] == sorted((row.cost for row in by_model), reverse=True)
    assert by_model[0].key == "o3"
    by_day = usage_summary(since=since, until=until, by="day").rows
    assert [row.key for row in by_day] == sorted(row.key for row in by_day)


def test_empty_period_has_zero_totals():
    create_turns()
    since, until = period_bounds(since="2001-01-01", until="2001-01-31")
    report = usage_summary(since=since, until=until, by="model")
    assert report.rows == []
    assert report.totals.requests == 0 and report.totals.cost == 0
    assert report.totals.failure_rate == 0 and report.totals.ttft_median_ms is None


def test_days_are_grouped_in_the_current_time_zone(settings):
    settings.TIME_ZONE = "Pacific/Kiritimati"  # UTC+14: UTC midnight is 14:00 local
    with timezone.override("Pacific/Kiritimati"):
        create_turns([Turn("alice", "gpt-4.1", 0)])
        since, until = period_bounds(since="1d")
        [row] = usage_summary(since=since, until=until, by="day").rows
        assert row.key == timezone.localdate().isoformat()


def test_tables_and_json_carry_rows_then_totals():
    create_turns()
    since, until = period_bounds(since="7d")
    report = usage_summary(since=since, until=until, by="model")
    table = usage_table(report)
    assert table[0][:3] == ["model", "requests", "failed"]
    assert [line[0] for line in table[1:]] == [row.key for row in report.rows] + ["total"]
    data = usage_json(report)
    assert data["totals"]["requests"] == report.totals.requests
    assert [row["group"] for row in data["rows"]] == [row.key for row in report.rows]


def test_percentiles_from_the_histogram_interpolate_within_a_bucket():
    counts = [0] * len(TTFT_FIELDS)
    assert histogram_percentile(counts, 0.5) is None
    counts[1] = 2  # two in (50, 100] ms
    assert histogram_percentile(counts, 0.5) == pytest.approx(75)
    assert histogram_percentile(counts, 1.0) == pytest.approx(100)
    counts[-1] = 2  # two slower than the last edge: reported as the last edge
    assert histogram_percentile(counts, 0.95) == TTFT_BUCKETS_MS[-1]


def test_period_bounds():
    now = timezone.make_aware(datetime(2025, 3, 10, 15, 30))
    midnight = lambda d: timezone.make_aware(datetime.combine(d, datetime.min.time()))  # noqa: E731
    assert period_bounds(now=now) == (midnight(date(2025, 3, 4)), midnight(date(2025, 3, 11)))
    assert period_bounds(since="1d", now=now) == (
        midnight(date(2025, 3, 10)),
        midnight(date(2025, 3, 11)),
    )
    assert period_bounds(since="2025-01-01", until="2025-01-31", now=now) == (
        midnight(date(2025, 1, 1)),
        midnight(date(2025, 2, 1)),
    )
    for bad in ["0d", "yesterday", "2025-13-01"]:
        with pytest.raises(ValueError):
            period_bounds(since=bad, now=now)
    with pytest.raises(ValueError):
        period_bounds(since="2025-02-01", until="2025-01-01", now=now)
