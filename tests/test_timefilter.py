from datetime import datetime, timedelta, timezone

import pytest

from index.timefilter import parse_duration, parse_since, time_filter_in

NOW = datetime(2026, 11, 26, 15, 30, tzinfo=timezone.utc)  # a Thursday


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", NOW - timedelta(hours=24)),
        ("7d", NOW - timedelta(days=7)),
        ("2 weeks", NOW - timedelta(weeks=2)),
        ("today", datetime(2026, 11, 26, tzinfo=timezone.utc)),
        ("yesterday", datetime(2026, 11, 25, tzinfo=timezone.utc)),
        ("this week", datetime(2026, 11, 23, tzinfo=timezone.utc)),
        ("2020-01-04", datetime(2020, 1, 4, tzinfo=timezone.utc)),
        ("past week", NOW - timedelta(weeks=1)),
    ],
)
def test_parse_since(text, expected):
    assert parse_since(text, NOW) == expected


def test_bad_dates_say_what_is_accepted():
    with pytest.raises(ValueError, match="24h"):
        parse_since("the day after tomorrow", NOW)
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_periods_named_in_questions():
    assert time_filter_in("What happened in Iraq this week?", NOW) == datetime(2026, 11, 23, tzinfo=timezone.utc)
    assert time_filter_in("news from the past 3 days", NOW) == NOW - timedelta(days=3)
    assert time_filter_in("Why did NATO suspend its training?", NOW) is None
