"""Writing rollups: staged rows, one set-based upsert, merge rules, idempotence, retention."""

from datetime import date, timedelta
from uuid import UUID

import pytest
from sqlalchemy import Engine, insert, text

from avian_workers.db.models import FirewallMetricsRollup
from avian_workers.metrics.rollup import METRIC_NAMES, RollupRow, metric_values
from avian_workers.metrics.store import (
    RollupWriter,
    WriteCounts,
    delete_rollups_before,
    upsert_rollups,
)
from tests.avian_workers.metrics.platform_data import add_devices, metrics_of, stored_rollups

DAY = date(2025, 1, 9)
STAGES_OF_THIS_SESSION = text(
    "SELECT count(*) FROM pg_class"
    " WHERE relnamespace = pg_my_temp_schema() AND relname LIKE 'firewall_metrics_rollup_stage%'"
)


def full_row(device_id: UUID, day: date = DAY, **overrides: int | None) -> RollupRow:
    row = RollupRow(
        device_id=device_id,
        day=day,
        threats_blocked=130,
        malware_blocked=20,
        ips_blocked=100,
        blocked_connections=900,
        web_filter_hits=40,
        bandwidth_total_mb=5_000_000_000,
        active_sessions_count=250,
    )
    return row._replace(**overrides)


def metrics_of_row(row: RollupRow) -> dict[str, int | None]:
    return dict(zip(METRIC_NAMES, metric_values(row), strict=True))


def write(engine: Engine, rows: list[RollupRow], *, replace_rows: bool = False) -> WriteCounts:
    with engine.begin() as conn:
        return upsert_rollups(conn, rows, replace=replace_rows)


def test_new_rows_are_inserted_with_unknown_metrics_as_null(db: Engine) -> None:
    first, second = add_devices(db, 2)
    counts = write(db, [full_row(first), full_row(second, blocked_connections=None)])
    assert counts == WriteCounts(inserted=2, updated=0)
    stored = stored_rollups(db)
    assert metrics_of(stored, first, DAY) == {
        "threats_blocked": 130,
        "malware_blocked": 20,
        "ips_blocked": 100,
        "blocked_connections": 900,
        "web_filter_hits": 40,
        "bandwidth_total_mb": 5_000_000_000,
        "active_sessions_count": 250,
    }
    assert metrics_of(stored, second, DAY)["blocked_connections"] is None


def test_rewriting_the_same_rows_changes_nothing_not_even_the_row_version(db: Engine) -> None:
    devices = add_devices(db, 3)
    rows = [full_row(d) for d in devices]
    write(db, rows)
    before = stored_rollups(db, with_identity=True)
    assert write(db, rows) == WriteCounts(inserted=0, updated=0)
    assert stored_rollups(db, with_identity=True) == before


def test_a_row_without_a_final_reading_never_replaces_one_with_it(db: Engine) -> None:
    (device,) = add_devices(db)
    write(db, [full_row(device)])
    posture_only = full_row(  # the snapshot expired: fewer samples, no final reading
        device,
        ips_blocked=60,
        threats_blocked=90,
        blocked_connections=None,
        bandwidth_total_mb=None,
        active_sessions_count=None,
    )
    assert write(db, [posture_only]) == WriteCounts(inserted=0, updated=0)
    assert metrics_of(stored_rollups(db), device, DAY) == metrics_of_row(full_row(device))


def test_a_row_with_a_final_reading_replaces_a_posture_only_row(db: Engine) -> None:
    (device,) = add_devices(db)
    write(db, [full_row(device, blocked_connections=None, bandwidth_total_mb=None)])
    with_snapshot = full_row(device, ips_blocked=150, threats_blocked=180)
    assert write(db, [with_snapshot]) == WriteCounts(inserted=0, updated=1)
    assert metrics_of(stored_rollups(db), device, DAY) == metrics_of_row(with_snapshot)


