"""Event times written in alert bodies, as timezone-aware UTC datetimes.

Understood: ISO 8601 and `YYYY-MM-DD HH:MM:SS` (SonicOS `time=`), US `MM/DD/YYYY HH:MM:SS [AM|PM]`,
`Dec 8 2025 15:12:44`, and RFC 5322 dates; each with an optional zone: `Z`, a numeric offset
(`-0500`, `+05:30`, `UTC+1`) or a North American / European abbreviation. Abbreviations that
mean different places (`IST`) are not guessed; like a missing zone, they take `default_zone`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from email.utils import parsedate_to_datetime

_MAX_TEXT = 200
_FIRST_YEAR, _LAST_YEAR = 1970, 2999

# Ambiguous ones are resolved the way SonicWall installs in North America write them
# (CST is US Central, not China; AST is Atlantic).
_ABBREVIATIONS: dict[str, int] = {
    "UTC": 0, "UT": 0, "GMT": 0, "Z": 0, "WET": 0,
    "EST": -300, "EDT": -240, "CST": -360, "CDT": -300, "MST": -420, "MDT": -360,
    "PST": -480, "PDT": -420, "AKST": -540, "AKDT": -480, "HST": -600,
    "AST": -240, "ADT": -180, "NST": -210, "NDT": -150,
    "BST": 60, "WEST": 60, "CET": 60, "CEST": 120, "EET": 120, "EEST": 180,
    "JST": 540, "AEST": 600, "AEDT": 660,
}  # fmt: skip

_TIME = r"(?P<hour>\d{1,2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:[.,](?P<fraction>\d{1,9}))?)?"
_ZONE = (
    r"(?:\s?(?P<ampm>[AaPp]\.?[Mm]\.?)(?![A-Za-z]))?"
    r"\s?(?P<zone>(?:UTC|GMT)?\s?[+-]\d{1,2}(?::?\d{2})?|[A-Za-z]{1,5}(?![A-Za-z]))?"
)
_MONTHS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
        start=1,
    )
}
_ISO = re.compile(
    r"(?P<year>\d{4})-(?P<month>\d{1,2})-(?P<day>\d{1,2})(?:T|\s{1,3}|,\s?)" + _TIME + _ZONE
)
_US = re.compile(
    r"(?P<month>\d{1,2})/(?P<day>\d{1,2})/(?P<year>\d{4})(?:T|\s{1,3}|,\s?)" + _TIME + _ZONE
)
_MONTH_NAME = re.compile(
    r"(?P<month_name>[A-Za-z]{3})[A-Za-z]{0,6}\.?\s{1,3}(?P<day>\d{1,2})(?:st|nd|rd|th)?,?\s{1,3}"
    r"(?P<year>\d{4}),?\s{1,3}(?:at\s)?" + _TIME + _ZONE
)
_OFFSET = re.compile(r"(?:UTC|GMT)?\s?(?P<sign>[+-])(?P<hours>\d{1,2}):?(?P<minutes>\d{2})?")


@dataclass(frozen=True)
class Timestamp:
    """A parsed time in UTC; `zone_given` is False when `default_zone` was assumed."""

    value: datetime
    zone_given: bool


def parse_timestamp(text: str, default_zone: tzinfo) -> Timestamp | None:
    """The first time written in `text`, or None when there is none or it is impossible."""
    text = text[:_MAX_TEXT]
    for pattern in (_ISO, _US, _MONTH_NAME):
        match = pattern.search(text)
        if match:
            return _from_match(match, default_zone)
    return _rfc5322(text, default_zone)


def _from_match(match: re.Match[str], default_zone: tzinfo) -> Timestamp | None:
    parts = match.groupdict()
    if parts.get("month_name") is not None:
        month = _MONTHS.get(parts["month_name"].lower())
        if month is None:
            return None
    else:
        month = int(parts["month"])
    year, day = int(parts["year"]), int(parts["day"])
    hour, minute = int(parts["hour"]), int(parts["minute"])
    second = int(parts["second"] or 0)
    microsecond = int((parts["fraction"] or "0")[:6].ljust(6, "0"))
    ampm = (parts["ampm"] or "").replace(".", "").lower()
    if ampm:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if ampm == "pm" else 0)
    if not _FIRST_YEAR <= year <= _LAST_YEAR:
        return None
    zone = _zone(parts["zone"])
    try:
        value = datetime(
            year, month, day, hour, minute, second, microsecond, tzinfo=zone or default_zone
        )
    except ValueError:  # 2025-02-30, 25:00 and the like
        return None
    return Timestamp(value.astimezone(UTC), zone_given=zone is not None)


def _zone(text: str | None) -> tzinfo | None:
    if not text:
        return None
    minutes = _ABBREVIATIONS.get(text.upper())
    if minutes is not None:
        return timezone(timedelta(minutes=minutes))
    match = _OFFSET.fullmatch(text)
    if match is None:
        return None
    hours, extra = int(match["hours"]), int(match["minutes"] or 0)
    if hours > 14 or extra > 59:
        return None
    offset = timedelta(hours=hours, minutes=extra)
    return timezone(-offset if match["sign"] == "-" else offset)


def _rfc5322(text: str, default_zone: tzinfo) -> Timestamp | None:
    parsed = _rfc5322_date(text)
    if parsed is None:
        return None
    if parsed.tzinfo is None:  # written without a zone: like any other zoneless body time
        return Timestamp(parsed.replace(tzinfo=default_zone).astimezone(UTC), zone_given=False)
    return Timestamp(parsed.astimezone(UTC), zone_given=True)


# The numeric zone an RFC 5322 date ends with (before any comment), to check what the stdlib
# would otherwise carry over: it reads '+1960' as +20:00 and '-0575' as -06:15.
_RFC_ZONE = re.compile(r"[+-](?P<hours>\d{2})(?P<minutes>\d{2})\s*(?:\(.*\))?$")


def _rfc5322_date(value: str) -> datetime | None:
    """An RFC 5322 date, naive when it names no zone; None when unusable or impossible."""
    try:
        parsed = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if not _FIRST_YEAR <= parsed.year <= _LAST_YEAR:
        return None
    zone = _RFC_ZONE.search(value.strip())
    if zone is not None and (int(zone["hours"]) > 14 or int(zone["minutes"]) > 59):
        return None
    return parsed


def header_date(value: str | None) -> datetime | None:
    """An RFC 5322 date as an aware datetime in the writer's offset, or None when unusable.

    `-0000` (zone unknown to the writer) is read as UTC, as RFC 5322 says the time is; so is a
    date that names no zone at all. An impossible offset ('+2300', '-0575') makes it unusable.
    """
    parsed = _rfc5322_date(value) if value else None
    if parsed is None:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
