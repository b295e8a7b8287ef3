"""Writes of `firewall_metrics_rollup`: one set-based upsert per batch of rows, bounded deletes.

How a computed row meets a stored one (the default, merge):
- the counter totals keep the larger value. A total only grows as more samples of its day become
  known (see rollup.py), so the larger one is the better informed: late data raises a row, and a
  rerun after the 7-day daily snapshots expired (posture rows only) cannot lower it;
- `active_sessions_count` is a gauge: the new reading wins, and an unknown one keeps the stored.
With `replace=True` the computed row replaces the stored one outright; that is how rows written
by the earlier worker (zeros for no data, a wrong day's counters) are corrected.

Either way an update happens only when a value really changes (`IS DISTINCT FROM`), so a rerun
leaves every row, its id, created_at and even its tuple version as it was.

The rows travel as one JSON array parameter, serialised in C by orjson and unpacked by
PostgreSQL as jsonb (parsed once, unlike json, whose every `->>` parses the element again):
psycopg's adaptation of Python lists into arrays, element by element, cost more than the insert.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import orjson
from sqlalchemy import Connection, Engine, text

from avian_workers.metrics.rollup import METRIC_NAMES, RollupRow, metric_values

_GAUGES = frozenset({"active_sessions_count"})
_COLUMN_TYPES = {"bandwidth_total_mb": "bigint"}


def _merged(name: str, *, replace: bool) -> str:
    if replace:
        return f"excluded.{name}"
    if name in _GAUGES:
        return f"COALESCE(excluded.{name}, r.{name})"
    return f"GREATEST(r.{name}, excluded.{name})"  # GREATEST ignores a NULL on either side


def _upsert_sql(*, replace: bool) -> str:
    columns = ", ".join(METRIC_NAMES)
    values = ", ".join(
        f"CAST(e->>{n} AS {_COLUMN_TYPES.get(name, 'integer')})"
        for n, name in enumerate(METRIC_NAMES, start=1)
    )
    merged = [_merged(name, replace=replace) for name in METRIC_NAMES]
    sets = ", ".join(f"{name} = {expr}" for name, expr in zip(METRIC_NAMES, merged, strict=True))
    stored = ", ".join(f"r.{name}" for name in METRIC_NAMES)
    # Built once at import from the constant column names above: no outside text reaches it.
    # `xmax = 0` holds only for a row version this statement inserted (an update sets xmax).
    return f"""
WITH written AS (
    INSERT INTO firewall_metrics_rollup AS r (device_id, date, {columns})
    SELECT CAST(e->>0 AS uuid), CAST(:day AS date), {values}
    FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS e
    ON CONFLICT (device_id, date) DO UPDATE SET {sets}
    WHERE ({stored}) IS DISTINCT FROM ({", ".join(merged)})
    RETURNING (r.xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written
"""  # noqa: S608


_MERGE_SQL = text(_upsert_sql(replace=False))
_REPLACE_SQL = text(_upsert_sql(replace=True))


@dataclass(frozen=True, slots=True)
class WriteCounts:
    """Rows an upsert inserted and updated; the rest of its rows were already as computed."""

    inserted: int = 0
    updated: int = 0

    def __add__(self, other: WriteCounts) -> WriteCounts:
        return WriteCounts(self.inserted + other.inserted, self.updated + other.updated)


def upsert_rollups(
    conn: Connection, day: date, rows: Sequence[RollupRow], *, replace: bool = False
) -> WriteCounts:
    """Write the rows of one day in a single statement; see the module docstring for merging."""
    if not rows:
        return WriteCounts()
    if any(row.day != day for row in rows):
        raise ValueError(f"every row must be of {day.isoformat()}")
    if len({row.device_id for row in rows}) != len(rows):
        raise ValueError("a device appears twice among the rows of one day")
    payload = orjson.dumps([(row.device_id, *metric_values(row)) for row in rows]).decode()
    statement = _REPLACE_SQL if replace else _MERGE_SQL
    inserted, updated = conn.execute(statement, {"day": day, "rows": payload}).one()
    return WriteCounts(inserted=inserted, updated=updated)


_DELETE_BATCH = text("""
DELETE FROM firewall_metrics_rollup
WHERE id IN (SELECT id FROM firewall_metrics_rollup WHERE date < :cutoff LIMIT :batch_size)
""")


def delete_rollups_before(engine: Engine, cutoff: date, *, batch_size: int) -> int:
    """Delete rows dated before `cutoff`, `batch_size` per transaction; returns how many."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    deleted = 0
    while True:
        with engine.begin() as conn:
            count = conn.execute(
                _DELETE_BATCH, {"cutoff": cutoff, "batch_size": batch_size}
            ).rowcount
        deleted += count
        if count < batch_size:
            return deleted
