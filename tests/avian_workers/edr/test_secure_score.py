"""Microsoft Secure Score JSON as the row kept per tenant and day."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from avian_workers.edr.normalize import RecordError
from avian_workers.edr.secure_score import SecureScoreRecord, secure_score_record


def secure_score(**overrides: Any) -> dict[str, Any]:
    """One item of Graph `GET /v1.0/security/secureScores`."""
    score: dict[str, Any] = {
        "id": "00000000-0000-0000-0000-000000000001_2024-12-09",
        "azureTenantId": "00000000-0000-0000-0000-000000000001",
        "activeUserCount": 42,
        "createdDateTime": "2024-12-09T00:00:00Z",
        "currentScore": 101.456,
        "licensedUserCount": 50,
        "maxScore": 250.0,
        "enabledServices": ["HasExchange"],
        "controlScores": [],
    }
    score.update(overrides)
    return score


def test_secure_score_keeps_the_day_scores_and_user_counts() -> None:
    assert secure_score_record(secure_score()) == SecureScoreRecord(
        score_date=date(2024, 12, 9),
        current_score=Decimal("101.46"),
        max_score=Decimal("250.00"),
        active_user_count=42,
        licensed_user_count=50,
        created_at=datetime(2024, 12, 9, tzinfo=UTC),
    )


def test_secure_score_without_optional_counts_keeps_them_unknown() -> None:
    record = secure_score_record(
        secure_score(maxScore=None, activeUserCount=None, licensedUserCount=None)
    )
    assert (record.max_score, record.active_user_count, record.licensed_user_count) == (
        None,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("currentScore", None, "is missing"),
        ("currentScore", "high", "must be a number"),
        ("currentScore", -1, "must be between"),
        ("createdDateTime", None, "is missing"),
        ("activeUserCount", 4.5, "non-negative integer"),
        ("licensedUserCount", True, "non-negative integer"),
    ],
)
def test_a_bad_secure_score_names_the_field(field: str, value: object, problem: str) -> None:
    with pytest.raises(RecordError, match=problem) as raised:
        secure_score_record(secure_score(**{field: value}))
    assert raised.value.field == field
