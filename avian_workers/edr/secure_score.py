"""Microsoft Secure Score (Graph `security/secureScores`) as one row of `edr_secure_scores`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from avian_workers.edr._fields import FieldReader

__all__ = ["SecureScoreRecord", "secure_score_record"]

_HUNDREDTH = Decimal("0.01")
_LARGEST_SCORE = Decimal("99999999.99")  # numeric(10, 2)


@dataclass(frozen=True, slots=True)
class SecureScoreRecord:
    """One day's Secure Score of a tenant; `score_date` is the UTC day Microsoft computed it."""

    score_date: date
    current_score: Decimal
    max_score: Decimal | None
    active_user_count: int | None
    licensed_user_count: int | None
    created_at: datetime


def secure_score_record(raw: Mapping[str, object]) -> SecureScoreRecord:
    """A `secureScore` entity as a record; raises RecordError naming a missing or bad field."""
    fields = FieldReader(raw, "graph secure score")
    created_at = fields.required_timestamp("createdDateTime")
    current = _score(fields, "currentScore")
    if current is None:
        raise fields.error("currentScore", "is missing")
    return SecureScoreRecord(
        score_date=created_at.date(),
        current_score=current,
        max_score=_score(fields, "maxScore"),
        active_user_count=_count(fields, "activeUserCount"),
        licensed_user_count=_count(fields, "licensedUserCount"),
        created_at=created_at,
    )


def _score(fields: FieldReader, name: str) -> Decimal | None:
    value = fields.raw(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise fields.error(name, f"must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise fields.error(name, "must be a finite number")
    try:
        number = Decimal(str(value)).quantize(_HUNDREDTH, rounding=ROUND_HALF_UP)
    except InvalidOperation:
        raise fields.error(name, f"must be a number, got {value!r}") from None
    if not 0 <= number <= _LARGEST_SCORE:
        raise fields.error(name, f"must be between 0 and {_LARGEST_SCORE}, got {value!r}")
    return number


def _count(fields: FieldReader, name: str) -> int | None:
    value = fields.raw(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        raise fields.error(name, f"must be a non-negative integer, got {value!r}")
    return value
