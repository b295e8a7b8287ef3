"""Reading a day's sources from real PostgreSQL and Redis."""

from datetime import date, datetime, time
from uuid import uuid4

import pytest
import redis
from sqlalchemy import Engine, text

from avian_workers.metrics.rollup import NO_POSTURE
from avian_workers.metrics.sources import (
    DeviceBatch,
    day_bounds,
    device_batches,
    read_redis_values,
)
from avian_workers.redis_store import RedisKeys
from avian_workers.settings import Settings
from tests.avian_workers.metrics.platform_data import (
    add_devices,
    add_posture,
    put_live,
    put_snapshot,
)

DAY = date(2025, 1, 9)


def at(hour: int, minute: int = 0, second: int = 0, day: date = DAY) -> datetime:
    return datetime.combine(day, time(hour, minute, second))


def test_day_bounds_are_the_utc_day_as_naive_timestamps() -> None:
    assert day_bounds(DAY) == (at(0), at(0, day=date(2025, 1, 10)))


def test_active_devices_come_in_id_order_with_their_samples_of_the_day(db: Engine) -> None:
    first, second = add_devices(db, 2)
    (inactive,) = add_devices(db, 1, status="inactive")
    add_posture(db, first, at(12), ips=20, gav=None)
    add_posture(db, first, at(6), ips=10, gav=1)
    add_posture(db, first, at(23, 59, 59, day=date(2025, 1, 8)), ips=999)
    add_posture(db, first, at(0, day=date(2025, 1, 10)), ips=999)
    add_posture(db, inactive, at(6), ips=5)

    with db.connect() as conn:
        (batch,) = device_batches(conn, DAY)

    assert batch.ids == [first, second]
    assert batch.names == [str(first), str(second)]
    posture = batch.postures[0]
    assert sorted(posture.samples("ips")) == [(at(6), 10), (at(12), 20)]
    assert sorted(posture.samples("gav")) == [(at(6), 1), (at(12), None)]
    assert sorted(posture.samples("content_filter")) == [(at(6), None), (at(12), None)]
    assert batch.postures[1] == NO_POSTURE


def test_sample_at_midnight_belongs_to_the_day_it_starts(db: Engine) -> None:
    (device,) = add_devices(db)
    add_posture(db, device, at(0), ips=3)
    with db.connect() as conn:
        (batch,) = device_batches(conn, DAY)
    assert batch.postures[0].samples("ips") == [(at(0), 3)]


def test_given_ids_select_exactly_those_devices_whatever_their_status(db: Engine) -> None:
    active, other_active = add_devices(db, 2)
    (inactive,) = add_devices(db, 1, status="inactive")
    with db.connect() as conn:
        selected = [
            d for batch in device_batches(conn, DAY, [inactive, active, uuid4()]) for d in batch.ids
        ]
    assert sorted(selected) == sorted([active, inactive])
    assert other_active not in selected


def test_devices_are_streamed_through_a_server_side_cursor_in_batches(db: Engine) -> None:
    devices = add_devices(db, 5)
    with db.connect() as conn:
        stream = device_batches(conn, DAY, batch_size=2)
        first: DeviceBatch = next(stream)
        open_cursors = conn.execute(
            text("SELECT count(*) FROM pg_cursors WHERE position(:table IN statement) > 0"),
            {"table": "firewall_security_posture"},
        ).scalar_one()
        rest = list(stream)
    assert open_cursors == 1
    assert [len(batch.ids) for batch in [first, *rest]] == [2, 2, 1]
    assert [d for batch in [first, *rest] for d in batch.ids] == sorted(devices)


def test_a_batch_size_below_one_is_refused(db: Engine) -> None:
    with db.connect() as conn, pytest.raises(ValueError, match="batch_size"):
        next(device_batches(conn, DAY, batch_size=0))


def test_redis_values_come_in_device_order_with_none_for_absent_keys(
    settings: Settings, redis_client: redis.Redis
) -> None:
    keys = RedisKeys.from_settings(settings)
    with_snapshot, with_live, with_nothing = uuid4(), uuid4(), uuid4()
    put_snapshot(redis_client, keys, with_snapshot, DAY, {"ipsBlocks": 1})
    put_snapshot(redis_client, keys, with_live, date(2025, 1, 8), {"ipsBlocks": 2})
    put_live(redis_client, keys, with_live, "2025-01-09T10:00:00Z", {"ipsBlocks": 3})

    snapshots, live = read_redis_values(
        redis_client, keys, [str(with_snapshot), str(with_live), str(with_nothing)], DAY
    )

    assert snapshots == [b'{"ipsBlocks": 1}', None, None]
    assert live[0] is None
    assert live[1] is not None
    assert b'"ipsBlocks": 3' in live[1]
    assert live[2] is None


def test_live_key_is_not_read_for_a_device_whose_snapshot_exists(
    settings: Settings, redis_client: redis.Redis
) -> None:
    keys = RedisKeys.from_settings(settings)
    device = uuid4()
    put_snapshot(redis_client, keys, device, DAY, {"ipsBlocks": 1})
    put_live(redis_client, keys, device, "2025-01-09T10:00:00Z", {"ipsBlocks": 3})
    assert read_redis_values(redis_client, keys, [str(device)], DAY) == (
        [b'{"ipsBlocks": 1}'],
        [None],
    )


def test_redis_keys_live_under_the_configured_prefix(
    settings: Settings, redis_client: redis.Redis
) -> None:
    keys = RedisKeys.from_settings(settings)
    device = uuid4()
    redis_client.set(f"firewall:polling:{device}:daily:{DAY.isoformat()}", b"{}", ex=60)
    try:
        snapshots, _ = read_redis_values(redis_client, keys, [str(device)], DAY)
    finally:
        redis_client.delete(f"firewall:polling:{device}:daily:{DAY.isoformat()}")
    assert settings.redis_key_prefix
    assert snapshots == [None]


def test_no_devices_reads_nothing(settings: Settings, redis_client: redis.Redis) -> None:
    assert read_redis_values(redis_client, RedisKeys.from_settings(settings), [], DAY) == ([], [])
