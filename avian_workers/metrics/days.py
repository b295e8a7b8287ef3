"""Which UTC days a run aggregates, and where retention cuts off: pure date arithmetic."""

from __future__ import annotations

from datetime import date, timedelta


def retention_cutoff(today: date, retention_days: int) -> date:
    """The oldest date kept: rows dated before it are older than `retention_days` and deleted."""
    return today - timedelta(days=retention_days)


def days_to_aggregate(
    start_date: date | None,
    end_date: date | None,
    *,
    today: date,
    late_days: int,
    retention_days: int,
    scheduled_on: date | None = None,
) -> list[date]:
    """The days of a run, oldest first; ValueError names what is wrong with a bad range.

    No dates: the day before `scheduled_on` (the date the nightly run was scheduled for; by
    default today) and the `late_days` days before that. A nightly run that starts late still
    covers the days it was scheduled for, never a window shifted by its delay. Only
    `start_date`: from it to yesterday. Only `end_date`: that one day. Today and later are
    refused (an unfinished day would get a partial row), and so are days retention would delete
    at once.
    """
    yesterday = today - timedelta(days=1)
    cutoff = retention_cutoff(today, retention_days)
    if start_date is None and end_date is None:
        # A run started before its scheduled date (by hand) must not reach an unfinished day.
        end_date = min(yesterday, (scheduled_on or today) - timedelta(days=1))
        start_date = max(end_date - timedelta(days=late_days), cutoff)
    else:
        end_date = yesterday if end_date is None else end_date
        start_date = end_date if start_date is None else start_date
    if end_date > yesterday:
        raise ValueError(
            f"end_date {end_date.isoformat()} is not a finished UTC day "
            f"(the latest is yesterday, {yesterday.isoformat()})"
        )
    if start_date > end_date:
        raise ValueError(
            f"start_date {start_date.isoformat()} is after end_date {end_date.isoformat()}"
        )
    if start_date < cutoff:
        raise ValueError(
            f"start_date {start_date.isoformat()} is past the {retention_days}-day retention: "
            f"rollups dated before {cutoff.isoformat()} are deleted"
        )
    return [start_date + timedelta(days=n) for n in range((end_date - start_date).days + 1)]
