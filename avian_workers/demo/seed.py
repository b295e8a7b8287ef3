"""The demo's world: tenants, firewalls, the SonicWall poller's readings and the alert mail.

Everything is derived from fixed names, so a second run writes the same rows again instead of
new ones: ids are UUIDv5 of the names, rows are upserted, a firewall's readings of a day depend
on the firewall and the date only (never on when the demo runs), and the poller's posture rows
of the seeded days are replaced as a whole.

Pure parts (the catalog, the readings) come first; the functions that write to PostgreSQL,
Redis, Secrets Manager, the simulator and the IMAP server follow.
"""

from __future__ import annotations

import json
import random
import ssl
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import redis
from imapclient import IMAPClient
from sqlalchemy import Connection, Engine, delete, insert
from sqlalchemy.dialects.postgresql import insert as pg_insert

from avian_workers.db.models import (
    FirewallDevice,
    FirewallHostAlias,
    FirewallSecurityPosture,
    Tenant,
)
from avian_workers.redis_store import RedisKeys
from avian_workers.secrets_manager import secret_name
from avian_workers.simulator import MicrosoftSimulator, TenantSpec

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

    from avian_workers.demo.services import ImapAccount

NAMESPACE: Final = uuid.UUID("0b6f9f0e-6c0a-4a55-9d53-2f2d6c7e4a31")

SNAPSHOT_TTL_SECONDS: Final = 7 * 24 * 3600  # the poller's daily keys (CONTRACT.md)
LIVE_TTL_SECONDS: Final = 24 * 3600


def _demo_uuid(kind: str, name: str) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, f"{kind}:{name}")


# --- Tenants -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoTenant:
    """An AVIAN tenant and the Microsoft tenant (simulated) its app registration points at."""

    name: str
    domain: str
    devices: int
    alerts: int
    cves: int
    broken_credentials: bool = False

    @property
    def id(self) -> uuid.UUID:
        return _demo_uuid("tenant", self.domain)

    @property
    def azure_tenant_id(self) -> str:
        return str(_demo_uuid("azure-tenant", self.domain))

    @property
    def client_id(self) -> str:
        return str(_demo_uuid("app", self.domain))

    @property
    def client_secret(self) -> str:
        """The secret the (simulated) Entra ID accepts for this tenant's app."""
        return f"demo~{_demo_uuid('secret', self.domain).hex}"

    def stored_secret(self) -> dict[str, str]:
        """The tenant's Secrets Manager value; with broken credentials, a revoked secret."""
        secret = self.client_secret
        if self.broken_credentials:
            secret = f"revoked~{_demo_uuid('revoked-secret', self.domain).hex}"
        return {
            "clientId": self.client_id,
            "clientSecret": secret,
            "tenantId": self.azure_tenant_id,
        }

    def simulator_spec(self) -> TenantSpec:
        return TenantSpec(
            tenant_id=self.azure_tenant_id,
            client_id=self.client_id,
            client_secret=self.client_secret,
            seed=int(_demo_uuid("seed", self.domain)) % 10_000,
            domain=self.domain,
            devices=self.devices,
            alerts=self.alerts,
            cves=self.cves,
            cves_per_device=min(3, self.cves),
        )


NORTHWIND = DemoTenant("Northwind Dental", "northwind-dental.example", devices=6, alerts=4, cves=6)
CONTOSO = DemoTenant(
    "Contoso Logistics", "contoso-logistics.example", devices=40, alerts=20, cves=30
)
FABRIKAM = DemoTenant("Fabrikam Health", "fabrikam-health.example", devices=160, alerts=60, cves=90)
TAILSPIN = DemoTenant(
    "Tailspin Toys", "tailspin-toys.example", devices=15, alerts=8, cves=12, broken_credentials=True
)
DEMO_TENANTS: Final = (NORTHWIND, CONTOSO, FABRIKAM, TAILSPIN)


# --- Firewalls and the poller's readings ---------------------------------------------------------


class DayKind(StrEnum):
    """What the SonicWall poller saw of a firewall on one UTC day."""

    NORMAL = "normal"
    REBOOT = "reboot"  # counters restart from zero mid-day
    NO_SNAPSHOT = "no snapshot"  # posture rows only: the end-of-day key was never written
    OFFLINE = "offline"  # nothing at all


