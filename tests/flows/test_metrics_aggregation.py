"""The metrics-aggregation flow end to end, against real PostgreSQL, Redis and a Prefect server."""

import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, cast
from uuid import UUID

import pytest
import redis
import sqlalchemy.exc
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.client.schemas.objects import State, TaskRun
from prefect.flow_engine import run_flow
from prefect.states import Failed, Scheduled
from sqlalchemy import Engine, insert, text

from avian_workers.db.models import FirewallMetricsRollup
from avian_workers.locks import hold
from avian_workers.metrics.aggregate import AggregationSummary
from avian_workers.redis_store import RedisKeys
from avian_workers.settings import Settings
from flows.metrics_aggregation import (
    LOCK_SCOPE,
    Stores,
    aggregate_locked_day,
    metrics_aggregation,
    retry_on_io_error,
)
from tests.avian_workers.metrics.platform_data import (
    add_devices,
    add_posture,
    metrics_of,
    put_live,
    put_snapshot,
    redis_counters,
    set_status,
    stored_rollups,
)

pytestmark = pytest.mark.usefixtures("prefect_server")

TODAY = datetime.now(UTC).date()
YESTERDAY = TODAY - timedelta(days=1)
"""Fixed at import: only for tests that name their days; what 'today' means to a flow run is
`utc_today()` at the time of the run."""


def utc_today() -> date:
    return datetime.now(UTC).date()


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute))


@pytest.fixture
def keys(settings: Settings, redis_client: redis.Redis, db: Engine) -> RedisKeys:
    """Key names under this test run's prefix (with a clean database and Redis afterwards)."""
    return RedisKeys.from_settings(settings)


def run_day(day: date, **parameters: Any) -> AggregationSummary:
    return metrics_aggregation(start_date=day, end_date=day, **parameters)


def posture_day(
    engine: Engine, device: UUID, day: date, *samples: tuple[int, dict[str, int]]
) -> None:
    for hour, counters in samples:
        add_posture(engine, device, at(day, hour), **counters)


# --- the scenarios of the issue, with their expected numbers -----------------------------------


def test_normal_day_combines_posture_rows_and_the_daily_snapshot(
    db: Engine, redis_client: redis.Redis, keys: RedisKeys
) -> None:
    (device,) = add_devices(db)
    posture_day(
        db,
        device,
        YESTERDAY,
        (4, {"ips": 30, "gav": 5, "atp": 1, "botnet": 2, "content_filter": 10}),
        (12, {"ips": 70, "gav": 11, "atp": 2, "botnet": 3, "content_filter": 22}),
    )
    put_snapshot(
        redis_client,
        keys,
        device,
        YESTERDAY,
        redis_counters(
            ips=100,
            gav=20,
            atp=3,
            botnet=5,
            content_filter=40,
            blocked_connections=900,
            bandwidthTotalMb=5120,
            activeSessionsCount=250,
        ),
    )

    summary = run_day(YESTERDAY)

    assert metrics_of(stored_rollups(db), device, YESTERDAY) == {
        "threats_blocked": 128,
        "malware_blocked": 20,
        "ips_blocked": 100,
        "blocked_connections": 900,
        "web_filter_hits": 40,
        "bandwidth_total_mb": 5120,
        "active_sessions_count": 250,
    }
    assert (summary.aggregated, summary.rows_written, summary.missing) == (1, 1, 0)


def test_missing_snapshot_uses_posture_rows_and_leaves_redis_only_metrics_unknown(
    db: Engine, keys: RedisKeys
) -> None:
    (device,) = add_devices(db)
    posture_day(
        db,
        device,
        YESTERDAY,
        (6, {"ips": 40, "gav": 4, "atp": 1, "botnet": 0, "content_filter": 9}),
        (18, {"ips": 95, "gav": 7, "atp": 1, "botnet": 2, "content_filter": 15}),
    )

    run_day(YESTERDAY)

    assert metrics_of(stored_rollups(db), device, YESTERDAY) == {
        "threats_blocked": 95 + 7 + 1 + 2,
        "malware_blocked": 7,
        "ips_blocked": 95,
        "blocked_connections": None,
        "web_filter_hits": 15,
        "bandwidth_total_mb": None,
        "active_sessions_count": None,
    }


