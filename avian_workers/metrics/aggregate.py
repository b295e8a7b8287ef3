"""Aggregate one UTC day for every selected device: read, compute, write, in chunks of devices.

Per day the work is a handful of bulk statements, never one per device: a single posture query
(streamed through a server-side cursor), per chunk of `chunk_size` devices one MGET of the
daily snapshots (a second one for live keys only when some snapshot is missing) and one COPY of
the chunk's rows into a stage, and at the end one set-based upsert of the whole day. Chunks keep
memory flat in the device count (a chunk is what the worker holds); they cost a round trip per
thousand devices (measured: 5,000-device chunks were no faster).

The day is one transaction: its rows appear together or not at all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal
from uuid import UUID

import redis
from sqlalchemy import Engine, text

from avian_workers.logs import get_logger
from avian_workers.metrics.rollup import Missing, Rejection, RollupRow, rollup_device_day
from avian_workers.metrics.sources import device_batches, read_redis_values
from avian_workers.metrics.store import RollupWriter, WriteCounts
from avian_workers.redis_store import RedisKeys

DEFAULT_CHUNK_SIZE = 1_000
SAMPLE_LIMIT = 100
"""Missing devices and rejections a report lists per day (all of them are counted and logged)."""


DayOutcome = Literal["aggregated", "locked", "failed"]


@dataclass(frozen=True)
class DayReport:
    """What aggregating one day did, or why it did not."""

    day: date
    outcome: DayOutcome = "aggregated"
    error: str | None = None
    devices: int = 0
    aggregated: int = 0
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_deleted: int = 0
    """Stored rows of device-days without data, deleted by a replace_existing run."""
    missing: int = 0
    rejected: int = 0
    rejected_by_reason: Mapping[str, int] = field(default_factory=dict)
    missing_devices: tuple[UUID, ...] = ()
    rejections: tuple[Rejection, ...] = ()
    unknown_device_ids: tuple[UUID, ...] = ()

    @property
    def rows_written(self) -> int:
        """Rows inserted or changed; aggregated rows already stored as computed are not."""
        return self.rows_inserted + self.rows_updated

    def table_row(self) -> dict[str, Any]:
        """This day's line in the run's table artifact."""
        return {
            "date": self.day.isoformat(),
            "outcome": self.outcome if self.error is None else f"{self.outcome}: {self.error}",
            "devices": self.devices,
            "aggregated": self.aggregated,
            "missing": self.missing,
            "rejected": self.rejected,
            "rejected reasons": ", ".join(
                f"{reason}: {count}" for reason, count in sorted(self.rejected_by_reason.items())
            ),
            "rows inserted": self.rows_inserted,
            "rows updated": self.rows_updated,
            "rows deleted": self.rows_deleted,
        }

    def exclusion_rows(self) -> list[dict[str, Any]]:
        """The listed missing and rejected devices of this day, one line each, and a line for
        each kind of which more were counted than listed (SAMPLE_LIMIT)."""
        day = self.day.isoformat()
        rejected = [
            {
                "date": day,
                "device": str(r.device_id),
                "excluded": r.reason.value,
                "detail": r.detail,
            }
            for r in self.rejections
        ]
        missing = [
            {"date": day, "device": str(d), "excluded": "missing", "detail": "no data for the day"}
            for d in self.missing_devices
        ]
        return [
            *rejected,
            *_left_out(
                day,
                self.rejected - len(rejected),
                "rejected",
                "not listed here; each is in the run's log with its reason",
            ),
            *missing,
            *_left_out(
                day,
                self.missing - len(missing),
                "missing",
                f"only the first {len(missing)} are listed",
            ),
        ]


def _left_out(day: str, count: int, excluded: str, detail: str) -> list[dict[str, Any]]:
    """The exclusion line for `count` device-days counted but not listed, if there are any."""
    if count <= 0:
        return []
    return [{"date": day, "device": f"{count} more", "excluded": excluded, "detail": detail}]


@dataclass(frozen=True)
class AggregationSummary:
    """A whole run: its days, and what retention deleted."""

    days: tuple[DayReport, ...]
    retention_cutoff: date
    rollups_deleted: int
    retention_error: str | None = None

    @property
    def failed_days(self) -> tuple[date, ...]:
        return tuple(r.day for r in self.days if r.outcome == "failed")

    @property
    def locked_days(self) -> tuple[date, ...]:
        return tuple(r.day for r in self.days if r.outcome == "locked")

    @property
    def aggregated(self) -> int:
        """Device-days rolled up (written now or already stored as computed)."""
        return sum(r.aggregated for r in self.days)

    @property
    def missing(self) -> int:
        return sum(r.missing for r in self.days)

    @property
    def rejected(self) -> int:
        return sum(r.rejected for r in self.days)

    @property
    def rows_written(self) -> int:
        return sum(r.rows_written for r in self.days)

    @property
    def rows_deleted(self) -> int:
        """Rows of device-days without data that a replace_existing run deleted."""
        return sum(r.rows_deleted for r in self.days)

    @property
    def unknown_device_ids(self) -> tuple[UUID, ...]:
        return tuple(sorted({d for r in self.days for d in r.unknown_device_ids}))

    def processed_items(self) -> dict[str, int]:
        """Counts for the run's CloudWatch metrics."""
        return {
            "device_days": self.aggregated,
            "missing": self.missing,
            "rejected": self.rejected,
            "rows_written": self.rows_written,
            "rollups_deleted": self.rollups_deleted,
        }

    def error_count(self) -> int:
        """Failed days and rejected device-days, plus a failed retention pass."""
        return len(self.failed_days) + self.rejected + (self.retention_error is not None)

    def totals(self) -> dict[str, Any]:
        """The run in a few numbers (the markdown digest)."""
        return {
            "days": ", ".join(r.day.isoformat() for r in self.days) or "none",
            "device-days aggregated": self.aggregated,
            "device-days missing (no row)": self.missing,
            "device-days rejected": self.rejected,
            "rows written": self.rows_written,
            "rows deleted (no data; replace_existing only)": self.rows_deleted,
            "days skipped (locked)": ", ".join(d.isoformat() for d in self.locked_days) or "none",
            "days failed": ", ".join(d.isoformat() for d in self.failed_days) or "none",
            "unknown device ids": ", ".join(str(d) for d in self.unknown_device_ids) or "none",
            "retention deletions": self.rollups_deleted,
            "retention cutoff (rows dated before are deleted)": self.retention_cutoff.isoformat(),
            **({"retention error": self.retention_error} if self.retention_error else {}),
        }