def test_a_snapshot_row_replaces_an_earlier_live_key_row_whole_even_where_a_total_falls(
    db: Engine,
) -> None:
    # The nightly run saw only the live key (23:50: ips 120, gav 60); IPS was cleared at 23:55,
    # and the snapshot a later run found holds ips 5, gav 80 after a posture sample of ips 100.
    # Taking each column's larger value would store ips 120 with threats 185 < ips + malware.
    (device,) = add_devices(db)
    live_key_row = full_row(device, ips_blocked=120, malware_blocked=60, threats_blocked=180)
    snapshot_row = full_row(device, ips_blocked=105, malware_blocked=80, threats_blocked=185)
    write(db, [live_key_row])
    assert write(db, [snapshot_row]) == WriteCounts(inserted=0, updated=1)
    stored = metrics_of(stored_rollups(db), device, DAY)
    assert stored == metrics_of_row(snapshot_row)
    assert stored["threats_blocked"] >= stored["ips_blocked"] + stored["malware_blocked"]


def test_posture_only_rows_replace_each_other_only_when_no_total_is_lower(db: Engine) -> None:
    (device,) = add_devices(db)
    no_final = {"blocked_connections": None, "bandwidth_total_mb": None}
    write(db, [full_row(device, **no_final)])
    late_samples = full_row(device, ips_blocked=110, threats_blocked=140, **no_final)
    assert write(db, [late_samples]) == WriteCounts(inserted=0, updated=1)
    # Higher IPS but lower malware: some posture rows went away; neither row holds the other.
    mixed = full_row(device, ips_blocked=120, malware_blocked=10, threats_blocked=140, **no_final)
    assert write(db, [mixed]) == WriteCounts(inserted=0, updated=0)
    assert metrics_of(stored_rollups(db), device, DAY) == metrics_of_row(late_samples)


def test_sessions_and_bandwidth_unknown_to_a_reading_keep_the_stored_values(db: Engine) -> None:
    (device,) = add_devices(db)
    write(db, [full_row(device, active_sessions_count=250)])
    write(db, [full_row(device, active_sessions_count=120)])
    assert metrics_of(stored_rollups(db), device, DAY)["active_sessions_count"] == 120
    write(db, [full_row(device, active_sessions_count=None, bandwidth_total_mb=None)])
    stored = metrics_of(stored_rollups(db), device, DAY)
    assert (stored["active_sessions_count"], stored["bandwidth_total_mb"]) == (120, 5_000_000_000)


def test_replace_overwrites_the_stored_row_with_the_computed_one(db: Engine) -> None:
    (device,) = add_devices(db)
    with db.begin() as conn:  # a row as the earlier worker wrote it: today's counters, wrong day
        conn.execute(
            insert(FirewallMetricsRollup).values(
                device_id=device, date=DAY, threats_blocked=9_999, ips_blocked=9_999
            )
        )
    computed = full_row(device, blocked_connections=None)
    assert write(db, [computed], replace_rows=True) == WriteCounts(inserted=0, updated=1)
    stored = metrics_of(stored_rollups(db), device, DAY)
    assert (stored["threats_blocked"], stored["ips_blocked"]) == (130, 100)
    assert stored["blocked_connections"] is None


def test_each_row_is_written_under_its_own_day(db: Engine) -> None:
    (device,) = add_devices(db)
    next_day = DAY + timedelta(days=1)
    counts = write(db, [full_row(device), full_row(device, day=next_day, ips_blocked=7)])
    assert counts == WriteCounts(inserted=2, updated=0)
    assert metrics_of(stored_rollups(db), device, next_day)["ips_blocked"] == 7
    assert metrics_of(stored_rollups(db), device, DAY)["ips_blocked"] == 100


def test_a_device_twice_on_one_day_is_refused_and_nothing_is_written(db: Engine) -> None:
    first, second = add_devices(db, 2)
    with db.connect() as conn, conn.begin():
        writer = RollupWriter(conn)
        writer.add([full_row(first), full_row(second)])
        writer.add([full_row(first, ips_blocked=1)])
        with pytest.raises(ValueError, match="appears twice"):
            writer.merge()
    assert stored_rollups(db) == []


