"""Periods of time in `TIME_ZONE`: a budget's current day, week or month, the date
ranges reports and commands are asked for (`7d`, `2026-01-31`), and the cutoff a purge
is asked for (`30d`, `2026-01-31`)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django.conf import settings
from django.utils import timezone

PERIODS = ("day", "week", "month")
DEFAULT_SINCE = "7d"
_RELATIVE = re.compile(r"^(\d{1,4})d$")
# A cutoff's age, which may reach further back than a report's range.
_AGE = re.compile(r"^(\d{1,5})d$")


@dataclass(frozen=True, slots=True)
class Period:
    name: str
    start: datetime
    end: datetime

    def seconds_left(self, now: datetime | None = None) -> int:
        return max(1, math.ceil((self.end - (now or timezone.now())).total_seconds()))


def budget_period(now: datetime | None = None) -> Period:
    """The current `CHAT_BUDGET_PERIOD` in the current time zone: today, this week (from
    Monday), or this calendar month."""
    name = settings.CHAT_BUDGET_PERIOD
    today = timezone.localtime(now).date()
    if name == "day":
        first, after = today, today + timedelta(days=1)
    elif name == "week":
        first = today - timedelta(days=today.weekday())
        after = first + timedelta(days=7)
    else:
        first = today.replace(day=1)
        after = (first + timedelta(days=32)).replace(day=1)
    return Period(name=name, start=_midnight(first), end=_midnight(after))


def period_bounds(
    *, since: str | date | None = None, until: str | date | None = None, now: datetime | None = None
) -> tuple[datetime, datetime]:
    """[since, until) in the current time zone from `7d` / `30d` (the last N days including
    today) or `YYYY-MM-DD` (from that day's midnight); `until` is an inclusive day and
    defaults to today."""
    today = timezone.localdate(now)
    first = _since_day(since or DEFAULT_SINCE, today)
    last = _day(until) if until else today
    if first > last:
        raise ValueError("since is after until")
    return _midnight(first), _midnight(last + timedelta(days=1))


def _since_day(value: str | date, today: date) -> date:
    if isinstance(value, str) and (match := _RELATIVE.match(value.strip())):
        days = int(match.group(1))
        if days < 1:
            raise ValueError("a relative period is at least 1d")
        return today - timedelta(days=days - 1)
    if value == "today":
        return today
    return _day(value)


def _day(value: str | date) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not YYYY-MM-DD or a number of days such as 7d") from None


def cutoff_before(value: str, now: datetime | None = None) -> datetime:
    """`30d` (that many days before `now`, to the second) or `YYYY-MM-DD` (its midnight in
    the current time zone; a time or an offset after it is kept)."""
    if match := _AGE.match(value.strip()):
        return (now or timezone.now()) - timedelta(days=int(match.group(1)))
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not a number of days such as 30d, or YYYY-MM-DD.") from None
    return moment if timezone.is_aware(moment) else timezone.make_aware(moment)


def _midnight(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))
