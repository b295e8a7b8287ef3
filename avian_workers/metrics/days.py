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

    No dates (the nightly run): from `late_days` days before the day before `scheduled_on` (the
    date the run was scheduled for; by default today) through yesterday. A run that starts late
    covers its own days and every day since, so nothing is left out when the newer runs of an
    outage are cancelled (the deployment runs one at a time, CANCEL_NEW). Only `start_date`:
    from it to yesterday. Only `end_date`: that one day. Today and later are refused (an
    unfinished day would get a partial row), and so are days retention would delete at once.
    """
    yesterday = today - timedelta(days=1)
    cutoff = retention_cutoff(today, retention_days)
    if start_date is None and end_date is None:
        # min(): a run started before its scheduled date (by hand) starts as one started today.
        scheduled_yesterday = min(scheduled_on or today, today) - timedelta(days=1)
        start_date = max(scheduled_yesterday - timedelta(days=late_days), cutoff)
        end_date = yesterday
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
