"""Microsoft JSON into EDR records: field mapping, contract words, and errors that name fields."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from avian_workers.edr.normalize import (
    ALERT_SEVERITIES,
    RISK_SCORES,
    AlertRecord,
    ComplianceRecord,
    DeviceEvidence,
    DeviceRecord,
    DeviceVulnerabilityLink,
    FailedRule,
    RecordError,
    VulnerabilityRecord,
    alert_record,
    compliance_record,
    defender_device,
    intune_device,
    parse_timestamp,
    policy_device_status,
    vulnerability_finding,
)
from avian_workers.edr.posture import HIGH_RISK_SCORE
from tests.avian_workers.edr.payloads import (
    AAD_ID,
    INTUNE_ID,
    MACHINE_ID,
    POLICY_ID,
    defender_machine,
    device_evidence,
    graph_alert,
    managed_device,
    policy_device_status_item,
    vulnerability_row,
)

CONTRACT_SEVERITIES = {"low", "medium", "high", "critical"}


def utc(text: str) -> datetime:
    """An exact expected instant, written as ISO text in UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- Timestamps --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-12-09T10:00:00Z", utc("2024-12-09T10:00:00")),
        ("2024-12-09T10:00:00.1234567Z", utc("2024-12-09T10:00:00.123456")),
        ("2024-12-09T12:00:00+02:00", utc("2024-12-09T10:00:00")),
        ("2020-11-03 10:13:34.8476880", utc("2020-11-03T10:13:34.847688")),
        ("2020-12-30 14:17:26", utc("2020-12-30T14:17:26")),
    ],
    ids=["graph-z", "graph-7-digits", "offset", "export-no-zone-7-digits", "export-no-zone"],
)
def test_microsoft_timestamps_parse_to_aware_utc(text: str, expected: datetime) -> None:
    parsed = parse_timestamp(text)

    assert parsed == expected
    assert parsed.tzinfo is UTC


def test_seventh_fraction_digit_is_truncated_never_rounded_up() -> None:
    # Rounding .9999999 up would move a watermark past records stamped in that second.
    assert parse_timestamp("2024-12-09T10:00:59.9999999Z") == utc("2024-12-09T10:00:59.999999")


# --- Defender machines -------------------------------------------------------------------------


def test_defender_machine_becomes_a_device_record() -> None:
    assert defender_device(defender_machine()) == DeviceRecord(
        microsoft_device_id=MACHINE_ID,
        device_name="pc01.contoso.local",
        operating_system="Windows11",
        os_version="10.0.22631.4602",
        primary_user=None,
        defender_health_status="Active",
        risk_score=60,
        exposure_level="Low",
        intune_compliance_state=None,
        intune_enrollment_status=None,
        last_seen_at=utc("2024-12-09T09:58:11.713036"),
        defender_machine_id=MACHINE_ID,
        intune_device_id=None,
        aad_device_id=AAD_ID,
        hostname="pc01.contoso.local",
    )


@pytest.mark.parametrize(
    ("word", "score"),
    [("None", 0), ("Informational", 10), ("Low", 30), ("Medium", 60), ("High", 90), ("high", 90)],
)
def test_defender_risk_word_maps_to_documented_score(word: str, score: int) -> None:
    assert defender_device(defender_machine(riskScore=word)).risk_score == score


def test_only_high_defender_risk_crosses_the_contract_high_risk_line() -> None:
    over_the_line = {word for word, score in RISK_SCORES.items() if score >= HIGH_RISK_SCORE}

    assert over_the_line == {"high"}


@pytest.mark.parametrize("absent", [None, "", "missing"])
def test_defender_risk_score_absent_is_unknown_not_zero(absent: str | None) -> None:
    machine = defender_machine(riskScore=absent)
    if absent == "missing":
        del machine["riskScore"]

    assert defender_device(machine).risk_score is None


