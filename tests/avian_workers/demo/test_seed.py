"""The demo's world: stable ids, poller readings that keep the contract's promises, idempotent writes."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import pytest
import redis
from sqlalchemy import Engine, func, select

from avian_workers.db.models import (
    FirewallDevice,
    FirewallHostAlias,
    FirewallSecurityPosture,
    Tenant,
)
from avian_workers.demo.seed import (
    CONTOSO,
    DEMO_FIREWALLS,
    DEMO_TENANTS,
    POSTURE_COUNTERS,
    REBOOT_HOUR,
    TAILSPIN,
    DayKind,
    DemoFirewall,
    DemoTenant,
    backfill_days,
    demo_emails,
    poller_day,
    seed_database,
    seed_poller_keys,
    store_tenant_secrets,
)
from avian_workers.mail.triage import identify
from avian_workers.metrics.aggregate import aggregate_day
from avian_workers.redis_store import RedisKeys
from avian_workers.secrets_manager import fetch_tenant_credentials, secrets_client
from avian_workers.settings import Settings

# Three consecutive days: every firewall has its special day exactly once among them.
DAYS = [date(2026, 3, 9), date(2026, 3, 10), date(2026, 3, 11)]
HQ, NORTHWIND_FW, MONTREAL, TAILSPIN_FW = DEMO_FIREWALLS


def special_day(firewall: DemoFirewall) -> date:
    (day,) = [d for d in DAYS if firewall.day_kind(d) is firewall.special]
    return day


def normal_day(firewall: DemoFirewall) -> date:
    return next(d for d in DAYS if firewall.day_kind(d) is DayKind.NORMAL)


def threats(counters: dict[str, int]) -> int:
    return sum(counters[k] for k in ("ipsBlocks", "gavBlocks", "atpVerdicts", "botnetBlocks"))


# --- The catalog -----------------------------------------------------------------------------


def test_ids_and_credentials_derive_from_names_so_every_run_writes_the_same_rows() -> None:
    again = DemoTenant(CONTOSO.name, CONTOSO.domain, devices=1, alerts=1, cves=1)

    assert (again.id, again.client_id, again.client_secret) == (
        CONTOSO.id,
        CONTOSO.client_id,
        CONTOSO.client_secret,
    )
    assert len({t.id for t in DEMO_TENANTS}) == len(DEMO_TENANTS)
    assert len({f.id for f in DEMO_FIREWALLS}) == len(DEMO_FIREWALLS)


def test_only_the_broken_tenant_stores_a_secret_its_microsoft_tenant_refuses() -> None:
    for tenant in DEMO_TENANTS:
        stored = tenant.stored_secret()
        assert (stored["clientId"], stored["tenantId"]) == (
            tenant.client_id,
            tenant.azure_tenant_id,
        )
        assert (stored["clientSecret"] != tenant.client_secret) is tenant.broken_credentials
    assert [t for t in DEMO_TENANTS if t.broken_credentials] == [TAILSPIN]


def test_tenants_differ_in_size() -> None:
    assert len({t.devices for t in DEMO_TENANTS}) == len(DEMO_TENANTS)


def test_sample_mail_has_unique_message_ids_and_crlf_line_ends() -> None:
    emails = demo_emails()
    message_ids = [identify(e.raw, uidvalidity=1, uid=1).message_id for e in emails]

    assert len(emails) >= 20
    assert None not in message_ids
    assert len(set(message_ids)) == len(emails)
    assert all(b"\n" not in e.raw.replace(b"\r\n", b"") for e in emails)


# --- The poller's readings -------------------------------------------------------------------


def test_a_day_reads_the_same_whenever_it_is_computed() -> None:
    for firewall in DEMO_FIREWALLS:
        assert poller_day(firewall, DAYS[0]) == poller_day(firewall, DAYS[0])


@pytest.mark.parametrize("firewall", DEMO_FIREWALLS, ids=lambda f: f.hostname)
def test_each_special_day_comes_once_in_any_three_consecutive_days(firewall: DemoFirewall) -> None:
    for start in range(7):
        window = [DAYS[0] + timedelta(days=start + k) for k in range(3)]
        kinds = [firewall.day_kind(day) for day in window]
        expected = 3 if firewall.special is DayKind.NORMAL else 1
        assert kinds.count(firewall.special) == expected


def test_counters_only_grow_on_a_normal_day_and_the_snapshot_ends_it() -> None:
    readings = poller_day(HQ, normal_day(HQ))

    assert readings.snapshot is not None
    assert [taken.hour for taken, _ in readings.posture] == [3, 7, 11, 15, 19, 23]
    for column, key in POSTURE_COUNTERS.items():
        series = [counters[column] for _, counters in readings.posture] + [readings.snapshot[key]]
        assert series == sorted(series)


def test_a_reboot_restarts_the_counters_from_zero() -> None:
    readings = poller_day(HQ, special_day(HQ))
    before = [c for t, c in readings.posture if t.hour < REBOOT_HOUR][-1]
    after = next(c for t, c in readings.posture if t.hour > REBOOT_HOUR)

    assert readings.kind is DayKind.REBOOT
    assert after["ips_daily_blocks"] < before["ips_daily_blocks"]


def test_an_offline_day_has_no_readings_at_all() -> None:
    readings = poller_day(TAILSPIN_FW, special_day(TAILSPIN_FW))

    assert (readings.kind, readings.posture, readings.snapshot) == (DayKind.OFFLINE, (), None)


def test_a_day_without_snapshot_still_has_its_posture_rows() -> None:
    readings = poller_day(MONTREAL, special_day(MONTREAL))

    assert readings.kind is DayKind.NO_SNAPSHOT
    assert readings.snapshot is None
    assert len(readings.posture) == 6


def test_a_day_still_running_has_readings_up_to_now_and_no_snapshot_yet() -> None:
    day = normal_day(NORTHWIND_FW)
    readings = poller_day(NORTHWIND_FW, day, until=datetime.combine(day, time(12, 30)))

    assert readings.snapshot is None
    assert [taken.hour for taken, _ in readings.posture] == [3, 7, 11]
    assert readings.latest["ipsBlocks"] >= readings.posture[-1][1]["ips_daily_blocks"]


def test_the_backfill_covers_finished_days_oldest_first() -> None:
    assert backfill_days(date(2026, 3, 12), 3) == DAYS
    with pytest.raises(ValueError, match="at least one day"):
        backfill_days(date(2026, 3, 12), 0)


# --- Writes --------------------------------------------------------------------------------------


def row_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            model.__tablename__: conn.execute(select(func.count()).select_from(model)).scalar_one()
            for model in (Tenant, FirewallDevice, FirewallHostAlias, FirewallSecurityPosture)
        }


def test_seeding_twice_leaves_the_same_rows(db: Engine) -> None:
    written = seed_database(db, DAYS)
    first = row_counts(db)
    seed_database(db, DAYS)

    assert row_counts(db) == first
    assert first == {
        "tenants": len(DEMO_TENANTS),
        "firewall_devices": len(DEMO_FIREWALLS),
        "firewall_host_aliases": len(DEMO_FIREWALLS),
        "firewall_security_posture": written,
    }
    # Three firewalls have rows on all three days, the offline one on two: six a day.
    assert written == 6 * (3 * 3 + 2)


@pytest.fixture
def keys(settings: Settings, redis_client: redis.Redis) -> RedisKeys:
    return RedisKeys.from_settings(settings)


def test_the_seeded_readings_roll_up_as_each_day_kind_promises(
    db: Engine, redis_client: redis.Redis, keys: RedisKeys
) -> None:
    seed_database(db, DAYS)
    seed_poller_keys(redis_client, keys, DAYS, datetime.combine(DAYS[-1], time(23, 59)))
    ids = [f.id for f in DEMO_FIREWALLS]
    reports = {day: aggregate_day(db, redis_client, keys, day, ids) for day in DAYS}

    offline = reports[special_day(TAILSPIN_FW)]
    assert offline.missing_devices == (TAILSPIN_FW.id,)
    assert (offline.aggregated, offline.rejected) == (3, 0)
    assert sum(r.rows_inserted for r in reports.values()) == 11
    rows = rollups(db)
    no_snapshot = rows[(MONTREAL.id, special_day(MONTREAL))]
    assert no_snapshot["blocked_connections"] is None
    assert no_snapshot["threats_blocked"] > 0
    normal = poller_day(NORTHWIND_FW, DAYS[0]).snapshot
    assert normal is not None
    assert rows[(NORTHWIND_FW.id, DAYS[0])]["threats_blocked"] == threats(dict(normal))
    reboot = poller_day(HQ, special_day(HQ)).snapshot
    assert reboot is not None
    assert rows[(HQ.id, special_day(HQ))]["threats_blocked"] > threats(dict(reboot))


def rollups(engine: Engine) -> dict[tuple[object, date], dict[str, object]]:
    from avian_workers.db.models import FirewallMetricsRollup as Rollup

    with engine.connect() as conn:
        return {
            (row.device_id, row.date): dict(row._mapping)
            for row in conn.execute(select(Rollup.__table__))
        }


def test_a_snapshot_left_by_an_earlier_run_goes_when_the_day_has_none(
    db: Engine, redis_client: redis.Redis, keys: RedisKeys
) -> None:
    day = special_day(MONTREAL)
    stale = keys.daily_snapshot(MONTREAL.id, day)
    redis_client.set(stale, "{}")

    written = seed_poller_keys(redis_client, keys, DAYS, datetime.combine(DAYS[-1], time(12)))

    assert redis_client.exists(stale) == 0
    assert written == 4 * 3 - 2  # the offline day and the day without snapshot have none
    assert redis_client.exists(keys.polling(HQ.id)) == 1


def test_tenant_secrets_are_stored_under_the_contract_names_and_updated_on_a_rerun(
    settings: Settings, moto_reset: str
) -> None:
    settings = Settings.model_validate({**settings.model_dump(), "aws_endpoint_url": moto_reset})
    client = secrets_client(settings)
    store_tenant_secrets(client, settings.tenant_secret_name_template)
    store_tenant_secrets(client, settings.tenant_secret_name_template)

    for tenant in DEMO_TENANTS:
        stored = fetch_tenant_credentials(client, "edr/tenant/{tenant_id}", tenant.id)
        assert stored.client_secret.get_secret_value() == tenant.stored_secret()["clientSecret"]
