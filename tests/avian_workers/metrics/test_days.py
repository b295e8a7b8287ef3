"""Which days a run aggregates: the nightly window, backfill ranges and what is refused."""

from datetime import date, timedelta
from typing import Any

import pytest

from avian_workers.metrics.days import days_to_aggregate, retention_cutoff

TODAY = date(2025, 3, 1)
YESTERDAY = date(2025, 2, 28)


def plan(start: date | None = None, end: date | None = None, **kwargs: int | date) -> list[date]:
    options: dict[str, Any] = {"late_days": 2, "retention_days": 365, **kwargs}
    return days_to_aggregate(start, end, today=TODAY, **options)


def test_nightly_run_is_yesterday_and_the_late_days_before_it() -> None:
    assert plan() == [date(2025, 2, 26), date(2025, 2, 27), YESTERDAY]


def test_nightly_run_without_late_days_is_yesterday_only() -> None:
    assert plan(late_days=0) == [YESTERDAY]


def test_nightly_run_that_starts_late_covers_its_own_days_and_every_day_since() -> None:
    # The work pool was down for three days; the newer runs of those nights are cancelled.
    scheduled_on = TODAY - timedelta(days=3)
    assert plan(scheduled_on=scheduled_on) == [date(2025, 2, 23) + timedelta(n) for n in range(6)]


def test_nightly_run_started_before_its_scheduled_date_stops_at_yesterday() -> None:
    assert plan(scheduled_on=TODAY + timedelta(days=1)) == plan()


def test_start_date_alone_runs_until_yesterday() -> None:
    assert plan(start=date(2025, 2, 25)) == [date(2025, 2, 25) + timedelta(n) for n in range(4)]


def test_end_date_alone_is_that_single_day() -> None:
    assert plan(end=date(2025, 1, 15)) == [date(2025, 1, 15)]


def test_range_is_inclusive_at_both_ends() -> None:
    assert plan(date(2025, 1, 30), date(2025, 2, 1)) == [
        date(2025, 1, 30),
        date(2025, 1, 31),
        date(2025, 2, 1),
    ]


@pytest.mark.parametrize("end", [TODAY, TODAY + timedelta(days=3)])
def test_unfinished_days_are_refused(end: date) -> None:
    with pytest.raises(ValueError, match="not a finished UTC day"):
        plan(end=end)


def test_start_after_end_is_refused() -> None:
    with pytest.raises(ValueError, match="after end_date"):
        plan(date(2025, 2, 10), date(2025, 2, 9))


def test_days_retention_would_delete_are_refused() -> None:
    with pytest.raises(ValueError, match="365-day retention"):
        plan(start=TODAY - timedelta(days=366))
    assert plan(start=TODAY - timedelta(days=365), end=TODAY - timedelta(days=365))


def test_nightly_window_never_reaches_past_retention() -> None:
    assert plan(late_days=5, retention_days=2) == [date(2025, 2, 27), YESTERDAY]


def test_retention_keeps_rows_exactly_retention_days_old() -> None:
    assert retention_cutoff(TODAY, 365) == date(2024, 3, 1)  # 2024 is a leap year
