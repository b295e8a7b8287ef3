"""One day for many devices: chunks, outcomes and the day's report."""

from datetime import date, datetime, time
from uuid import uuid4

import pytest
import redis
from sqlalchemy import Engine, insert

from avian_workers.db.models import FirewallMetricsRollup
from avian_workers.metrics import aggregate
from avian_workers.metrics.aggregate import aggregate_day
from avian_workers.redis_store import RedisKeys
from avian_workers.settings import Settings
from tests.avian_workers.metrics.platform_data import (
    add_devices,
    add_posture,
    put_snapshot,
    redis_counters,
    stored_rollups,
)

DAY = date(2025, 1, 9)


@pytest.fixture
def keys(settings: Settings, redis_client: redis.Redis) -> RedisKeys:
    return RedisKeys.from_settings(settings)


def test_every_device_is_rolled_up_across_chunk_boundaries(
    db: Engine, redis_client: redis.Redis, keys: RedisKeys
) -> None:
    devices = add_devices(db, 5)
    for n, device in enumerate(devices):
        put_snapshot(redis_client, keys, device, DAY, redis_counters(ips=n + 1))

    report = aggregate_day(db, redis_client, keys, DAY, chunk_size=2)

    assert (report.devices, report.aggregated, report.rows_inserted) == (5, 5, 5)
    assert [r["ips_blocked"] for r in stored_rollups(db)] == [1, 2, 3, 4, 5]


def test_report_counts_missing_and_rejected_device_days_with_reasons(
    db: Engine, redis_client: redis.Redis, keys: RedisKeys
) -> None:
    good, missing, bad_json, negative = add_devices(db, 4)
    put_snapshot(redis_client, keys, good, DAY, redis_counters(ips=3))
    put_snapshot(redis_client, keys, bad_json, DAY, b"{oops")
    add_posture(db, negative, datetime.combine(DAY, time(6)), ips=-1)

    report = aggregate_day(db, redis_client, keys, DAY)

    assert (report.aggregated, report.missing, report.rejected) == (1, 1, 2)
    assert report.missing_devices == (missing,)
    assert report.rejected_by_reason == {"not_json": 1, "negative": 1}
    assert {r.device_id for r in report.rejections} == {bad_json, negative}
    assert [r["device_id"] for r in stored_rollups(db)] == [good]
    excluded = {(row["device"], row["excluded"]) for row in report.exclusion_rows()}
    assert excluded == {
        (str(missing), "missing"),
        (str(bad_json), "not_json"),
        (str(negative), "negative"),
    }


def test_replace_deletes_the_zero_rows_of_device_days_without_data_and_keeps_numbers(
    db: Engine, redis_client: redis.Redis, keys: RedisKeys
) -> None:
    # The earlier worker wrote zeros where it had no data; missing is not zero. A row with
    # numbers may come from a snapshot that has since expired: it stays.
    with_data, without_data, expired = add_devices(db, 3)
    put_snapshot(redis_client, keys, with_data, DAY, redis_counters(ips=3))
    with db.begin() as conn:
        conn.execute(
            insert(FirewallMetricsRollup),
            [
                {"device_id": device, "date": DAY, "ips_blocked": 0, "blocked_connections": blocked}
                for device, blocked in ((with_data, 0), (without_data, 0), (expired, 7))
            ],
        )

    merged = aggregate_day(db, redis_client, keys, DAY)
    assert (merged.rows_updated, merged.rows_deleted) == (1, 0)
    assert len(stored_rollups(db)) == 3

    replaced = aggregate_day(db, redis_client, keys, DAY, replace=True)
    assert (replaced.missing, replaced.rows_deleted) == (2, 1)
    assert {r["device_id"] for r in stored_rollups(db)} == {with_data, expired}
    assert aggregate_day(db, redis_client, keys, DAY, replace=True).rows_deleted == 0


def test_listed_exclusions_are_capped_and_say_how_many_more_were_counted(
    db: Engine, redis_client: redis.Redis, keys: RedisKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aggregate, "SAMPLE_LIMIT", 2)
    add_devices(db, 5)
    report = aggregate_day(db, redis_client, keys, DAY)
    assert report.missing == 5
    assert len(report.missing_devices) == 2
    *listed, left_out = report.exclusion_rows()
    assert len(listed) == 2
    assert (left_out["device"], left_out["excluded"]) == ("3 more", "missing")

    for device in add_devices(db, 3):
        put_snapshot(redis_client, keys, device, DAY, b"{oops")
    report = aggregate_day(db, redis_client, keys, DAY)
    assert (report.rejected, len(report.rejections)) == (3, 2)
    rejected_rows = [r for r in report.exclusion_rows() if r["excluded"] != "missing"]
    assert rejected_rows[-1]["device"] == "1 more"
    assert len(rejected_rows) == 3


def test_given_ids_not_in_the_platform_are_reported_as_unknown(
    db: Engine, redis_client: redis.Redis, keys: RedisKeys
) -> None:
    (device,) = add_devices(db)
    stranger = uuid4()
    report = aggregate_day(db, redis_client, keys, DAY, [device, stranger])
    assert report.devices == 1
    assert report.unknown_device_ids == (stranger,)