def test_unknown_defender_risk_word_is_an_error_naming_the_field() -> None:
    with pytest.raises(RecordError) as caught:
        defender_device(defender_machine(riskScore="Severe"))

    assert caught.value.field == "riskScore"
    assert caught.value.record_id == MACHINE_ID


def test_defender_machine_without_azure_ad_id_has_none() -> None:
    assert defender_device(defender_machine(aadDeviceId=None)).aad_device_id is None


def test_defender_azure_ad_id_is_canonical_lower_case() -> None:
    record = defender_device(defender_machine(aadDeviceId=AAD_ID.upper()))

    assert record.aad_device_id == AAD_ID


def test_defender_version_is_used_when_os_version_is_absent() -> None:
    machine = defender_machine()
    del machine["osVersion"]

    assert defender_device(machine).os_version == "23H2"


def test_defender_host_name_key_is_lower_case_without_trailing_dot() -> None:
    record = defender_device(defender_machine(computerDnsName="PC01.Contoso.Local."))

    assert record.device_name == "PC01.Contoso.Local."
    assert record.hostname == "pc01.contoso.local"


@pytest.mark.parametrize("field", ["id", "computerDnsName"])
def test_defender_machine_missing_a_required_field_is_an_error_naming_it(field: str) -> None:
    machine = defender_machine()
    del machine[field]

    with pytest.raises(RecordError) as caught:
        defender_device(machine)

    assert caught.value.field == field


# --- Intune managed devices --------------------------------------------------------------------


def test_intune_managed_device_becomes_a_device_record() -> None:
    assert intune_device(managed_device()) == DeviceRecord(
        microsoft_device_id=INTUNE_ID,
        device_name="PC01",
        operating_system="Windows",
        os_version="10.0.22631.4602",
        primary_user="ada@contoso.com",
        defender_health_status=None,
        risk_score=None,
        exposure_level=None,
        intune_compliance_state="noncompliant",
        intune_enrollment_status="managed",
        last_seen_at=utc("2024-12-09T09:30:00"),
        defender_machine_id=None,
        intune_device_id=INTUNE_ID,
        aad_device_id=AAD_ID,
        hostname="pc01",
    )


def test_intune_all_zero_azure_ad_id_means_no_azure_ad_device() -> None:
    record = intune_device(managed_device(azureADDeviceId="00000000-0000-0000-0000-000000000000"))

    assert record.aad_device_id is None


def test_intune_never_synced_sentinel_is_an_unknown_last_seen() -> None:
    record = intune_device(managed_device(lastSyncDateTime="0001-01-01T00:00:00Z"))

    assert record.last_seen_at is None


def test_intune_blank_user_principal_name_is_no_primary_user() -> None:
    assert intune_device(managed_device(userPrincipalName="")).primary_user is None


def test_intune_device_without_compliance_state_is_an_error_naming_it() -> None:
    with pytest.raises(RecordError) as caught:
        intune_device(managed_device(complianceState=None))

    assert caught.value.field == "complianceState"


