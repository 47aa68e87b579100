"""Date filters people type: "24h", "7d", "this week", "yesterday", "2020-01-04"."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m|min|mins|minutes?|h|hrs?|hours?|d|days?|w|wks?|weeks?|mo|months?|y|years?)\s*$")
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "mo": 30 * 86400, "y": 365 * 86400}

# Offered as autocomplete choices, and the examples in error messages.
SINCE_CHOICES = ("1h", "6h", "24h", "today", "yesterday", "3d", "this week", "7d", "14d", "30d", "this month")


def parse_duration(text: str) -> timedelta:
    """'30d' -> 30 days. Raises ValueError with the accepted forms."""
    match = _DURATION.match(text.lower())
    if not match:
        raise ValueError(f"not a duration: {text!r} (try 24h, 7d, 2w)")
    amount, unit = float(match.group(1)), match.group(2)
    key = "mo" if unit.startswith("mo") else ("m" if unit.startswith("m") else unit[0])
    return timedelta(seconds=amount * _UNIT_SECONDS[key])


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """The start of the period a person means, as an aware UTC datetime."""
    now = now or datetime.now(timezone.utc)
    phrase = " ".join(text.lower().split())
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    named = {
        "today": midnight,
        "yesterday": midnight - timedelta(days=1),
        "this week": midnight - timedelta(days=now.weekday()),
        "last week": midnight - timedelta(days=now.weekday() + 7),
        "this month": midnight.replace(day=1),
        "this year": midnight.replace(month=1, day=1),
    }
    if phrase in named:
        return named[phrase]
    if phrase.startswith(("past ", "last ")):
        phrase = phrase.split(" ", 1)[1]
        if phrase in ("day", "week", "month", "year"):
            phrase = "1 " + phrase
    try:
        return now - parse_duration(phrase)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(phrase.upper() if "t" in phrase else phrase)
    except ValueError:
        raise ValueError(
            f"can't read the date {text!r}: use a duration (24h, 7d), 'today', 'this week' or a date (2020-01-04)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


_IN_QUESTION = re.compile(
    r"\b(today|yesterday|this (?:week|month|year)|last (?:week|month)|"
    r"(?:in the |over the )?(?:past|last) (?:\d+ )?(?:hours?|days?|weeks?|months?)|since yesterday)\b",
    re.IGNORECASE,
)


def time_filter_in(question: str, now: datetime | None = None) -> datetime | None:
    """The start of a period named inside a question ("what happened this week?"), if any."""
    match = _IN_QUESTION.search(question)
    if not match:
        return None
    phrase = match.group(1).lower()
    for prefix in ("in the ", "over the ", "since "):
        phrase = phrase.removeprefix(prefix)
    words = phrase.split()
    if words[0] in ("past", "last") and len(words) == 2 and words[1].endswith("s"):
        phrase = f"{words[0]} 1 {words[1]}"  # "past hours" reads as one
    return parse_since(phrase, now)
