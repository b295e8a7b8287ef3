"""The firewalls the sample mail names, and readers of what the email worker stored."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, insert, select

from avian_workers.db.models import (
    AlertStorm,
    FirewallAlert,
    FirewallDevice,
    MailLedgerEntry,
    MailReviewItem,
    Tenant,
)
from avian_workers.mail.match import DeviceDirectory
from avian_workers.mail.store import load_device_directory
from avian_workers.mail.triage import TriagedMessage, identify, triage

HQ_SERIAL = "C0EAE4B2C3F1"  # every seed email except unknown-device-01
BRANCH_SERIAL = "0040103C0FFE"  # one row of the CSV digest
MONTREAL_SERIAL = "18B1690A2B3C"  # the base64 fixture


@dataclass(frozen=True)
class Firewall:
    device_id: uuid.UUID
    tenant_id: uuid.UUID
    serial_number: str


@dataclass(frozen=True)
class Firewalls:
    hq: Firewall
    branch: Firewall
    montreal: Firewall

    def by_serial(self, serial: str | None) -> Firewall | None:
        found = [f for f in (self.hq, self.branch, self.montreal) if f.serial_number == serial]
        return found[0] if found else None


def add_firewalls(engine: Engine) -> Firewalls:
    """HQ and Montreal belong to one tenant, the branch firewall to another."""
    acme, globex = uuid.uuid4(), uuid.uuid4()
    hq = Firewall(uuid.uuid4(), acme, HQ_SERIAL)
    montreal = Firewall(uuid.uuid4(), acme, MONTREAL_SERIAL)
    branch = Firewall(uuid.uuid4(), globex, BRANCH_SERIAL)
    with engine.begin() as conn:
        conn.execute(
            insert(Tenant),
            [
                {"id": acme, "name": "Acme", "domain": f"{acme.hex}.example"},
                {"id": globex, "name": "Globex", "domain": f"{globex.hex}.example"},
            ],
        )
        conn.execute(
            insert(FirewallDevice),
            [
                {
                    "id": hq.device_id,
                    "tenant_id": acme,
                    "serial_number": HQ_SERIAL,
                    "management_ip": "192.168.1.1",
                },
                {
                    "id": montreal.device_id,
                    "tenant_id": acme,
                    "serial_number": MONTREAL_SERIAL,
                    "management_ip": "10.20.0.1",
                },
                {
                    "id": branch.device_id,
                    "tenant_id": globex,
                    "serial_number": BRANCH_SERIAL,
                    "management_ip": "198.51.100.1",
                },
            ],
        )
    return Firewalls(hq=hq, branch=branch, montreal=montreal)


def triaged(
    raw: bytes,
    directory: DeviceDirectory,
    *,
    uid: int = 1,
    uidvalidity: int = 1,
    received_at: datetime | None = None,
) -> TriagedMessage:
    return triage(
        identify(raw, uidvalidity=uidvalidity, uid=uid),
        raw,
        received_at=received_at,
        directory=directory,
        now=datetime.now(UTC),
    )


def directory_of(engine: Engine) -> DeviceDirectory:
    return load_device_directory(engine)


def _rows(engine: Engine, model: Any, *order: Any) -> list[dict[str, Any]]:
    table = model.__table__
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(select(table).order_by(*order))]


def stored_alerts(engine: Engine) -> list[dict[str, Any]]:
    table = FirewallAlert.__table__
    return _rows(engine, FirewallAlert, table.c.created_at, table.c.id)


def stored_reviews(engine: Engine) -> list[dict[str, Any]]:
    return _rows(engine, MailReviewItem, MailReviewItem.__table__.c.created_at)


def ledger(engine: Engine) -> list[dict[str, Any]]:
    return _rows(engine, MailLedgerEntry, MailLedgerEntry.__table__.c.id)


def storms(engine: Engine) -> list[dict[str, Any]]:
    return _rows(engine, AlertStorm, AlertStorm.__table__.c.first_seen_at)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
