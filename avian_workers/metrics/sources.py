"""Reads of one day's sources, in bulk and bounded in memory: posture rows and Redis readings.

The posture query selects the day's devices and their samples together: one row per device, in
device-id order, with that device's samples of the day aggregated into arrays by PostgreSQL
(through the `(device_id, timestamp)` index). It is read through a server-side cursor, so the
caller holds only the devices it is working on, however many there are. The cursor uses
PostgreSQL's binary format: arrays of timestamps decode several times faster than as text.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from itertools import compress
from typing import cast
from uuid import UUID

import redis
from sqlalchemy import Connection

from avian_workers.db.engine import psycopg_connection
from avian_workers.metrics.rollup import (
    NO_POSTURE,
    POSTURE_COLUMNS,
    SECURITY_COUNTERS,
    PostureSamples,
)
from avian_workers.redis_store import RedisKeys


@dataclass(frozen=True, slots=True)
class DeviceBatch:
    """Consecutive selected devices (in id order): ids, the same as text, posture of the day."""

    ids: list[UUID]
    names: list[str]
    """Each id in its text form, which the Redis key names use (str(UUID) is slow in bulk)."""
    postures: list[PostureSamples]
    """Each device's posture rows of the day; NO_POSTURE when it has none."""


# No ORDER BY inside the aggregates: the arrays of one device share their row order, and
# rollup.py orders the samples itself (sorting inside each aggregate tripled the query's time).
_DEVICES_WITH_POSTURE = """
SELECT d.id, d.id::text, p.taken_at, {counters}
FROM firewall_devices AS d
LEFT JOIN LATERAL (
    SELECT array_agg(s.timestamp) AS taken_at, {arrays}
    FROM firewall_security_posture AS s
    WHERE s.device_id = d.id AND s.timestamp >= %(day_start)s AND s.timestamp < %(day_end)s
) AS p ON true
WHERE {selection}
ORDER BY d.id
"""

_SELECT_ACTIVE = "d.status = 'active'"
_SELECT_GIVEN = "d.id = ANY(%(device_ids)s)"


def _posture_query(selection: str) -> str:
    return _DEVICES_WITH_POSTURE.format(
        counters=", ".join(f"p.{name}" for name in SECURITY_COUNTERS),
        arrays=", ".join(
            f"array_agg(s.{POSTURE_COLUMNS[name]}) AS {name}" for name in SECURITY_COUNTERS
        ),
        selection=selection,
    )


_ACTIVE_QUERY = _posture_query(_SELECT_ACTIVE)
_GIVEN_QUERY = _posture_query(_SELECT_GIVEN)


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """[start, end) of a UTC day as naive timestamps (the firewall tables store naive UTC)."""
    start = datetime.combine(day, time())
    return start, start + timedelta(days=1)


_make_posture = PostureSamples._make  # a row's slice of the same columns becomes the samples


def device_batches(
    conn: Connection,
    day: date,
    device_ids: Sequence[UUID] | None = None,
    *,
    batch_size: int = 1_000,
) -> Iterator[DeviceBatch]:
    """The selected devices with their posture rows of `day`, in id order, `batch_size` at once.

    Selected are the devices with status 'active', or exactly `device_ids` whatever their status
    (ids that are not in `firewall_devices` are simply not yielded). Runs inside `conn`'s
    transaction, through its psycopg connection (SQLAlchemy cannot ask for binary results).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    driver = psycopg_connection(conn)
    day_start, day_end = day_bounds(day)
    params: dict[str, object] = {"day_start": day_start, "day_end": day_end}
    if device_ids is not None:
        params["device_ids"] = list(device_ids)
    with driver.cursor(name=f"posture_{day:%Y%m%d}", binary=True) as cursor:
        cursor.execute(_ACTIVE_QUERY if device_ids is None else _GIVEN_QUERY, params)
        while rows := cursor.fetchmany(batch_size):
            yield DeviceBatch(
                ids=[row[0] for row in rows],
                names=[row[1] for row in rows],
                # Columns 2.. are PostureSamples' fields; a NULL taken_at is a day without rows.
                postures=[NO_POSTURE if row[2] is None else _make_posture(row[2:]) for row in rows],
            )


def read_redis_values(
    client: redis.Redis, keys: RedisKeys, device_names: Sequence[str], day: date
) -> tuple[list[bytes | None], list[bytes | None]]:
    """The daily snapshots of `day` and, where one is absent, the live key of the device.

    Devices are given by their ids as text. One MGET for every snapshot; live keys are only
    consulted without a snapshot (rollup.py), so a second MGET fetches just those, and only
    when some snapshot is missing. The live list holds None wherever a snapshot was found.
    """
    if not device_names:
        return [], []
    snapshots = cast("list[bytes | None]", client.mget(keys.daily_snapshots(device_names, day)))
    live: list[bytes | None] = [None] * len(device_names)
    absent = [snapshot is None for snapshot in snapshots]
    if any(absent):
        fetched = iter(
            cast(
                "list[bytes | None]",
                client.mget([keys.polling(n) for n in compress(device_names, absent)]),
            )
        )
        live = [next(fetched) if missing else None for missing in absent]
    return snapshots, live
