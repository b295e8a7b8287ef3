"""The platform's posture score: the contract formula on hand-computed tenants, and its edges."""

from __future__ import annotations

import math
from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from avian_workers.edr.posture import (
    PostureComponents,
    PostureInputs,
    PostureScore,
    is_active_alert,
    is_compliant_state,
    is_critical_vulnerability,
    is_high_risk,
    posture_components,
    posture_score,
)

# Each scenario's expected score is worked out by hand in its comment:
#   score = 0.30 * (100 - mean risk) + 0.25 * 100e^(-w/10) + 0.25 * 100e^(-n/20)
#         + 0.20 * compliant/total*100,   w = high + 0.5 medium + 0.2 low
SCENARIOS = [
    pytest.param(
        PostureInputs(),
        PostureScore(100, 0, 0, 0, 0, 0),
        # nothing known: 30 + 25 + 25 + 20 = 100
        id="empty-tenant",
    ),
    pytest.param(
        PostureInputs(
            risk_scores=[0, 30, 60, 90],
            high_alert_count=1,
            medium_alert_count=2,
            low_alert_count=5,
            critical_vulnerability_count=10,
            compliant_count=3,
            total_compliance_count=4,
        ),
        PostureScore(65, 4, 1, 8, 10, 1),
        # risk 100-45 = 55 -> 16.50; w = 1+1+1 = 3 -> 100e^-0.3 = 74.08 -> 18.52;
        # n = 10 -> 100e^-0.5 = 60.65 -> 15.16; 3/4 -> 75 -> 15.00; total 65.18 -> 65
        id="typical-tenant",
    ),
    pytest.param(
        PostureInputs(risk_scores=[0, 0, 10], compliant_count=10, total_compliance_count=10),
        PostureScore(99, 3, 0, 0, 0, 0),
        # risk 100-3.33 = 96.67 -> 29.00; 25 + 25 + 20 -> total 99.00 -> 99
        id="clean-tenant",
    ),
    pytest.param(
        PostureInputs(
            risk_scores=[90, 90, 90, 60],
            high_alert_count=8,
            medium_alert_count=4,
            low_alert_count=10,
            critical_vulnerability_count=40,
            compliant_count=1,
            total_compliance_count=4,
        ),
        PostureScore(21, 4, 3, 22, 40, 3),
        # risk 100-82.5 = 17.5 -> 5.25; w = 8+2+2 = 12 -> 100e^-1.2 = 30.12 -> 7.53;
        # n = 40 -> 100e^-2 = 13.53 -> 3.38; 1/4 -> 25 -> 5.00; total 21.16 -> 21
        id="compromised-tenant",
    ),
    pytest.param(
        PostureInputs(risk_scores=[None, None], compliant_count=1, total_compliance_count=2),
        PostureScore(90, 2, 0, 0, 0, 1),
        # no risk scores -> 30; 25 + 25; 1/2 -> 50 -> 10; total 90
        id="intune-only-tenant",
    ),
    pytest.param(
        PostureInputs(
            risk_scores=[100, 100],
            high_alert_count=100,
            critical_vulnerability_count=400,
            compliant_count=0,
            total_compliance_count=10,
        ),
        PostureScore(0, 2, 2, 100, 400, 10),
        # risk 0; 100e^-10 = 0.0045 -> 0.001; 100e^-20 -> 0.000; 0/10 -> 0; total 0.001 -> 0
        id="worst-tenant",
    ),
]


@pytest.mark.parametrize(("inputs", "expected"), SCENARIOS)
def test_posture_score_of_hand_computed_tenants(
    inputs: PostureInputs, expected: PostureScore
) -> None:
    assert posture_score(inputs) == expected


def test_device_risk_part_is_100_minus_the_mean_risk_score() -> None:
    parts = posture_components(PostureInputs(risk_scores=[10, 20, 60]))

    assert parts.device_risk == pytest.approx(70.0)  # mean 30


def test_devices_without_a_risk_score_count_but_do_not_dilute_the_mean() -> None:
    inputs = PostureInputs(risk_scores=[None, 90, None])

    assert posture_components(inputs).device_risk == pytest.approx(10.0)
    assert posture_score(inputs).device_count == 3


def test_tenant_without_scored_devices_gets_the_full_device_risk_part() -> None:
    assert posture_components(PostureInputs(risk_scores=[])).device_risk == 100.0


def test_alert_part_weighs_high_medium_and_low_as_the_contract_says() -> None:
    parts = posture_components(
        PostureInputs(high_alert_count=2, medium_alert_count=3, low_alert_count=4)
    )

    w = 1.0 * 2 + 0.5 * 3 + 0.2 * 4  # 4.3
    assert parts.active_alerts == pytest.approx(100 * math.exp(-w / 10))