def test_reboot_mid_day_counts_what_was_reached_before_it(
    db: Engine, redis_client: redis.Redis, keys: RedisKeys
) -> None:
    (device,) = add_devices(db)
    posture_day(
        db,
        device,
        YESTERDAY,
        (4, {"ips": 200, "gav": 10, "atp": 1, "botnet": 1, "content_filter": 5}),
        (10, {"ips": 450, "gav": 30, "atp": 2, "botnet": 1, "content_filter": 9}),
        (14, {"ips": 20, "gav": 2, "atp": 0, "botnet": 0, "content_filter": 1}),
    )
    put_snapshot(
        redis_client,
        keys,
        device,
        YESTERDAY,
        redis_counters(ips=90, gav=8, atp=1, botnet=0, content_filter=4, blocked_connections=60),
    )

    run_day(YESTERDAY)

    stored = metrics_of(stored_rollups(db), device, YESTERDAY)
    assert stored["ips_blocked"] == 450 + 90
    assert stored["malware_blocked"] == 30 + 8
    assert stored["web_filter_hits"] == 9 + 4
    assert stored["threats_blocked"] == 540 + 38 + 3 + 1
    assert stored["blocked_connections"] == 60


def test_admin_clear_counts_the_blocks_before_the_clear(
    db: Engine, redis_client: redis.Redis, keys: RedisKeys
) -> None:
    (device,) = add_devices(db)
    posture_day(
        db,
        device,
        YESTERDAY,
        (6, {"ips": 80, "gav": 4, "atp": 0, "botnet": 0, "content_filter": 12}),
        (12, {"ips": 0, "gav": 0, "atp": 0, "botnet": 0, "content_filter": 0}),
    )
    put_snapshot(
        redis_client,
        keys,
        device,
        YESTERDAY,
        redis_counters(ips=25, gav=1, content_filter=3, blocked_connections=10),
    )

    run_day(YESTERDAY)

    stored = metrics_of(stored_rollups(db), device, YESTERDAY)
    assert (stored["ips_blocked"], stored["malware_blocked"], stored["web_filter_hits"]) == (
        105,
        5,
        15,
    )
    assert stored["threats_blocked"] == 110


def test_only_a_live_key_from_the_wrong_day_writes_no_row_and_lists_the_device(
    db: Engine, redis_client: redis.Redis, keys: RedisKeys
) -> None:
    (device,) = add_devices(db)
    put_live(
        redis_client, keys, device, f"{TODAY.isoformat()}T00:10:00.000Z", redis_counters(ips=7)
    )

    summary = run_day(YESTERDAY)

    assert stored_rollups(db) == []
    (report,) = summary.days
    assert report.missing == 1
    assert report.missing_devices == (device,)


def test_only_a_live_key_from_the_right_day_gives_its_counters(
    db: Engine, redis_client: redis.Redis, keys: RedisKeys
) -> None:
    (device,) = add_devices(db)
    put_live(
        redis_client,
        keys,
        device,
        f"{YESTERDAY.isoformat()}T23:58:00.000Z",
        redis_counters(ips=64, gav=6, atp=2, botnet=1, content_filter=8, blocked_connections=300),
    )

    run_day(YESTERDAY)

    assert metrics_of(stored_rollups(db), device, YESTERDAY) == {
        "threats_blocked": 73,
        "malware_blocked": 6,
        "ips_blocked": 64,
        "blocked_connections": 300,
        "web_filter_hits": 8,
        "bandwidth_total_mb": None,
        "active_sessions_count": None,
    }


def test_malformed_snapshot_rejects_the_device_day_with_a_reason_and_others_go_on(
    db: Engine, redis_client: redis.Redis, keys: RedisKeys
) -> None:
    broken, healthy = add_devices(db, 2)
    posture_day(db, broken, YESTERDAY, (6, {"ips": 10}))
    put_snapshot(redis_client, keys, broken, YESTERDAY, '{"ipsBlocks": "lots"')
    put_snapshot(redis_client, keys, healthy, YESTERDAY, redis_counters(ips=5))

    summary = run_day(YESTERDAY)

    assert [r["device_id"] for r in stored_rollups(db)] == [healthy]
    (report,) = summary.days
    assert report.rejected_by_reason == {"not_json": 1}
    (rejection,) = report.rejections
    assert rejection.device_id == broken
    assert "daily snapshot" in rejection.detail


