"""Redis: the connection and the platform's key names (CONTRACT.md), behind one optional prefix.

`REDIS_KEY_PREFIX` is empty in production, so the keys are exactly the platform's; tests and
shared development servers set it to keep runs apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

import redis

from avian_workers.settings import ConfigError, Settings


def connect(settings: Settings) -> redis.Redis:
    """A client for REDIS_URL with bounded connect and socket timeouts (bytes in, bytes out)."""
    if settings.redis_url is None:
        raise ConfigError("REDIS_URL: not set")
    return redis.Redis.from_url(
        settings.redis_url.get_secret_value(),
        socket_connect_timeout=settings.redis_socket_timeout_seconds,
        socket_timeout=settings.redis_socket_timeout_seconds,
        health_check_interval=30,
    )


class RedisKeys:
    """Key names of the platform's SonicWall poller, and the workers' own lock keys."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def polling(self, device_id: object) -> str:
        """Live state of one firewall: `firewall:polling:{device_id}`."""
        return f"{self.prefix}firewall:polling:{device_id}"

    def daily_snapshot(self, device_id: object, day: date) -> str:
        """Final counters of one UTC day: `firewall:polling:{device_id}:daily:{YYYY-MM-DD}`."""
        return f"{self.prefix}firewall:polling:{device_id}:daily:{day.isoformat()}"

    def daily_snapshots(self, device_ids: Iterable[object], day: date) -> list[str]:
        """daily_snapshot of each device, for one day (in bulk, the day formatted once)."""
        head, tail = f"{self.prefix}firewall:polling:", f":daily:{day.isoformat()}"
        return [f"{head}{device_id}{tail}" for device_id in device_ids]

    def lock(self, scope: str, name: object) -> str:
        """A workers' lock, e.g. scope `edr-tenant` and the tenant id."""
        return f"{self.prefix}avian-workers:lock:{scope}:{name}"

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisKeys:
        return cls(settings.redis_key_prefix)