def test_critical_alert_weighs_like_a_high_alert() -> None:
    critical = posture_components(PostureInputs(critical_alert_count=1))
    high = posture_components(PostureInputs(high_alert_count=1))

    assert critical.active_alerts == high.active_alerts == pytest.approx(90.4837418)


def test_vulnerability_part_decays_with_critical_cves() -> None:
    parts = posture_components(PostureInputs(critical_vulnerability_count=20))

    assert parts.vulnerabilities == pytest.approx(100 * math.exp(-1))


def test_compliance_part_is_the_compliant_share() -> None:
    parts = posture_components(PostureInputs(compliant_count=3, total_compliance_count=5))

    assert parts.compliance == pytest.approx(60.0)


def test_tenant_without_compliance_data_gets_the_full_compliance_part() -> None:
    assert posture_components(PostureInputs()).compliance == 100.0


def test_components_of_an_empty_tenant_are_all_full() -> None:
    assert posture_components(PostureInputs()) == PostureComponents(100.0, 100.0, 100.0, 100.0)


def test_score_rounds_half_up_like_the_platform() -> None:
    # risk 95 -> 28.5; 25 + 25; compliance 0/1 -> 0; total exactly 78.5
    inputs = PostureInputs(risk_scores=[5], compliant_count=0, total_compliance_count=1)

    assert posture_score(inputs).score == 79  # banker's rounding would give 78


@pytest.mark.parametrize(
    ("risk_score", "high_risk"), [(69, False), (70, True), (90, True), (None, False)]
)
def test_high_risk_starts_at_70(risk_score: int | None, high_risk: bool) -> None:
    assert is_high_risk(risk_score) is high_risk


@pytest.mark.parametrize(
    ("status", "active"),
    [
        ("new", True),
        ("inProgress", True),
        ("unknown", True),
        ("unknownFutureValue", True),
        (None, True),
        ("resolved", False),
        ("Resolved", False),
    ],
)
def test_every_alert_not_resolved_is_active(status: str | None, active: bool) -> None:
    assert is_active_alert(status) is active


@pytest.mark.parametrize(
    ("cvss", "critical"),
    [(Decimal("6.9"), False), (Decimal("7.0"), True), (Decimal("10.0"), True), (None, False)],
)
def test_critical_vulnerability_means_cvss_7_or_more(cvss: Decimal | None, critical: bool) -> None:
    assert is_critical_vulnerability(cvss) is critical


@pytest.mark.parametrize(
    ("state", "compliant"),
    [
        ("compliant", True),
        ("Compliant", True),
        ("noncompliant", False),
        ("inGracePeriod", False),
        ("unknown", False),
        (None, False),
    ],
)
def test_only_the_compliant_state_counts_as_compliant(state: str | None, compliant: bool) -> None:
    assert is_compliant_state(state) is compliant


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("high_alert_count", -1),
        ("medium_alert_count", -1),
        ("low_alert_count", -1),
        ("critical_alert_count", -1),
        ("critical_vulnerability_count", -1),
        ("total_compliance_count", -1),
    ],
)
def test_inputs_refuse_negative_counts(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=field):
        PostureInputs(**{field: value})  # type: ignore[arg-type]


def test_inputs_refuse_more_compliant_devices_than_devices_with_data() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        PostureInputs(compliant_count=3, total_compliance_count=2)


@pytest.mark.parametrize("risk_score", [-1, 101])
def test_inputs_refuse_risk_scores_outside_0_to_100(risk_score: int) -> None:
    with pytest.raises(ValueError, match=r"0\.\.100"):
        PostureInputs(risk_scores=[risk_score])


counts = st.integers(min_value=0, max_value=10_000)
tenants = st.builds(
    PostureInputs,
    risk_scores=st.lists(st.one_of(st.none(), st.integers(0, 100)), max_size=50),
    high_alert_count=counts,
    medium_alert_count=counts,
    low_alert_count=counts,
    critical_vulnerability_count=counts,
)


@given(tenants)
def test_score_is_always_an_integer_from_0_to_100(inputs: PostureInputs) -> None:
    assert 0 <= posture_score(inputs).score <= 100


@given(tenants, st.sampled_from(["high_alert_count", "medium_alert_count", "low_alert_count"]))
def test_one_more_active_alert_never_raises_the_score(inputs: PostureInputs, field: str) -> None:
    worse = replace(inputs, **{field: getattr(inputs, field) + 1})

    assert posture_score(worse).score <= posture_score(inputs).score


@given(tenants)
def test_one_more_critical_cve_never_raises_the_score(inputs: PostureInputs) -> None:
    worse = replace(inputs, critical_vulnerability_count=inputs.critical_vulnerability_count + 1)

    assert posture_score(worse).score <= posture_score(inputs).score