def test_inactive_device_is_skipped_by_default_but_aggregated_when_named(
    db: Engine, redis_client: redis.Redis, keys: RedisKeys
) -> None:
    active, retired = add_devices(db, 2)
    for device in (active, retired):
        put_snapshot(redis_client, keys, device, YESTERDAY, redis_counters(ips=12))
    set_status(db, retired, "inactive")

    run_day(YESTERDAY)
    assert [r["device_id"] for r in stored_rollups(db)] == [active]

    summary = run_day(YESTERDAY, device_ids=[retired])
    assert {r["device_id"] for r in stored_rollups(db)} == {active, retired}
    assert summary.aggregated == 1


# --- idempotence, backfill, retention, locks ---------------------------------------------------


def three_days_of_data(engine: Engine, client: redis.Redis, keys: RedisKeys) -> list[date]:
    """Three days for four firewalls: snapshots, posture rows with a reboot, a gap, bad data."""
    days = [YESTERDAY - timedelta(days=n) for n in (2, 1, 0)]
    devices = add_devices(engine, 4)
    for n, day in enumerate(days):
        for m, device in enumerate(devices):
            if (n + m) % 4 == 3:
                continue  # no data at all that day
            base = 10 * (n + 1) * (m + 1)
            posture_day(
                engine,
                device,
                day,
                (6, {"ips": base, "gav": 2, "atp": 1, "botnet": 0, "content_filter": 3}),
                (12, {"ips": base // 4, "gav": 1, "atp": 1, "botnet": 1, "content_filter": 4}),
            )
            if m != 1:
                put_snapshot(
                    client,
                    keys,
                    device,
                    day,
                    redis_counters(
                        ips=base, gav=3, atp=2, botnet=1, content_filter=6, blocked_connections=m
                    ),
                )
    put_snapshot(client, keys, devices[1], days[1], b"garbage")
    return days


def test_a_three_day_backfill_equals_three_single_day_runs(
    db: Engine, redis_client: redis.Redis, keys: RedisKeys
) -> None:
    days = three_days_of_data(db, redis_client, keys)

    backfill = metrics_aggregation(start_date=days[0], end_date=days[-1])
    after_backfill = stored_rollups(db)
    with db.begin() as conn:
        conn.execute(text("DELETE FROM firewall_metrics_rollup"))
    for day in days:
        run_day(day)

    assert stored_rollups(db) == after_backfill
    assert [r.day for r in backfill.days] == days
    assert backfill.rows_written == len(after_backfill) > 0
    assert backfill.missing == 3
    assert backfill.rejected == 1


def test_running_twice_changes_nothing(
    db: Engine, redis_client: redis.Redis, keys: RedisKeys
) -> None:
    days = three_days_of_data(db, redis_client, keys)
    metrics_aggregation(start_date=days[0], end_date=days[-1])
    first = stored_rollups(db, with_identity=True)

    again = metrics_aggregation(start_date=days[0], end_date=days[-1])

    assert stored_rollups(db, with_identity=True) == first
    assert again.rows_written == 0
    assert again.aggregated == len(first)


def test_nightly_run_covers_yesterday_and_the_late_days_and_enforces_retention(
    db: Engine, redis_client: redis.Redis, keys: RedisKeys
) -> None:
    (device,) = add_devices(db)
    today = utc_today()  # now, not when the module was imported: a run may cross midnight
    yesterday = today - timedelta(days=1)
    expired, kept = today - timedelta(days=366), today - timedelta(days=365)
    with db.begin() as conn:
        conn.execute(
            insert(FirewallMetricsRollup),
            [{"device_id": device, "date": day, "ips_blocked": 1} for day in (expired, kept)],
        )
    late_day = yesterday - timedelta(days=2)
    put_snapshot(redis_client, keys, device, late_day, redis_counters(ips=9))

    summary = metrics_aggregation()

    assert [r.day for r in summary.days] == [late_day, late_day + timedelta(days=1), yesterday]
    assert summary.rollups_deleted == 1
    assert [r["date"] for r in stored_rollups(db)] == [kept, late_day]


def test_a_nightly_run_that_starts_late_covers_its_own_days_and_every_day_since(
    db: Engine, keys: RedisKeys
) -> None:
    add_devices(db)
    scheduled_on = utc_today() - timedelta(days=4)  # the work pool was down meanwhile
    # A scheduled run, started now by the flow engine as a worker starts one.
    with get_client(sync_client=True) as client:
        scheduled_run = client.create_flow_run(
            metrics_aggregation,
            state=Scheduled(scheduled_time=datetime.combine(scheduled_on, time(), UTC)),
        )

    summary = cast("AggregationSummary", run_flow(metrics_aggregation, flow_run=scheduled_run))

    # Its own three days, and every day since: the newer runs of the outage were cancelled.
    first, yesterday = scheduled_on - timedelta(days=3), utc_today() - timedelta(days=1)
    assert [r.day for r in summary.days] == [
        first + timedelta(days=n) for n in range((yesterday - first).days + 1)
    ]


def test_a_retried_retention_pass_reports_every_row_it_deleted(
    db: Engine, keys: RedisKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    (device,) = add_devices(db)
    expired = [utc_today() - timedelta(days=366 + n) for n in range(5)]
    with db.begin() as conn:
        conn.execute(
            insert(FirewallMetricsRollup), [{"device_id": device, "date": d} for d in expired]
        )
        # The second batch's DELETE fails once as a lost connection would (SQLSTATE class 08,
        # retried); the sequence counts statements outside the failing transaction.
        conn.execute(text("CREATE SEQUENCE retention_batches"))
        conn.execute(
            text(
                "CREATE FUNCTION fail_second_batch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF nextval('retention_batches') = 2 THEN "
                "RAISE EXCEPTION 'connection lost' USING ERRCODE = '08006'; END IF; "
                "RETURN NULL; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER fail_second_batch BEFORE DELETE ON firewall_metrics_rollup "
                "FOR EACH STATEMENT EXECUTE FUNCTION fail_second_batch()"
            )
        )
    monkeypatch.setenv("METRICS_RETENTION_BATCH_SIZE", "2")
    try:
        summary = metrics_aggregation()
    finally:
        with db.begin() as conn:
            conn.execute(text("DROP TRIGGER fail_second_batch ON firewall_metrics_rollup"))
            conn.execute(text("DROP FUNCTION fail_second_batch()"))
            conn.execute(text("DROP SEQUENCE retention_batches"))

    assert stored_rollups(db) == []
    assert summary.retention_error is None
    assert summary.rollups_deleted == 5  # 2 before the failure, 3 in the retried attempt


def test_a_day_locked_by_another_run_is_skipped_and_reported(
    db: Engine, redis_client: redis.Redis, keys: RedisKeys
) -> None:
    (device,) = add_devices(db)
    locked_day, free_day = YESTERDAY - timedelta(days=1), YESTERDAY
    for day in (locked_day, free_day):
        put_snapshot(redis_client, keys, device, day, redis_counters(ips=4))

    with hold(
        redis_client, keys.lock(LOCK_SCOPE, locked_day.isoformat()), lease_seconds=60
    ) as lease:
        assert lease is not None
        summary = metrics_aggregation(start_date=locked_day, end_date=free_day)

    assert summary.locked_days == (locked_day,)
    assert [r["date"] for r in stored_rollups(db)] == [free_day]
    assert summary.days[0].table_row()["outcome"] == "locked"


def test_a_failing_day_fails_the_run_after_the_other_days_are_written(
    db: Engine, redis_client: redis.Redis, keys: RedisKeys
) -> None:
    (device,) = add_devices(db)
    failing_day, good_day = YESTERDAY - timedelta(days=1), YESTERDAY
    for day in (failing_day, good_day):
        put_snapshot(redis_client, keys, device, day, redis_counters(ips=4))
    with db.begin() as conn:  # the database refuses one day's rows, as a broken disk might
        conn.execute(
            text(
                "CREATE FUNCTION refuse_day() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF NEW.date = DATE '{failing_day.isoformat()}' THEN RAISE EXCEPTION 'no space';"
                " END IF; RETURN NEW; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER refuse_day BEFORE INSERT ON firewall_metrics_rollup "
                "FOR EACH ROW EXECUTE FUNCTION refuse_day()"
            )
        )
    try:
        state: State[Any] = metrics_aggregation(
            start_date=failing_day, end_date=good_day, return_state=True
        )
    finally:
        with db.begin() as conn:
            conn.execute(text("DROP TRIGGER refuse_day ON firewall_metrics_rollup"))
            conn.execute(text("DROP FUNCTION refuse_day()"))

    assert state.is_failed()
    assert failing_day.isoformat() in str(state.message)
    assert [r["date"] for r in stored_rollups(db)] == [good_day]


class RedisWhileAFirewallIsDeleted(redis.Redis):
    """Redis, except that the platform deletes `device` just before the day's snapshots are read
    the first time: between the day's device list and its upsert."""

    def __init__(self, client: redis.Redis, engine: Engine, device: UUID) -> None:
        super().__init__(connection_pool=client.connection_pool)
        self.engine, self.device = engine, device
        self.deleted = False

    def mget(self, keys: Any, *args: Any) -> Any:
        if not self.deleted:
            with self.engine.begin() as conn:
                conn.execute(
                    text("DELETE FROM firewall_devices WHERE id = :id"), {"id": self.device}
                )
            self.deleted = True
        return super().mget(keys, *args)


def test_a_firewall_deleted_while_its_day_is_aggregated_costs_a_retry_not_the_day(
    db: Engine, redis_client: redis.Redis, keys: RedisKeys, settings: Settings
) -> None:
    deleted, kept = add_devices(db, 2)
    for device in (deleted, kept):
        put_snapshot(redis_client, keys, device, YESTERDAY, redis_counters(ips=4))
    client = RedisWhileAFirewallIsDeleted(redis_client, db, deleted)
    stores = Stores(db, client, keys, settings.lock_lease_seconds)

    report = aggregate_locked_day(YESTERDAY, None, False, stores)

    assert client.deleted
    assert (report.outcome, report.devices, report.rows_inserted) == ("aggregated", 1, 1)
    assert [r["device_id"] for r in stored_rollups(db)] == [kept]


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (sqlalchemy.exc.OperationalError("SELECT 1", {}, OSError("connection reset")), True),
        (redis.exceptions.ConnectionError("Redis went away"), True),
        (ValueError("a bug or bad data"), False),
        (KeyError("ipsBlocks"), False),
    ],
)
def test_tasks_retry_only_when_a_store_failed_to_answer(error: Exception, retried: bool) -> None:
    state = Failed(data=error)
    assert retry_on_io_error(aggregate_locked_day, cast("TaskRun", None), state) is retried


def test_an_unfinished_day_is_refused_with_a_clear_error(db: Engine, keys: RedisKeys) -> None:
    with pytest.raises(ValueError, match="not a finished UTC day"):
        run_day(utc_today())


def artifacts_of(state: State[Any]) -> dict[str, Any]:
    """The run's artifacts by key."""
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
    return {a.key: a for a in artifacts}


def test_a_run_without_exclusions_still_publishes_its_empty_exclusions_table(
    db: Engine, redis_client: redis.Redis, keys: RedisKeys
) -> None:
    # Otherwise the key's latest version would be an older run's list.
    (device,) = add_devices(db)
    put_snapshot(redis_client, keys, device, YESTERDAY, redis_counters(ips=1))

    state: State[Any] = metrics_aggregation(
        start_date=YESTERDAY, end_date=YESTERDAY, return_state=True
    )

    assert state.is_completed()
    assert json.loads(str(artifacts_of(state)["metrics-aggregation-exclusions"].data)) == []


def test_run_leaves_a_table_artifact_and_a_summary(
    db: Engine, redis_client: redis.Redis, keys: RedisKeys
) -> None:
    good, broken, absent = add_devices(db, 3)
    put_snapshot(redis_client, keys, good, YESTERDAY, redis_counters(ips=1))
    put_snapshot(redis_client, keys, broken, YESTERDAY, redis_counters(ips=-1))

    state: State[Any] = metrics_aggregation(
        start_date=YESTERDAY, end_date=YESTERDAY, return_state=True
    )

    assert state.is_completed()
    by_key = artifacts_of(state)
    assert {
        "metrics-aggregation",
        "metrics-aggregation-summary",
        "metrics-aggregation-exclusions",
    } <= set(by_key)
    (day_row,) = json.loads(str(by_key["metrics-aggregation"].data))
    assert day_row["date"] == YESTERDAY.isoformat()
    assert (day_row["aggregated"], day_row["missing"], day_row["rejected"]) == (1, 1, 1)
    assert day_row["rejected reasons"] == "negative: 1"
    exclusions = json.loads(str(by_key["metrics-aggregation-exclusions"].data))
    assert {(row["device"], row["excluded"]) for row in exclusions} == {
        (str(broken), "negative"),
        (str(absent), "missing"),
    }
    summary = str(by_key["metrics-aggregation-summary"].data)
    assert "retention deletions" in summary