# --- Bad input in general ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"computerDnsName": "x" * 256}, "computerDnsName"),
        ({"osPlatform": "x" * 101}, "osPlatform"),
        ({"healthStatus": "x" * 51}, "healthStatus"),
        ({"computerDnsName": 42}, "computerDnsName"),
        ({"aadDeviceId": "not-a-guid"}, "aadDeviceId"),
        ({"lastSeen": "yesterday"}, "lastSeen"),
    ],
    ids=["name-too-long", "os-too-long", "word-too-long", "not-a-string", "bad-guid", "bad-time"],
)
def test_bad_field_is_an_error_naming_it(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(RecordError) as caught:
        defender_device(defender_machine(**overrides))

    assert caught.value.field == field


def test_record_that_is_not_a_json_object_is_an_error() -> None:
    with pytest.raises(RecordError, match="must be a JSON object"):
        defender_device(["not", "an", "object"])  # type: ignore[arg-type]


def test_record_error_message_names_kind_record_and_field() -> None:
    with pytest.raises(RecordError) as caught:
        intune_device(managed_device(complianceState=None))

    assert str(caught.value) == (
        f"intune managed device {INTUNE_ID!r}: field 'complianceState' is missing"
    )


def test_record_error_survives_pickling_with_its_details() -> None:
    error = RecordError("graph alert", "severity", "is missing", "alert-1")

    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object, round trip

    assert (copy.kind, copy.field, copy.problem, copy.record_id) == (
        "graph alert",
        "severity",
        "is missing",
        "alert-1",
    )
    assert str(copy) == str(error)


def test_record_error_is_a_value_error() -> None:
    assert issubclass(RecordError, ValueError)


# --- Alerts ------------------------------------------------------------------------------------


def test_graph_alert_becomes_an_alert_record() -> None:
    assert alert_record(graph_alert()) == AlertRecord(
        microsoft_alert_id="da637551227677560813_-961444813",
        severity="high",
        threat_type="Execution",
        threat_name="Suspicious PowerShell command line",
        status="new",
        description="A suspicious PowerShell activity was observed on the machine.",
        detected_at=utc("2024-12-09T09:49:30.500000"),
        last_updated_at=utc("2024-12-09T09:55:41.987654"),
        device_evidence=(
            DeviceEvidence(
                mde_device_id=MACHINE_ID,
                azure_ad_device_id=AAD_ID,
                device_dns_name="pc01.contoso.local",
            ),
        ),
    )


@pytest.mark.parametrize(
    ("microsoft", "contract"),
    [
        ("informational", "low"),
        ("low", "low"),
        ("medium", "medium"),
        ("high", "high"),
        ("High", "high"),
        ("unknown", "medium"),
        ("unknownFutureValue", "medium"),
    ],
)
def test_alert_severity_maps_to_contract_word(microsoft: str, contract: str) -> None:
    assert alert_record(graph_alert(severity=microsoft)).severity == contract


def test_every_alert_severity_lands_on_a_contract_word() -> None:
    assert set(ALERT_SEVERITIES.values()) <= CONTRACT_SEVERITIES


@pytest.mark.parametrize("severity", ["severe", None])
def test_unrecognised_or_missing_alert_severity_is_an_error(severity: str | None) -> None:
    with pytest.raises(RecordError) as caught:
        alert_record(graph_alert(severity=severity))

    assert caught.value.field == "severity"


def test_alert_detected_at_falls_back_to_creation_when_first_activity_is_null() -> None:
    record = alert_record(graph_alert(firstActivityDateTime=None))

    assert record.detected_at == utc("2024-12-09T09:51:02.123456")


@pytest.mark.parametrize("field", ["id", "lastUpdateDateTime"])
def test_alert_missing_a_required_field_is_an_error_naming_it(field: str) -> None:
    alert = graph_alert()
    del alert[field]

    with pytest.raises(RecordError) as caught:
        alert_record(alert)

    assert caught.value.field == field


@pytest.mark.parametrize("evidence", [None, []])
def test_alert_without_evidence_has_no_device_evidence(evidence: list[Any] | None) -> None:
    assert alert_record(graph_alert(evidence=evidence)).device_evidence == ()


def test_alert_keeps_every_device_evidence_in_order() -> None:
    second = device_evidence(mdeDeviceId=None, azureAdDeviceId=None, deviceDnsName="srv02")
    record = alert_record(graph_alert(evidence=[device_evidence(), second]))

    assert [item.device_dns_name for item in record.device_evidence] == [
        "pc01.contoso.local",
        "srv02",
    ]


def test_device_evidence_without_any_identifier_is_dropped() -> None:
    blank = device_evidence(mdeDeviceId=None, azureAdDeviceId=None, deviceDnsName=None)

    assert alert_record(graph_alert(evidence=[blank])).device_evidence == ()


def test_evidence_that_is_not_a_list_is_an_error() -> None:
    with pytest.raises(RecordError) as caught:
        alert_record(graph_alert(evidence={"mdeDeviceId": MACHINE_ID}))

    assert caught.value.field == "evidence"


def test_bad_evidence_field_error_names_its_position() -> None:
    evidence = [device_evidence(), device_evidence(azureAdDeviceId="nope")]

    with pytest.raises(RecordError) as caught:
        alert_record(graph_alert(evidence=evidence))

    assert caught.value.field == "evidence[1].azureAdDeviceId"


# --- Vulnerabilities ---------------------------------------------------------------------------


def test_vulnerability_row_becomes_a_cve_and_a_machine_link() -> None:
    finding = vulnerability_finding(vulnerability_row())

    assert finding is not None
    assert finding.vulnerability == VulnerabilityRecord(
        cve_id="CVE-2024-12053",
        severity="high",
        cvss_score=Decimal("8.8"),
        exploitability="ExploitIsPublic",
        description=None,
    )
    assert finding.link == DeviceVulnerabilityLink(
        machine_id=MACHINE_ID,
        cve_id="CVE-2024-12053",
        detected_at=utc("2024-12-04T10:13:34.847688"),
    )


def test_vulnerability_row_with_short_field_names_is_read_too() -> None:
    row = vulnerability_row(machineId=MACHINE_ID, severity="Critical", description="Heap bug")
    del row["deviceId"], row["vulnerabilitySeverityLevel"]

    finding = vulnerability_finding(row)

    assert finding is not None
    assert (finding.link.machine_id, finding.vulnerability.severity) == (MACHINE_ID, "critical")
    assert finding.vulnerability.description == "Heap bug"


def test_software_row_without_a_cve_is_not_a_finding() -> None:
    row = vulnerability_row(cveId=None, vulnerabilitySeverityLevel=None, cvssScore=None)

    assert vulnerability_finding(row) is None


@pytest.mark.parametrize(
    ("microsoft", "contract"),
    [("Low", "low"), ("Medium", "medium"), ("High", "high"), ("Critical", "critical")],
)
def test_vulnerability_severity_is_the_lower_case_contract_word(
    microsoft: str, contract: str
) -> None:
    finding = vulnerability_finding(vulnerability_row(vulnerabilitySeverityLevel=microsoft))

    assert finding is not None
    assert finding.vulnerability.severity == contract


@pytest.mark.parametrize(
    ("cvss", "expected"),
    [
        (8.8, Decimal("8.8")),
        ("7.5", Decimal("7.5")),
        (9, Decimal("9.0")),
        (10, Decimal("10.0")),
        (0, Decimal("0.0")),
        (6.95, Decimal("7.0")),
        (None, None),
        ("", None),
    ],
    ids=["float", "string", "int", "max", "zero", "half-up", "null", "blank"],
)
def test_cvss_score_becomes_numeric_3_1(cvss: object, expected: Decimal | None) -> None:
    finding = vulnerability_finding(vulnerability_row(cvssScore=cvss))

    assert finding is not None
    assert finding.vulnerability.cvss_score == expected


def test_absent_cvss_score_is_unknown() -> None:
    row = vulnerability_row()
    del row["cvssScore"]

    finding = vulnerability_finding(row)

    assert finding is not None
    assert finding.vulnerability.cvss_score is None


@pytest.mark.parametrize("cvss", [10.1, -0.1, "high", True, float("nan"), [7.0]], ids=repr)
def test_cvss_score_outside_0_to_10_or_not_a_number_is_an_error(cvss: object) -> None:
    with pytest.raises(RecordError) as caught:
        vulnerability_finding(vulnerability_row(cvssScore=cvss))

    assert caught.value.field == "cvssScore"


def test_vulnerability_without_severity_is_an_error_naming_the_documented_field() -> None:
    with pytest.raises(RecordError) as caught:
        vulnerability_finding(vulnerability_row(vulnerabilitySeverityLevel=None))

    assert caught.value.field == "vulnerabilitySeverityLevel"


def test_vulnerability_without_machine_is_an_error_naming_the_documented_field() -> None:
    row = vulnerability_row()
    del row["deviceId"]

    with pytest.raises(RecordError) as caught:
        vulnerability_finding(row)

    assert caught.value.field == "deviceId"


# --- Compliance --------------------------------------------------------------------------------


def test_policy_status_takes_the_managed_device_id_from_graphs_status_id() -> None:
    status = policy_device_status(
        policy_device_status_item(), policy_id=POLICY_ID, policy_name="Windows baseline"
    )

    assert status.managed_device_id == INTUNE_ID
    assert status.device_display_name == "PC01"
    assert status.last_reported_at == utc("2024-12-09T09:30:00")


@pytest.mark.parametrize(
    "status_id",
    ["c0b5a9d2-6f1e-4c3b-9a8d-7e6f5a4b3c2d", "device-17_policy-3", "17", None],
    ids=["bare-guid", "non-guid-prefix", "number", "no-id"],
)
def test_policy_status_with_another_id_form_has_no_managed_device_id(
    status_id: str | None,
) -> None:
    status = policy_device_status(
        policy_device_status_item(id=status_id), policy_id=POLICY_ID, policy_name=None
    )

    assert status.managed_device_id is None


@pytest.mark.parametrize(
    ("graph_status", "failing"),
    [
        ("nonCompliant", True),
        ("error", True),
        ("conflict", True),
        ("compliant", False),
        ("remediated", False),
        ("notApplicable", False),
        ("notAssigned", False),
        ("unknown", False),
    ],
)
def test_policy_status_failing_words(graph_status: str, failing: bool) -> None:
    status = policy_device_status(
        policy_device_status_item(status=graph_status), policy_id=POLICY_ID, policy_name=None
    )

    assert status.is_failing is failing


def test_failed_rule_has_the_platforms_json_shape() -> None:
    status = policy_device_status(
        policy_device_status_item(lastReportedDateTime="2024-12-09T09:30:00.1234567Z"),
        policy_id=POLICY_ID,
        policy_name="Windows baseline",
    )

    assert status.failed_rule() == FailedRule(
        policyId=POLICY_ID,
        policyName="Windows baseline",
        status="nonCompliant",
        lastReported="2024-12-09T09:30:00.123456Z",
    )


def test_policy_status_without_status_is_an_error_naming_it() -> None:
    with pytest.raises(RecordError) as caught:
        policy_device_status(
            policy_device_status_item(status=None), policy_id=POLICY_ID, policy_name=None
        )

    assert caught.value.field == "status"


def test_compliance_record_of_an_intune_device() -> None:
    device = intune_device(managed_device())
    rule = FailedRule(policyId=POLICY_ID, policyName="B", status="error", lastReported=None)
    checked_at = utc("2024-12-09T10:00:00")

    assert compliance_record(device, [rule], checked_at=checked_at) == ComplianceRecord(
        intune_device_id=INTUNE_ID,
        compliance_state="noncompliant",
        failed_rules=(rule,),
        checked_at=checked_at,
    )


def test_compliance_record_of_a_defender_only_device_is_refused() -> None:
    with pytest.raises(ValueError, match="no Intune compliance state"):
        compliance_record(
            defender_device(defender_machine()), [], checked_at=utc("2024-01-01T00:00:00")
        )


def test_compliance_record_refuses_a_naive_check_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        compliance_record(
            intune_device(managed_device()),
            [],
            checked_at=datetime(2024, 1, 1),  # noqa: DTZ001 - the naive value under test
        )


# --- Record invariants -------------------------------------------------------------------------


def test_device_record_needs_a_source_id() -> None:
    with pytest.raises(ValueError, match="Defender, Intune or both"):
        DeviceRecord(microsoft_device_id="x", device_name="x")


def test_device_record_refuses_a_risk_score_outside_0_to_100() -> None:
    with pytest.raises(ValueError, match="risk_score"):
        DeviceRecord(
            microsoft_device_id="x", device_name="x", defender_machine_id="x", risk_score=101
        )
