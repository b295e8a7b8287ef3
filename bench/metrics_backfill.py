"""Benchmark of the metrics-aggregation backfill: N firewalls x D days, against two baselines.

    uv run python bench/metrics_backfill.py [--devices 10000] [--days 30]

It builds a throwaway database (created and dropped like the test fixtures) and uses a Redis key
prefix of its own, fills both with D days of platform data for N firewalls (posture rows by COPY,
daily snapshots and live keys by pipelined SETs), then times:

1. a bare `INSERT ... SELECT` of N x D finished rows into the empty rollup table: the floor for
   writing that many rows with the table's keys, foreign key and checks;
2. the flow's per-day work (`aggregate_day`, as many days at once as the flow runs) without
   Prefect, then the real flow, `metrics_aggregation(start_date, end_date)`, over the D days
   (empty table), and once more (everything already stored: the idempotent rerun). The flow
   includes Prefect's task and log traffic to a local Prefect server sharing the machine, so
   the flow is also timed for a single firewall over the same days: that orchestration alone;
3. a device-by-device loop like the old worker (per device-day: two Redis GETs, a posture query,
   one single-row upsert in its own transaction), on a sample of devices, extrapolated linearly
   to N devices;
4. the flow's peak Python memory (tracemalloc) for 1,000, 5,000 and N active firewalls over a
   few days, to show it does not grow with the device count (it is bounded by the days run at
   once times the chunk of devices each holds).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path

import psycopg
import redis

ADMIN_DSN = os.environ.get(
    "AVIAN_BENCH_POSTGRES_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("AVIAN_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
SAMPLE_HOURS = (3, 9, 15, 21)  # the platform's poller snapshots posture every few hours
KEY_TTL_SECONDS = 4 * 3600  # a crashed run's keys still go away on their own


@dataclass(frozen=True)
class Target:
    database_url: str
    redis_prefix: str
    days: list[date]
    devices: list[uuid.UUID]


def _counters(device_no: int, day_no: int, sample_no: int | None) -> dict[str, int]:
    """Deterministic counters of a posture sample, or of the day's snapshot (`sample_no` None).

    Every 20th firewall reboots between its 2nd and 3rd sample, so its counters restart.
    """
    step = len(SAMPLE_HOURS) + 1 if sample_no is None else sample_no + 1
    if device_no % 20 == 0 and step > 2:
        step -= 2
    scale = 1 + (device_no + day_no) % 7
    return {
        "ipsBlocks": 40 * scale * step,
        "gavBlocks": 5 * scale * step,
        "dpiSslBlocks": 2 * step,
        "atpVerdicts": scale * step,
        "appControlBlocks": 3 * step,
        "botnetBlocks": step,
        "contentFilterBlocks": 9 * scale * step,
        "blockedConnections": 120 * scale * step,
        "bandwidthTotalMb": 800 * scale * step,
        "activeSessionsCount": 50 + scale,
    }


def create_database() -> str:
    name = f"avian_bench_{secrets.token_hex(4)}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"


def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def delete_redis_prefix(client: redis.Redis, prefix: str) -> None:
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}*", count=10_000):
        batch.append(key)
        if len(batch) >= 10_000:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)


def fill(target: Target, client: redis.Redis) -> None:
    """Firewalls and posture rows by COPY; snapshots and live keys by pipelined SETs."""
    from avian_workers.redis_store import RedisKeys

    with psycopg.connect(target.database_url, autocommit=True) as conn:
        tenant_id = uuid.uuid4()
        conn.execute(
            "INSERT INTO tenants (id, name, domain) VALUES (%s, 'Bench', 'bench.example')",
            (tenant_id,),
        )
        with conn.cursor().copy(
            "COPY firewall_devices (id, tenant_id, management_ip, serial_number, status) FROM STDIN"
        ) as copy:
            for device_id in target.devices:
                copy.write_row((device_id, tenant_id, "192.0.2.1", device_id.hex[:16], "active"))
        with conn.cursor().copy(
            "COPY firewall_security_posture (device_id, timestamp, ips_enabled, ips_daily_blocks,"
            " gav_daily_blocks, dpi_ssl_daily_blocks, atp_daily_verdicts, botnet_daily_blocks,"
            " app_control_daily_blocks, content_filter_daily_blocks) FROM STDIN"
        ) as copy:
            # In the order the platform's poller writes them: every firewall's sample of one
            # hour, then the next hour's. A firewall's samples of a day lie on as many pages.
            for day_no, day in enumerate(target.days):
                for hour_index, hour in enumerate(SAMPLE_HOURS):
                    for device_no, device_id in enumerate(target.devices):
                        c = _counters(device_no, day_no, hour_index)
                        copy.write_row(
                            (
                                device_id,
                                datetime.combine(day, dtime(hour)),
                                True,
                                c["ipsBlocks"],
                                c["gavBlocks"],
                                c["dpiSslBlocks"],
                                c["atpVerdicts"],
                                c["botnetBlocks"],
                                c["appControlBlocks"],
                                c["contentFilterBlocks"],
                            )
                        )
        conn.execute("VACUUM ANALYZE")

    keys = RedisKeys(target.redis_prefix)
    pipe = client.pipeline(transaction=False)
    pending = 0
    for day_no, day in enumerate(target.days):
        for device_no, device_id in enumerate(target.devices):
            snapshot = json.dumps(_counters(device_no, day_no, None))
            pipe.set(keys.daily_snapshot(device_id, day), snapshot, ex=KEY_TTL_SECONDS)
            pending += 1
            if pending >= 10_000:
                pipe.execute()
                pending = 0
    last_poll = f"{(target.days[-1] + timedelta(days=1)).isoformat()}T00:01:00.000Z"
    for device_no, device_id in enumerate(target.devices):
        live = {
            "deviceId": str(device_id),
            "lastPollTime": last_poll,
            "lastCounters": _counters(device_no, 0, 0),
            "lastStatus": {},
            "lastSecurityFeatures": {},
        }
        pipe.set(keys.polling(device_id), json.dumps(live), ex=KEY_TTL_SECONDS)
    pipe.execute()


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds, and CPU seconds spent by this process and the database backends.

    The CPU figure is the work done whatever else the machine is busy with, so it compares
    runs that wall-clock time, on a shared machine, cannot.
    """

    wall: float
    cpu: float


