"""Builders for what the platform writes: firewalls, posture rows and the poller's Redis keys."""

import json
import uuid
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import redis
from sqlalchemy import Engine, insert, literal_column, select, text

from avian_workers.db.models import (
    FirewallDevice,
    FirewallMetricsRollup,
    FirewallSecurityPosture,
    Tenant,
)
from avian_workers.redis_store import RedisKeys

SECURITY_FIELDS = {
    "ips": "ips_daily_blocks",
    "gav": "gav_daily_blocks",
    "atp": "atp_daily_verdicts",
    "botnet": "botnet_daily_blocks",
    "content_filter": "content_filter_daily_blocks",
}


def add_devices(engine: Engine, count: int = 1, *, status: str = "active") -> list[uuid.UUID]:
    """`count` firewalls of a fresh tenant, ids in ascending order."""
    tenant_id = uuid.uuid4()
    device_ids = sorted(uuid.uuid4() for _ in range(count))
    with engine.begin() as conn:
        conn.execute(
            insert(Tenant).values(id=tenant_id, name="Acme", domain=f"{tenant_id.hex}.example")
        )
        conn.execute(
            insert(FirewallDevice),
            [
                {
                    "id": device_id,
                    "tenant_id": tenant_id,
                    "management_ip": "192.0.2.1",
                    "serial_number": device_id.hex[:12].upper(),
                    "status": status,
                }
                for device_id in device_ids
            ],
        )
    return device_ids


def set_status(engine: Engine, device_id: uuid.UUID, status: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE firewall_devices SET status = :status WHERE id = :id"),
            {"status": status, "id": device_id},
        )


def add_posture(
    engine: Engine, device_id: uuid.UUID, taken_at: datetime, **counters: int | None
) -> None:
    """One posture row; counters by short name (ips, gav, atp, botnet, content_filter)."""
    values: dict[str, Any] = {SECURITY_FIELDS[name]: value for name, value in counters.items()}
    with engine.begin() as conn:
        conn.execute(
            insert(FirewallSecurityPosture).values(
                device_id=device_id, timestamp=taken_at, ips_enabled=True, **values
            )
        )


def redis_counters(
    *,
    ips: int = 0,
    gav: int = 0,
    atp: int = 0,
    botnet: int = 0,
    content_filter: int = 0,
    blocked_connections: int = 0,
    **optional: Any,
) -> dict[str, Any]:
    """The poller's counter object; `bandwidthTotalMb`/`activeSessionsCount` as keywords."""
    return {
        "ipsBlocks": ips,
        "gavBlocks": gav,
        "dpiSslBlocks": 0,
        "atpVerdicts": atp,
        "appControlBlocks": 0,
        "botnetBlocks": botnet,
        "contentFilterBlocks": content_filter,
        "blockedConnections": blocked_connections,
        **optional,
    }


def put_snapshot(
    client: redis.Redis, keys: RedisKeys, device_id: uuid.UUID, day: date, value: Any
) -> None:
    """The daily snapshot key; a dict is stored as JSON, bytes/str exactly as given."""
    raw = json.dumps(value) if isinstance(value, dict) else value
    client.set(keys.daily_snapshot(device_id, day), raw, ex=7 * 86400)


def put_live(
    client: redis.Redis,
    keys: RedisKeys,
    device_id: uuid.UUID,
    last_poll_time: str,
    counters: dict[str, Any],
) -> None:
    document = {
        "deviceId": str(device_id),
        "lastPollTime": last_poll_time,
        "lastCounters": counters,
        "lastStatus": {},
        "lastSecurityFeatures": {},
    }
    client.set(keys.polling(device_id), json.dumps(document), ex=86400)


def stored_rollups(engine: Engine, *, with_identity: bool = False) -> list[dict[str, Any]]:
    """Every rollup row ordered by device and date; `with_identity` adds id, created_at, xmin."""
    table = FirewallMetricsRollup.__table__
    columns = [c for c in table.c if with_identity or c.name not in {"id", "created_at"}]
    extra = [literal_column("xmin::text").label("row_version")] if with_identity else []
    with engine.connect() as conn:
        rows = conn.execute(
            select(*columns, *extra).order_by(table.c.device_id, table.c.date)
        ).mappings()
        return [dict(r) for r in rows]


def metrics_of(rows: Sequence[dict[str, Any]], device_id: uuid.UUID, day: date) -> dict[str, Any]:
    """The metric columns of one stored row."""
    (found,) = [r for r in rows if r["device_id"] == device_id and r["date"] == day]
    return {k: v for k, v in found.items() if k not in {"id", "device_id", "date", "created_at"}}
