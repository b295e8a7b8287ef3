"""Values of the Microsoft simulator: .NET-tick timestamps and stable pseudo-random ids."""

from __future__ import annotations

import functools
import hashlib
import re
import time
from datetime import UTC, datetime
from typing import Any

JsonObject = dict[str, Any]

TICKS_PER_SECOND = 10_000_000  # .NET ticks: Microsoft's timestamps carry 7 fractional digits
MINUTE = 60 * TICKS_PER_SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR

FIRST_NAMES = ("Alex", "Sam", "Jordan", "Taylor", "Morgan", "Casey", "Riley", "Avery", "Quinn")


def format_ticks(ticks: int) -> str:
    """A Microsoft timestamp with seven fractional digits: 2024-12-09T10:00:00.1234567Z."""
    seconds, fraction = divmod(ticks, TICKS_PER_SECOND)
    day, second = divmod(seconds, 86_400)
    hour, second = divmod(second, 3_600)
    minute, second = divmod(second, 60)
    return f"{_day_text(day)}T{hour:02d}:{minute:02d}:{second:02d}.{fraction:07d}Z"


def format_seconds(ticks: int) -> str:
    """A Defender export timestamp: 2020-12-30 14:17:26."""
    seconds = ticks // TICKS_PER_SECOND
    day, second = divmod(seconds, 86_400)
    hour, second = divmod(second, 3_600)
    minute, second = divmod(second, 60)
    return f"{_day_text(day)} {hour:02d}:{minute:02d}:{second:02d}"


@functools.lru_cache(maxsize=4096)
def _day_text(day: int) -> str:
    """YYYY-MM-DD of a day since the Unix epoch (formatting dates dominated page building)."""
    return time.strftime("%Y-%m-%d", time.gmtime(day * 86_400))


_ODATA_DATETIME = re.compile(
    r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2})?)(?:\.(\d{1,7}))?(Z|[+-]\d{2}:\d{2})$"
)


def parse_datetime_ticks(text: str) -> int:
    """Ticks since the Unix epoch of an OData DateTimeOffset literal (up to 7 digits)."""
    match = _ODATA_DATETIME.match(text.strip())
    if not match:
        raise ValueError(f"not an OData datetime: {text!r}")
    whole, fraction, zone = match.groups()
    parsed = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    return int(parsed.timestamp()) * TICKS_PER_SECOND + int((fraction or "").ljust(7, "0"))


def datetime_ticks(moment: datetime) -> int:
    """Ticks of an aware datetime (microsecond precision)."""
    if moment.tzinfo is None:
        raise ValueError("datetime must be timezone-aware")
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * TICKS_PER_SECOND + delta.microseconds * 10


def ticks_of(moment: datetime | str) -> int:
    """Ticks of an aware datetime or of an OData datetime literal."""
    return parse_datetime_ticks(moment) if isinstance(moment, str) else datetime_ticks(moment)


def now_ticks() -> int:
    return int(time.time() * TICKS_PER_SECOND)


def digest(*parts: object, size: int = 8) -> bytes:
    return hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=size).digest()


def number(*parts: object) -> int:
    return int.from_bytes(digest(*parts))


def guid(*parts: object) -> str:
    return uuid4_text(digest(*parts, size=16))


def uuid4_text(raw: bytes) -> str:
    """A version-4 GUID string from 16 bytes (uuid.UUID is slow for bulk data)."""
    b = bytearray(raw)
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    x = b.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:32]}"


def pick[T](options: tuple[T, ...], *parts: object) -> T:
    return options[number(*parts) % len(options)]