@dataclass
class _DayTally:
    day: date
    devices: int = 0
    aggregated: int = 0
    written: WriteCounts = field(default_factory=WriteCounts)
    missing: int = 0
    missing_devices: list[UUID] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    rejected_by_reason: Counter[str] = field(default_factory=Counter)

    def add_missing(self, outcome: Missing) -> None:
        self.missing += 1
        if len(self.missing_devices) < SAMPLE_LIMIT:
            self.missing_devices.append(outcome.device_id)

    def add_rejection(self, outcome: Rejection) -> None:
        self.rejected_by_reason[outcome.reason.value] += 1
        if len(self.rejections) < SAMPLE_LIMIT:
            self.rejections.append(outcome)

    def report(self, unknown_device_ids: tuple[UUID, ...]) -> DayReport:
        return DayReport(
            day=self.day,
            devices=self.devices,
            aggregated=self.aggregated,
            rows_inserted=self.written.inserted,
            rows_updated=self.written.updated,
            rows_deleted=self.written.deleted,
            missing=self.missing,
            rejected=self.rejected_by_reason.total(),
            rejected_by_reason=dict(self.rejected_by_reason),
            missing_devices=tuple(self.missing_devices),
            rejections=tuple(self.rejections),
            unknown_device_ids=unknown_device_ids,
        )


def aggregate_day(
    engine: Engine,
    client: redis.Redis,
    keys: RedisKeys,
    day: date,
    device_ids: Sequence[UUID] | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    replace: bool = False,
) -> DayReport:
    """Roll up `day` for the active devices (or exactly `device_ids`) and write the rows."""
    log = get_logger(date=day.isoformat())
    tally = _DayTally(day)
    seen: set[UUID] | None = None if device_ids is None else set()
    with engine.begin() as conn:
        # The day's statements are planned as expensive (10,000 device lookups) but run in well
        # under a second; JIT compiling them costs more than it saves.
        conn.execute(text("SET LOCAL jit = off"))
        writer = RollupWriter(conn, replace=replace)
        for batch in device_batches(conn, day, device_ids, batch_size=chunk_size):
            snapshots, live = read_redis_values(client, keys, batch.names, day)
            rows: list[RollupRow] = []
            no_data: list[UUID] = []
            for device_id, posture, snapshot, live_value in zip(
                batch.ids, batch.postures, snapshots, live, strict=True
            ):
                outcome = rollup_device_day(
                    device_id, day, posture=posture, snapshot=snapshot, live=live_value
                )
                if isinstance(outcome, RollupRow):
                    rows.append(outcome)
                elif isinstance(outcome, Missing):
                    tally.add_missing(outcome)
                    no_data.append(device_id)
                else:
                    tally.add_rejection(outcome)
                    log.warning(
                        "Device-day rejected: malformed source data",
                        deviceId=str(device_id),
                        reason=outcome.reason.value,
                        detail=outcome.detail,
                    )
            writer.add(rows)
            if replace:
                tally.written += writer.delete(day, no_data)
            tally.aggregated += len(rows)
            tally.devices += len(batch.ids)
            if seen is not None:
                seen.update(batch.ids)
        tally.written += writer.merge()
    unknown = () if seen is None else tuple(sorted(set(device_ids or ()) - seen))
    report = tally.report(unknown)
    if report.missing:
        log.info(
            "Devices without data for the day (no row written)",
            missing=report.missing,
            sample=[str(d) for d in report.missing_devices[:10]],
        )
    return report
