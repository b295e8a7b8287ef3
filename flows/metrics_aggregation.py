"""metrics-aggregation: one `firewall_metrics_rollup` row per active firewall per finished UTC day.

Scheduled at 00:00 UTC without parameters, a run rolls up yesterday and re-aggregates the
METRICS_LATE_DAYS days before it, so data that arrived late is picked up. A run that starts late
(a work-pool outage) reaches back from the date it was scheduled for instead of today: the
deployment runs one at a time and cancels the newer runs, so the one that runs covers theirs. A
backfill is the same flow with `start_date`/`end_date` (inclusive). Devices are those with
status 'active'; given `device_ids` select exactly those devices whatever their status, so a
firewall that has since gone inactive can still be backfilled by naming it.

A stored row meets its recomputation as store.py describes: a row is taken or kept whole; one
with the day's final reading (snapshot or live key) replaces the stored row, one from posture
rows alone (the snapshots expired) never replaces a row that had a final reading, nor one with a
higher total. `replace_existing=True` writes the recomputed rows as they are and deletes the
all-zero rows of device-days that have no data, to correct rows the earlier worker left.

Each day is one task under its own Redis lock: a day another run is working on is skipped and
reported, never waited for. Then rollups past METRICS_RETENTION_DAYS are deleted in batches.
Retries (I/O errors only) repeat a whole day, which is safe: its upsert is idempotent. A day
that still fails fails the run, after the other days and retention have been done and reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, cast
from uuid import UUID

import psycopg
import redis
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from sqlalchemy import Engine

from avian_workers.db.engine import make_engine
from avian_workers.locks import hold
from avian_workers.logs import get_logger
from avian_workers.metrics.aggregate import AggregationSummary, DayReport, aggregate_day
from avian_workers.metrics.days import days_to_aggregate, retention_cutoff
from avian_workers.metrics.store import delete_rollups_before
from avian_workers.redis_store import RedisKeys, connect
from avian_workers.settings import WorkerType
from flows._common import (
    IO_RETRIES,
    RUN_METRICS_HOOKS,
    STORE_ERRORS,
    RetryOn,
    publish_summary,
    publish_table,
    start_run,
)

DAY_CONCURRENCY = 2
"""Days aggregated at once: one overlaps its database work with the other's computation."""

LOCK_SCOPE = "metrics-day"

# Prefect types `flow(task_runner=...)` against the base future type; the thread pool's futures
# are a subclass, which the invariant generic does not accept without this cast.
_DAY_RUNNER = cast(
    "TaskRunner[PrefectFuture[Any]]", ThreadPoolTaskRunner(max_workers=DAY_CONCURRENCY)
)

# Retry a task only when a store failed to answer, never for a bug or bad data. A day's upsert
# references nothing but the firewalls it read, so a foreign key violation means the platform
# deleted one meanwhile; the retried day no longer selects it.
retry_on_io_error = RetryOn(
    (*STORE_ERRORS, ConnectionError, TimeoutError, psycopg.errors.ForeignKeyViolation)
)


@dataclass(frozen=True)
class Stores:
    """The run's database engine and Redis client, shared by its tasks."""

    engine: Engine
    redis: redis.Redis
    keys: RedisKeys
    lock_lease_seconds: float


@task(
    name="aggregate-day",
    task_run_name="aggregate-{day}",
    cache_policy=NO_CACHE,
    retry_condition_fn=retry_on_io_error,
    **IO_RETRIES,
)
def aggregate_locked_day(
    day: date, device_ids: list[UUID] | None, replace_existing: bool, stores: Stores
) -> DayReport:
    """Aggregate `day` while holding its lock; a day locked by another run is skipped."""
    log = get_logger(date=day.isoformat())
    lock_key = stores.keys.lock(LOCK_SCOPE, day.isoformat())
    with hold(stores.redis, lock_key, lease_seconds=stores.lock_lease_seconds) as lease:
        if lease is None:
            log.warning("Day skipped: another run is aggregating it", lock=lock_key)
            return DayReport(day=day, outcome="locked")
        report = aggregate_day(
            stores.engine, stores.redis, stores.keys, day, device_ids, replace=replace_existing
        )
    if lease.lost:
        log.warning("Day's lock expired while it was aggregated; its rows are still correct")
    log.info(
        "Day aggregated",
        devices=report.devices,
        aggregated=report.aggregated,
        missing=report.missing,
        rejected=report.rejected,
        rowsWritten=report.rows_written,
    )
    return report


