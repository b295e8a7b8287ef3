"""The platform's EDR posture score (CONTRACT.md, edr_posture_scores), computed from counts.

score = 30% device risk     100 - mean risk score of the devices that have one
      + 25% active alerts   100 * exp(-w / 10), w = 1.0 * high + 0.5 * medium + 0.2 * low
      + 25% vulnerabilities 100 * exp(-n / 20), n = CVEs with CVSS >= 7.0
      + 20% compliance      compliant / total * 100
rounded half up to an integer (as the platform's JavaScript `Math.round`), clamped to 0..100.

Edge cases the contract leaves open, decided the way the formula already treats zero alerts and
zero vulnerabilities (a full 100): no data is no evidence of a problem.
- No device with a risk score: the device-risk part is 100. Devices without a Defender risk
  score (Intune-only) still count in `device_count` but not in the mean.
- No compliance data: the compliance part is 100.
- A 'critical' alert (not a Graph severity today) weighs like 'high'; the formula has no
  heavier term.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

__all__ = [
    "HIGH_RISK_SCORE",
    "PostureComponents",
    "PostureInputs",
    "PostureScore",
    "is_active_alert",
    "is_compliant_state",
    "is_critical_vulnerability",
    "is_high_risk",
    "posture_components",
    "posture_score",
]

HIGH_RISK_SCORE: Final = 70
CRITICAL_CVSS: Final = Decimal("7.0")
_RESOLVED_ALERT_STATUSES: Final = frozenset({"resolved"})

# Weights in percent, kept as integers so the weighted sum is exact where the parts are.
_DEVICE_RISK_WEIGHT: Final = 30
_ALERT_WEIGHT: Final = 25
_VULNERABILITY_WEIGHT: Final = 25
_COMPLIANCE_WEIGHT: Final = 20


def is_active_alert(status: str | None) -> bool:
    """Whether an alert counts as active: any status but 'resolved'.

    'new', 'inProgress', 'unknown' and a missing status are all active: an alert nobody has
    confirmed resolved still needs someone.
    """
    return status is None or status.strip().casefold() not in _RESOLVED_ALERT_STATUSES


def is_high_risk(risk_score: int | None) -> bool:
    return risk_score is not None and risk_score >= HIGH_RISK_SCORE


def is_critical_vulnerability(cvss_score: Decimal | None) -> bool:
    """The contract's 'critical' for the posture: CVSS >= 7.0 (which includes NVD 'High')."""
    return cvss_score is not None and cvss_score >= CRITICAL_CVSS


def is_compliant_state(compliance_state: str | None) -> bool:
    """Only Intune's 'compliant' counts; 'inGracePeriod', 'unknown' and the rest do not."""
    return compliance_state is not None and compliance_state.strip().casefold() == "compliant"


@dataclass(frozen=True, slots=True)
class PostureInputs:
    """What the score is computed from, for one tenant.

    `risk_scores` has one entry per device, None where the device has no risk score. Alert
    counts are of active alerts by contract severity word; `total_compliance_count` counts the
    devices that have a compliance state, `compliant_count` those in 'compliant'.
    """

    risk_scores: Sequence[int | None] = ()
    high_alert_count: int = 0
    medium_alert_count: int = 0
    low_alert_count: int = 0
    critical_alert_count: int = 0
    critical_vulnerability_count: int = 0
    compliant_count: int = 0
    total_compliance_count: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "risk_scores", tuple(self.risk_scores))
        for name in (
            "high_alert_count",
            "medium_alert_count",
            "low_alert_count",
            "critical_alert_count",
            "critical_vulnerability_count",
            "compliant_count",
            "total_compliance_count",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.compliant_count > self.total_compliance_count:
            raise ValueError(
                f"compliant_count {self.compliant_count} exceeds "
                f"total_compliance_count {self.total_compliance_count}"
            )
        for score in self.risk_scores:
            if score is not None and not 0 <= score <= 100:
                raise ValueError(f"risk scores must be 0..100, got {score}")

    @property
    def active_alert_count(self) -> int:
        return (
            self.critical_alert_count
            + self.high_alert_count
            + self.medium_alert_count
            + self.low_alert_count
        )


@dataclass(frozen=True, slots=True)
class PostureComponents:
    """The four parts of the score, each 0..100 before weighting."""

    device_risk: float
    active_alerts: float
    vulnerabilities: float
    compliance: float


@dataclass(frozen=True, slots=True)
class PostureScore:
    """One `edr_posture_scores` row (without tenant and time, which the caller adds)."""

    score: int
    device_count: int
    high_risk_device_count: int
    active_alert_count: int
    critical_vulnerability_count: int
    non_compliant_device_count: int


def posture_components(inputs: PostureInputs) -> PostureComponents:
    scored = [score for score in inputs.risk_scores if score is not None]
    device_risk = 100 - sum(scored) / len(scored) if scored else 100.0
    # w = 1.0*high + 0.5*medium + 0.2*low, in tenths so the sum is an exact integer.
    alert_weight_tenths = (
        10 * (inputs.critical_alert_count + inputs.high_alert_count)
        + 5 * inputs.medium_alert_count
        + 2 * inputs.low_alert_count
    )
    compliance = (
        inputs.compliant_count / inputs.total_compliance_count * 100
        if inputs.total_compliance_count
        else 100.0
    )
    return PostureComponents(
        device_risk=device_risk,
        active_alerts=100 * math.exp(-alert_weight_tenths / 100),
        vulnerabilities=100 * math.exp(-inputs.critical_vulnerability_count / 20),
        compliance=compliance,
    )


def posture_score(inputs: PostureInputs) -> PostureScore:
    parts = posture_components(inputs)
    weighted = (
        _DEVICE_RISK_WEIGHT * parts.device_risk
        + _ALERT_WEIGHT * parts.active_alerts
        + _VULNERABILITY_WEIGHT * parts.vulnerabilities
        + _COMPLIANCE_WEIGHT * parts.compliance
    ) / 100
    return PostureScore(
        score=min(100, max(0, math.floor(weighted + 0.5))),
        device_count=len(inputs.risk_scores),
        high_risk_device_count=sum(1 for score in inputs.risk_scores if is_high_risk(score)),
        active_alert_count=inputs.active_alert_count,
        critical_vulnerability_count=inputs.critical_vulnerability_count,
        non_compliant_device_count=inputs.total_compliance_count - inputs.compliant_count,
    )