@dataclass(frozen=True)
class DemoFirewall:
    """A SonicWall of a demo tenant; once every three days (by date) it has its `special` day."""

    hostname: str
    serial_number: str
    model: str
    firmware_version: str
    management_ip: str
    tenant: DemoTenant
    traffic: int
    special: DayKind = DayKind.NORMAL
    special_phase: int = 0

    @property
    def id(self) -> uuid.UUID:
        return _demo_uuid("firewall", self.serial_number)

    def day_kind(self, day: date) -> DayKind:
        """The same date always gets the same kind, whenever the demo runs."""
        return self.special if day.toordinal() % 3 == self.special_phase else DayKind.NORMAL


# Serials and host names are the ones in the sample mail: FW-HQ-PRIMARY sends most of it,
# FW-MTL-01 writes in French, the CSV digest also names 0040103C0FFE, and two samples come
# from devices nobody registered.
DEMO_FIREWALLS: Final = (
    DemoFirewall(
        "FW-HQ-PRIMARY", "C0EAE4B2C3F1", "TZ570", "7.1.1-7058", "192.168.1.1", CONTOSO,
        traffic=3, special=DayKind.REBOOT, special_phase=0,
    ),
    DemoFirewall(
        "FW-NORTHWIND", "2CB8ED6A41F0", "TZ270", "7.0.1-5161", "10.10.0.1", NORTHWIND, traffic=1
    ),
    DemoFirewall(
        "FW-MTL-01", "18B1690A2B3C", "NSa 2700", "7.1.2-7019", "10.20.0.1", FABRIKAM,
        traffic=6, special=DayKind.NO_SNAPSHOT, special_phase=1,
    ),
    DemoFirewall(
        "FW-TAILSPIN", "0040103C0FFE", "TZ370", "7.0.1-5145", "10.30.0.1", TAILSPIN,
        traffic=2, special=DayKind.OFFLINE, special_phase=2,
    ),
)  # fmt: skip

# Counter name in the poller's Redis JSON -> blocks per hour at traffic 1.
HOURLY_RATES: Final[Mapping[str, int]] = {
    "ipsBlocks": 6,
    "gavBlocks": 2,
    "dpiSslBlocks": 3,
    "atpVerdicts": 1,
    "appControlBlocks": 4,
    "botnetBlocks": 2,
    "contentFilterBlocks": 10,
    "blockedConnections": 40,
}
# Posture column -> Redis counter it samples.
POSTURE_COUNTERS: Final[Mapping[str, str]] = {
    "ips_daily_blocks": "ipsBlocks",
    "gav_daily_blocks": "gavBlocks",
    "dpi_ssl_daily_blocks": "dpiSslBlocks",
    "atp_daily_verdicts": "atpVerdicts",
    "botnet_daily_blocks": "botnetBlocks",
    "app_control_daily_blocks": "appControlBlocks",
    "content_filter_daily_blocks": "contentFilterBlocks",
}
POSTURE_HOURS: Final = (3, 7, 11, 15, 19, 23)
REBOOT_HOUR: Final = 13
BANDWIDTH_MB_PER_HOUR: Final = 250


@dataclass(frozen=True)
class PollerDay:
    """What the poller recorded of one firewall on one day (all times naive UTC)."""

    day: date
    kind: DayKind
    posture: tuple[tuple[datetime, Mapping[str, int]], ...]
    """(taken at, posture column -> counter value so far that day), in time order."""
    latest: Mapping[str, int]
    """The counters at the last reading (the poller's `lastCounters`), bandwidth and sessions."""
    snapshot: Mapping[str, int] | None
    """The end-of-day counters (`firewall:polling:{id}:daily:{day}`), None when never written."""