def _backend_cpu_seconds(database_url: str) -> float:
    """CPU seconds (Linux /proc) of the open backends of our database, except this query's."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        pids = [
            row[0]
            for row in conn.execute(
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ]
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def bare_insert_seconds(target: Target) -> Timing:
    """INSERT ... SELECT of devices x days finished rows into the empty table."""
    with psycopg.connect(target.database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE firewall_metrics_rollup")
        conn.execute("CHECKPOINT")
        backend_cpu = _backend_cpu_seconds(target.database_url)
        started = time.perf_counter()
        conn.execute(
            """
            INSERT INTO firewall_metrics_rollup (device_id, date, threats_blocked,
                malware_blocked, ips_blocked, blocked_connections, web_filter_hits,
                bandwidth_total_mb, active_sessions_count)
            SELECT d.id, day::date, 300, 40, 250, 900, 70, 5000, 55
            FROM generate_series(%s::date, %s::date, interval '1 day') AS day
            CROSS JOIN firewall_devices AS d
            ORDER BY day, d.id
            """,
            (target.days[0], target.days[-1]),
        )
        elapsed = time.perf_counter() - started
        backend_cpu = _backend_cpu_seconds(target.database_url) - backend_cpu
        conn.execute("TRUNCATE firewall_metrics_rollup")
        conn.execute("CHECKPOINT")
    return Timing(wall=elapsed, cpu=backend_cpu)


def count_rollups(target: Target) -> int:
    with psycopg.connect(target.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM firewall_metrics_rollup").fetchone()
        assert row is not None
        return int(row[0])


def core_seconds(target: Target, days: list[date]) -> Timing:
    """The same per-day work without Prefect: aggregate_day over `days`, as many at once as the
    flow runs, into an empty table."""
    from concurrent.futures import ThreadPoolExecutor

    from avian_workers.db.engine import make_engine
    from avian_workers.metrics.aggregate import aggregate_day
    from avian_workers.redis_store import RedisKeys, connect
    from avian_workers.settings import load_settings
    from flows._common import freeze_startup_objects
    from flows.metrics_aggregation import DAY_CONCURRENCY

    freeze_startup_objects()  # as the flow's start does
    settings = load_settings()
    engine = make_engine(settings, pool_size=DAY_CONCURRENCY + 1)
    client = connect(settings)
    keys = RedisKeys.from_settings(settings)
    with psycopg.connect(target.database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE firewall_metrics_rollup")
        conn.execute("CHECKPOINT")
    try:
        started, process_cpu = time.perf_counter(), time.process_time()
        with ThreadPoolExecutor(DAY_CONCURRENCY) as pool:
            reports = list(pool.map(lambda day: aggregate_day(engine, client, keys, day), days))
        elapsed, process_cpu = time.perf_counter() - started, time.process_time() - process_cpu
        # The pool's backends were opened by this run, so their whole CPU time is its work.
        backend_cpu = _backend_cpu_seconds(target.database_url)
    finally:
        client.close()
        engine.dispose()
    assert sum(r.rows_inserted for r in reports) == len(target.devices) * len(days)
    with psycopg.connect(target.database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE firewall_metrics_rollup")
        conn.execute("CHECKPOINT")
    return Timing(wall=elapsed, cpu=process_cpu + backend_cpu)


def flow_seconds(
    target: Target, days: list[date], device_ids: list[uuid.UUID] | None = None
) -> tuple[float, int]:
    from flows.metrics_aggregation import metrics_aggregation

    started = time.perf_counter()
    summary = metrics_aggregation(start_date=days[0], end_date=days[-1], device_ids=device_ids)
    return time.perf_counter() - started, summary.rows_written


def loop_seconds(target: Target, client: redis.Redis, sample: int) -> float:
    """The old worker's shape: one device-day at a time, one row per transaction."""
    from avian_workers.metrics.rollup import (
        NO_POSTURE,
        PostureSamples,
        RollupRow,
        metric_values,
        rollup_device_day,
    )
    from avian_workers.metrics.sources import day_bounds
    from avian_workers.redis_store import RedisKeys

    keys = RedisKeys(target.redis_prefix)
    devices = target.devices[:sample]
    with psycopg.connect(target.database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM firewall_metrics_rollup WHERE device_id = ANY(%s)", (devices,))
        started = time.perf_counter()
        for device_id in devices:
            for day in target.days:
                snapshot = client.get(keys.daily_snapshot(device_id, day))
                live = client.get(keys.polling(device_id))
                start, end = day_bounds(day)
                rows = conn.execute(
                    "SELECT timestamp, ips_daily_blocks, gav_daily_blocks, atp_daily_verdicts,"
                    " botnet_daily_blocks, content_filter_daily_blocks"
                    " FROM firewall_security_posture"
                    " WHERE device_id = %s AND timestamp >= %s AND timestamp < %s"
                    " ORDER BY timestamp",
                    (device_id, start, end),
                ).fetchall()
                posture = (
                    PostureSamples(*(list(column) for column in zip(*rows, strict=True)))
                    if rows
                    else NO_POSTURE
                )
                outcome = rollup_device_day(
                    device_id, day, posture=posture, snapshot=snapshot, live=live
                )
                if not isinstance(outcome, RollupRow):
                    continue
                conn.execute(
                    "INSERT INTO firewall_metrics_rollup (device_id, date, threats_blocked,"
                    " malware_blocked, ips_blocked, blocked_connections, web_filter_hits,"
                    " bandwidth_total_mb, active_sessions_count)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (device_id, date) DO UPDATE SET"
                    " threats_blocked = excluded.threats_blocked",
                    (device_id, day, *metric_values(outcome)),
                )
        return time.perf_counter() - started


def peak_memory_mib(target: Target, active: int, days: list[date]) -> float:
    """tracemalloc peak of one flow run over `days` with the first `active` firewalls active."""
    with psycopg.connect(target.database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE firewall_metrics_rollup")
        conn.execute(
            "UPDATE firewall_devices SET status = CASE WHEN id = ANY(%s) THEN 'active'"
            " ELSE 'inactive' END",
            (target.devices[:active],),
        )
    from flows.metrics_aggregation import metrics_aggregation

    tracemalloc.start()
    try:
        metrics_aggregation(start_date=days[0], end_date=days[-1])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20


@contextmanager
def environment(target: Target) -> Iterator[None]:
    """What a worker reads from its environment, pointed at the bench's own stores."""
    saved = dict(os.environ)
    os.environ.update(
        {
            "DATABASE_URL": target.database_url,
            "REDIS_URL": REDIS_URL,
            "REDIS_KEY_PREFIX": target.redis_prefix,
            "NODE_ENV": "test",
            "LOG_LEVEL": "warning",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
        }
    )
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--loop-sample", type=int, default=100, help="devices the loop times")
    parser.add_argument("--memory-days", type=int, default=3, help="days of each memory run")
    parser.add_argument(
        "--memory-sizes",
        default="1000,5000",
        help="active device counts of the memory runs besides --devices (comma-separated)",
    )
    args = parser.parse_args(argv)

    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    days = [yesterday - timedelta(days=n) for n in range(args.days - 1, -1, -1)]
    target = Target(
        database_url=create_database(),
        redis_prefix=f"avian-bench:{secrets.token_hex(4)}:",
        days=days,
        devices=sorted(uuid.uuid4() for _ in range(args.devices)),
    )
    client = redis.Redis.from_url(REDIS_URL)
    results: list[tuple[str, str]] = []
    try:
        with environment(target):
            from prefect.testing.utilities import prefect_test_harness

            from avian_workers.db.migrate import upgrade
            from avian_workers.settings import load_settings

            upgrade(load_settings())
            started = time.perf_counter()
            fill(target, client)
            rows = args.devices * args.days
            print(
                f"filled {args.devices} devices x {args.days} days "
                f"({rows * len(SAMPLE_HOURS)} posture rows, {rows} snapshots) "
                f"in {time.perf_counter() - started:.1f} s",
                file=sys.stderr,
            )
            with prefect_test_harness(server_startup_timeout=120):
                bare = bare_insert_seconds(target)
                core = core_seconds(target, days)
                backfill, written = flow_seconds(target, days)
                assert written == rows == count_rollups(target), (written, rows)
                rerun, rewritten = flow_seconds(target, days)
                assert rewritten == 0
                # The same flow for one firewall: the run's setup, Prefect's task runs and
                # artifacts, and the local Prefect server (on the same cores) on their own.
                orchestration, _ = flow_seconds(target, days, target.devices[:1])
                sample = min(args.loop_sample, args.devices)
                loop = loop_seconds(target, client, sample) * args.devices / sample
                memory_days = days[-args.memory_days :]
                sizes = sorted(
                    {min(int(n), args.devices) for n in args.memory_sizes.split(",") if n}
                    | {args.devices}
                )
                memory = {n: peak_memory_mib(target, n, memory_days) for n in sizes}

        results = [
            ("rows (devices x days)", f"{rows:,}"),
            ("bare INSERT ... SELECT, wall", f"{bare.wall:.2f} s"),
            ("bare INSERT ... SELECT, CPU (database)", f"{bare.cpu:.2f} s"),
            (
                "per-day work without Prefect, wall",
                f"{core.wall:.2f} s  ({core.wall / bare.wall:.2f}x bare)",
            ),
            (
                "per-day work without Prefect, CPU (worker + database)",
                f"{core.cpu:.2f} s  ({core.cpu / bare.cpu:.2f}x bare)",
            ),
            (
                "backfill flow (empty table), wall",
                f"{backfill:.2f} s  ({backfill / bare.wall:.2f}x bare)",
            ),
            (
                "backfill flow rerun (no change), wall",
                f"{rerun:.2f} s  ({rerun / bare.wall:.2f}x bare)",
            ),
            (
                "the flow for 1 firewall over the same days (orchestration alone), wall",
                f"{orchestration:.2f} s",
            ),
            (
                f"device loop (timed on {sample} devices, x{args.devices / sample:g})",
                f"{loop:.1f} s  (backfill is {loop / backfill:.1f}x faster)",
            ),
            *(
                (f"peak Python memory, {n:,} devices x {len(memory_days)} days", f"{mib:.1f} MiB")
                for n, mib in memory.items()
            ),
        ]
        width = max(len(name) for name, _ in results)
        print(f"\n{'measure':<{width}}  result\n{'-' * width}  {'-' * 40}")
        for name, value in results:
            print(f"{name:<{width}}  {value}")
    finally:
        delete_redis_prefix(client, target.redis_prefix)
        client.close()
        drop_database(target.database_url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