@task(
    name="delete-expired-rollups",
    cache_policy=NO_CACHE,
    retry_condition_fn=retry_on_io_error,
    **IO_RETRIES,
)
def delete_expired_rollups(
    engine: Engine, cutoff: date, batch_size: int, on_batch: Callable[[int], object]
) -> int:
    """Delete rollups dated before `cutoff`, in bounded batches; `on_batch` hears each one.

    A retried attempt starts counting from zero, so the run totals what `on_batch` heard across
    attempts, not the last attempt's return value.
    """
    return delete_rollups_before(engine, cutoff, batch_size=batch_size, on_batch=on_batch)


def _publish(summary: AggregationSummary) -> None:
    publish_summary(
        key="metrics-aggregation",
        title="Firewall metrics aggregation",
        rows=[report.table_row() for report in summary.days],
        totals=summary.totals(),
    )
    # Published even when empty: the key's latest version must be this run's, not an older one.
    publish_table(
        key="metrics-aggregation-exclusions",
        rows=[row for report in summary.days for row in report.exclusion_rows()],
        description="Device-days without a row: missing data or rejected, with the reason",
    )


@flow(
    name="metrics-aggregation",
    task_runner=_DAY_RUNNER,
    **RUN_METRICS_HOOKS,
)
def metrics_aggregation(
    start_date: date | None = None,
    end_date: date | None = None,
    device_ids: list[UUID] | None = None,
    replace_existing: bool = False,
) -> AggregationSummary:
    """Roll up firewall metrics for yesterday (plus late days) or `start_date`..`end_date`."""
    run = start_run(WorkerType.METRICS_AGGREGATION)
    settings, log = run.settings, run.log
    today = datetime.now(UTC).date()
    days = days_to_aggregate(
        start_date,
        end_date,
        today=today,
        late_days=settings.metrics_late_days,
        retention_days=settings.metrics_retention_days,
        scheduled_on=flow_run.scheduled_start_time.astimezone(UTC).date(),
    )
    cutoff = retention_cutoff(today, settings.metrics_retention_days)
    log.info(
        "Aggregating firewall metrics",
        days=[d.isoformat() for d in days],
        devices="active" if device_ids is None else len(device_ids),
    )
    engine = make_engine(settings, pool_size=DAY_CONCURRENCY + 1)
    client = connect(settings)
    stores = Stores(engine, client, RedisKeys.from_settings(settings), settings.lock_lease_seconds)
    reports: list[DayReport] = []
    deleted, retention_error = 0, None
    progress = run.progress("days aggregated", total=len(days)).start()
    try:
        futures = [
            aggregate_locked_day.submit(day, device_ids, replace_existing, stores) for day in days
        ]
        for day, future in zip(days, futures, strict=True):
            try:
                reports.append(future.result())
            except Exception as exc:
                log.error("Day failed", date=day.isoformat(), error=str(exc))
                reports.append(DayReport(day=day, outcome="failed", error=str(exc)))
            progress.advance()  # in date order: a slow day holds the count until it ends
        progress.finish()
        deleted_batches: list[int] = []
        try:
            delete_expired_rollups(
                engine, cutoff, settings.metrics_retention_batch_size, deleted_batches.append
            )
        except Exception as exc:
            log.error("Retention failed", error=str(exc), deletedBeforeFailing=sum(deleted_batches))
            retention_error = str(exc)
        deleted = sum(deleted_batches)
    finally:
        progress.finish()  # no-op unless the days ended in an error
        client.close()
        engine.dispose()

    summary = AggregationSummary(
        days=tuple(reports),
        retention_cutoff=cutoff,
        rollups_deleted=deleted,
        retention_error=retention_error,
    )
    _publish(summary)
    log.info(
        "Metrics aggregation finished",
        aggregated=summary.aggregated,
        missing=summary.missing,
        rejected=summary.rejected,
        rowsWritten=summary.rows_written,
        lockedDays=[d.isoformat() for d in summary.locked_days],
        failedDays=[d.isoformat() for d in summary.failed_days],
        retentionDeleted=summary.rollups_deleted,
    )
    if summary.failed_days or retention_error:
        raise RuntimeError(
            "metrics aggregation failed for "
            + ", ".join(
                [d.isoformat() for d in summary.failed_days]
                + (["retention"] if retention_error else [])
            )
        )
    return summary