def poller_day(firewall: DemoFirewall, day: date, *, until: datetime | None = None) -> PollerDay:
    """The readings of `day`, up to `until` (naive UTC) when the day is still running.

    Counters only grow within a day, except on a REBOOT day, when they restart from zero at
    REBOOT_HOUR. A day cut short by `until` has no end-of-day snapshot yet.
    """
    kind = firewall.day_kind(day)
    if kind is DayKind.OFFLINE:
        return PollerDay(day, kind, (), {}, None)
    rng = random.Random(f"{firewall.serial_number}:{day.isoformat()}")
    totals = dict.fromkeys(HOURLY_RATES, 0)
    bandwidth = 0
    posture: list[tuple[datetime, Mapping[str, int]]] = []
    finished = True
    for hour in range(24):
        hour_end = datetime.combine(day, time(hour)) + timedelta(hours=1)
        if until is not None and hour_end > until:
            finished = False
            break
        if kind is DayKind.REBOOT and hour == REBOOT_HOUR:
            totals, bandwidth = dict.fromkeys(HOURLY_RATES, 0), 0
        for name, rate in HOURLY_RATES.items():
            totals[name] += rng.randint(0, rate * firewall.traffic)
        bandwidth += (
            rng.randint(BANDWIDTH_MB_PER_HOUR // 2, BANDWIDTH_MB_PER_HOUR) * firewall.traffic
        )
        if hour in POSTURE_HOURS:
            taken_at = datetime.combine(day, time(hour, 5))
            posture.append((taken_at, {col: totals[key] for col, key in POSTURE_COUNTERS.items()}))
    sessions = rng.randint(100, 400) * firewall.traffic
    latest = {**totals, "bandwidthTotalMb": bandwidth, "activeSessionsCount": sessions}
    snapshot = latest if finished and kind is not DayKind.NO_SNAPSHOT else None
    return PollerDay(day, kind, tuple(posture), latest, snapshot)


def posture_row(
    firewall: DemoFirewall, taken_at: datetime, counters: Mapping[str, int]
) -> dict[str, Any]:
    """A `firewall_security_posture` row: every service enabled and licensed, the day's counters."""
    return {
        "device_id": firewall.id,
        "timestamp": taken_at,
        **dict.fromkeys(
            (
                "ips_enabled",
                "gav_enabled",
                "dpi_ssl_enabled",
                "atp_enabled",
                "botnet_filter_enabled",
                "app_control_enabled",
                "content_filter_enabled",
            ),
            True,
        ),
        **dict.fromkeys(
            (
                "ips_license_status",
                "gav_license_status",
                "atp_license_status",
                "app_control_license_status",
                "content_filter_license_status",
            ),
            "active",
        ),
        "dpi_ssl_certificate_status": "valid",
        **counters,
    }


def live_state(firewall: DemoFirewall, readings: PollerDay, polled_at: datetime) -> dict[str, Any]:
    """The poller's live key `firewall:polling:{id}`: the last poll's counters and status."""
    return {
        "deviceId": str(firewall.id),
        "lastPollTime": polled_at.isoformat(timespec="seconds") + "Z",
        "lastCounters": {**dict.fromkeys(HOURLY_RATES, 0), **readings.latest},
        "lastStatus": {"status": "online", "model": firewall.model},
        "lastSecurityFeatures": {"ips": True, "gav": True, "atp": True, "botnet": True},
    }


def backfill_days(today: date, count: int) -> list[date]:
    """The `count` finished UTC days before `today`, oldest first."""
    if count < 1:
        raise ValueError("the backfill needs at least one day")
    return [today - timedelta(days=offset) for offset in range(count, 0, -1)]


# --- Mail ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoEmail:
    """One sample alert email as the IMAP server will hold it."""

    file_name: str
    raw: bytes


def demo_emails() -> list[DemoEmail]:
    """The sample mail shipped with the demo, with CRLF line ends as mail servers store it."""
    folder = resources.files("avian_workers.demo") / "emails"
    emails = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".eml"):
            raw = entry.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            emails.append(DemoEmail(entry.name, raw))
    return emails


# --- Writes ------------------------------------------------------------------------------------------


def seed_database(
    engine: Engine,
    days: Sequence[date],
    *,
    tenants: Sequence[DemoTenant] = DEMO_TENANTS,
    firewalls: Sequence[DemoFirewall] = DEMO_FIREWALLS,
) -> int:
    """Upsert the tenants, firewalls and host names; replace the posture rows of `days`.

    Returns the number of posture rows written.
    """
    with engine.begin() as conn:
        _upsert_tenants(conn, tenants)
        _upsert_firewalls(conn, firewalls)
        return _replace_posture(conn, firewalls, days)


def _upsert_tenants(conn: Connection, tenants: Sequence[DemoTenant]) -> None:
    stmt = pg_insert(Tenant).values(
        [{"id": t.id, "name": t.name, "domain": t.domain, "is_active": True} for t in tenants]
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[Tenant.id],
            set_={"name": stmt.excluded.name, "domain": stmt.excluded.domain, "is_active": True},
        )
    )