def test_a_device_twice_is_refused_even_where_the_stored_row_would_not_change(
    db: Engine,
) -> None:
    (device,) = add_devices(db)
    write(db, [full_row(device)])
    with db.connect() as conn, conn.begin():
        writer = RollupWriter(conn, replace=True)
        writer.add([full_row(device), full_row(device, ips_blocked=0)])
        with pytest.raises(ValueError, match=f"device {device} appears twice on {DAY}"):
            writer.merge()
    assert metrics_of(stored_rollups(db), device, DAY)["ips_blocked"] == 100


def test_two_writers_in_one_transaction_keep_their_rows_apart(db: Engine) -> None:
    first, second = add_devices(db, 2)
    with db.begin() as conn:
        merging, replacing = RollupWriter(conn), RollupWriter(conn, replace=True)
        merging.add([full_row(first)])
        replacing.add([full_row(second)])
        assert merging.merge() == WriteCounts(inserted=1, updated=0)
        assert replacing.merge() == WriteCounts(inserted=1, updated=0)
    assert len(stored_rollups(db)) == 2


def test_a_writer_used_after_its_transaction_ended_fails_rather_than_lose_rows(
    db: Engine,
) -> None:
    first, second = add_devices(db, 2)
    with db.connect() as conn:
        with conn.begin():
            writer = RollupWriter(conn)
            writer.add([full_row(first)])
        with conn.begin(), pytest.raises(RuntimeError, match="transaction ended before merge"):
            writer.add([full_row(second)])
    assert stored_rollups(db) == []


def test_rows_staged_in_chunks_are_written_by_one_merge(db: Engine) -> None:
    devices = add_devices(db, 5)
    with db.begin() as conn:
        writer = RollupWriter(conn)
        writer.add([full_row(d) for d in devices[:2]])
        writer.add([])
        writer.add([full_row(d) for d in devices[2:]])
        before_merge = conn.execute(text("SELECT count(*) FROM firewall_metrics_rollup"))
        assert before_merge.scalar_one() == 0
        assert writer.merge() == WriteCounts(inserted=5, updated=0)
        assert writer.merge() == WriteCounts()  # the stage was emptied
        writer.add([full_row(devices[0], ips_blocked=10_000)])  # a writer can be used again
        assert writer.merge() == WriteCounts(inserted=0, updated=1)
    assert len(stored_rollups(db)) == 5


def test_the_stage_does_not_outlive_its_merge(db: Engine) -> None:
    (device,) = add_devices(db)
    with db.begin() as conn:
        write_counts = upsert_rollups(conn, [full_row(device)])
        assert conn.execute(STAGES_OF_THIS_SESSION).scalar_one() == 0
    assert write_counts == WriteCounts(inserted=1, updated=0)


def test_nothing_to_write_stages_nothing(db: Engine) -> None:
    with db.begin() as conn:
        assert upsert_rollups(conn, []) == WriteCounts()
        assert conn.execute(STAGES_OF_THIS_SESSION).scalar_one() == 0


def test_retention_deletes_older_rows_in_batches_and_keeps_the_rest(db: Engine) -> None:
    devices = add_devices(db, 5)
    cutoff = date(2024, 1, 10)
    old = [full_row(d, day=cutoff - timedelta(days=1)) for d in devices]
    kept = [full_row(d, day=cutoff) for d in devices[:2]]
    write(db, old)
    write(db, kept)

    assert delete_rollups_before(db, cutoff, batch_size=2) == 5

    remaining = stored_rollups(db)
    assert {(r["device_id"], r["date"]) for r in remaining} == {(d, cutoff) for d in devices[:2]}
    assert delete_rollups_before(db, cutoff, batch_size=2) == 0


def test_retention_reports_each_committed_batch_as_it_goes(db: Engine) -> None:
    devices = add_devices(db, 5)
    cutoff = date(2024, 1, 10)
    write(db, [full_row(d, day=cutoff - timedelta(days=1)) for d in devices])
    batches: list[int] = []

    assert delete_rollups_before(db, cutoff, batch_size=2, on_batch=batches.append) == 5

    assert batches == [2, 2, 1]


def test_retention_batch_size_must_be_positive(db: Engine) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        delete_rollups_before(db, DAY, batch_size=0)
