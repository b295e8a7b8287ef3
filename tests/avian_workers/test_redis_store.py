"""The platform's Redis key names, under the configured prefix."""

from datetime import date
from uuid import UUID

from avian_workers.redis_store import RedisKeys

DEVICE = UUID("6f1c2d9e-3b7a-4c55-9e0d-1a2b3c4d5e6f")
OTHER = UUID("00000000-0000-4000-8000-000000000001")


def test_key_names_are_the_contracts_under_the_prefix() -> None:
    keys = RedisKeys("test:")
    assert keys.polling(DEVICE) == f"test:firewall:polling:{DEVICE}"
    assert keys.daily_snapshot(DEVICE, date(2025, 1, 9)) == (
        f"test:firewall:polling:{DEVICE}:daily:2025-01-09"
    )
    assert (
        keys.lock("metrics-day", "2025-01-09") == "test:avian-workers:lock:metrics-day:2025-01-09"
    )


def test_daily_snapshots_in_bulk_name_each_device_as_daily_snapshot_does() -> None:
    keys = RedisKeys("test:")
    day = date(2025, 1, 9)
    assert keys.daily_snapshots([str(DEVICE), OTHER], day) == [
        keys.daily_snapshot(DEVICE, day),
        keys.daily_snapshot(OTHER, day),
    ]


def test_production_keys_have_no_prefix() -> None:
    assert RedisKeys().polling(DEVICE) == f"firewall:polling:{DEVICE}"