def _upsert_firewalls(conn: Connection, firewalls: Sequence[DemoFirewall]) -> None:
    rows = [
        {
            "id": f.id,
            "tenant_id": f.tenant.id,
            "model": f.model,
            "firmware_version": f.firmware_version,
            "serial_number": f.serial_number,
            "management_ip": f.management_ip,
            "status": "active",
        }
        for f in firewalls
    ]
    stmt = pg_insert(FirewallDevice).values(rows)
    columns = ("tenant_id", "model", "firmware_version", "serial_number", "management_ip", "status")
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[FirewallDevice.id], set_={c: stmt.excluded[c] for c in columns}
        )
    )
    aliases = pg_insert(FirewallHostAlias).values(
        [{"hostname": f.hostname.lower(), "device_id": f.id} for f in firewalls]
    )
    conn.execute(aliases.on_conflict_do_nothing())


def _replace_posture(
    conn: Connection, firewalls: Sequence[DemoFirewall], days: Sequence[date]
) -> int:
    start = datetime.combine(min(days), time())
    end = datetime.combine(max(days) + timedelta(days=1), time())
    posture = FirewallSecurityPosture
    conn.execute(
        delete(posture).where(
            posture.device_id.in_([f.id for f in firewalls]),
            posture.timestamp >= start,
            posture.timestamp < end,
        )
    )
    rows = [
        posture_row(firewall, taken_at, counters)
        for firewall in firewalls
        for day in days
        for taken_at, counters in poller_day(firewall, day).posture
    ]
    if rows:
        conn.execute(insert(posture), rows)
    return len(rows)


def seed_poller_keys(
    client: redis.Redis,
    keys: RedisKeys,
    days: Sequence[date],
    now: datetime,
    *,
    firewalls: Sequence[DemoFirewall] = DEMO_FIREWALLS,
) -> int:
    """The daily snapshots of `days` and today's live keys; returns the snapshots written.

    A day without a snapshot has its key deleted, so a key left by an earlier run never stands
    in for one the poller did not write.
    """
    now_naive = now.astimezone(UTC).replace(tzinfo=None)
    written = 0
    pipe = client.pipeline(transaction=False)
    for firewall in firewalls:
        for day in days:
            readings = poller_day(firewall, day)
            key = keys.daily_snapshot(firewall.id, day)
            if readings.snapshot is None:
                pipe.delete(key)
            else:
                pipe.set(key, json.dumps(readings.snapshot), ex=SNAPSHOT_TTL_SECONDS)
                written += 1
        today = poller_day(firewall, now_naive.date(), until=now_naive)
        if today.kind is not DayKind.OFFLINE:
            state = live_state(firewall, today, now_naive)
            pipe.set(keys.polling(firewall.id), json.dumps(state), ex=LIVE_TTL_SECONDS)
    pipe.execute()
    return written


def store_tenant_secrets(
    client: SecretsManagerClient, template: str, tenants: Sequence[DemoTenant] = DEMO_TENANTS
) -> None:
    """Each tenant's app credentials under the contract's secret name."""
    for tenant in tenants:
        name = secret_name(template, tenant.id)
        value = json.dumps(tenant.stored_secret())
        try:
            client.create_secret(Name=name, SecretString=value)
        except client.exceptions.ResourceExistsException:
            client.put_secret_value(SecretId=name, SecretString=value)


def add_simulated_tenants(
    simulator: MicrosoftSimulator, tenants: Iterable[DemoTenant] = DEMO_TENANTS
) -> None:
    """Each demo tenant's Microsoft side: its app registration and generated data."""
    for tenant in tenants:
        simulator.add_tenant(tenant.simulator_spec())


def deliver_emails(account: ImapAccount, ca_bundle: Path, emails: Iterable[DemoEmail]) -> int:
    """Append the emails, unread, to the account's INBOX over verified TLS; returns how many."""
    context = ssl.create_default_context(cafile=str(ca_bundle))
    delivered = 0
    with IMAPClient(account.host, port=account.port, ssl=False, timeout=30) as imap:
        imap.starttls(context)
        imap.login(account.user, account.password)
        for email in emails:
            imap.append("INBOX", email.raw)
            delivered += 1
    return delivered
