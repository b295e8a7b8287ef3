"""Microsoft Defender, Intune and Graph JSON turned into the rows of the platform's EDR tables.

Every builder takes one JSON object exactly as the API returns it and either returns a frozen
record or raises `RecordError` naming the field. Nothing is guessed: a field that is missing
stays `None` where the column allows it, and an unknown enum word is an error. Values longer
than their column are errors here, so one odd record cannot fail a whole page's bulk upsert.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Final, TypedDict

from avian_workers.edr._fields import FieldReader, RecordError, parse_timestamp

__all__ = [
    "ALERT_SEVERITIES",
    "FAILING_POLICY_STATUSES",
    "RISK_SCORES",
    "VULNERABILITY_SEVERITIES",
    "AlertRecord",
    "ComplianceRecord",
    "DeviceEvidence",
    "DeviceRecord",
    "DeviceVulnerabilityLink",
    "FailedRule",
    "PolicyDeviceStatus",
    "RecordError",
    "VulnerabilityFinding",
    "VulnerabilityRecord",
    "alert_record",
    "compliance_record",
    "defender_device",
    "host_name",
    "intune_device",
    "parse_timestamp",
    "policy_device_status",
    "vulnerability_finding",
]

# Column widths of the platform's EDR tables (CONTRACT.md).
_ID_WIDTH = 255
_NAME_WIDTH = 255
_OS_WIDTH = 100
_WORD_WIDTH = 50
_THREAT_TYPE_WIDTH = 100
_CVE_WIDTH = 50

RISK_SCORES: Final[Mapping[str, int]] = MappingProxyType(
    {
        # Defender grades machine risk in words; the platform stores 0..100 and calls a device
        # high risk at >= 70. The numbers put only 'High' over that line, keep 'Medium' clearly
        # below it, and leave even gaps so a tenant's mean risk reflects its mix of levels.
        # 'None' is Defender's "no risk found", so it is 0, not unknown.
        "none": 0,
        "informational": 10,
        "low": 30,
        "medium": 60,
        "high": 90,
    }
)

ALERT_SEVERITIES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "informational": "low",  # the contract's rule
        "low": "low",
        "medium": "medium",
        "high": "high",
        # Not a Graph value today; accepted so a future 'critical' keeps its meaning.
        "critical": "critical",
        # Microsoft could not grade these. 'low' would bury an ungraded security alert and
        # 'high' would cry wolf; 'medium' keeps it in the triage queue at a middle weight.
        "unknown": "medium",
        "unknownfuturevalue": "medium",
    }
)

VULNERABILITY_SEVERITIES: Final[Mapping[str, str]] = MappingProxyType(
    {"low": "low", "medium": "medium", "high": "high", "critical": "critical"}
)

# Per-policy device statuses that mean a policy is failing on the device.
FAILING_POLICY_STATUSES: Final = frozenset({"noncompliant", "error", "conflict"})

_DEVICE_EVIDENCE_TYPE = "#microsoft.graph.security.deviceevidence"


def host_name(name: str | None) -> str | None:
    """The lower-case host name used to match devices ('PC01.' and 'pc01' are the same)."""
    if name is None:
        return None
    normalised = name.strip().rstrip(".").casefold()
    return normalised or None


# --- Devices -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """One `edr_devices` row, plus the identity keys that merge Defender and Intune records.

    `microsoft_device_id` is the source's own id until `DeviceIdentityIndex.assign` gives the
    row its stable key. `hostname` is lower case (see `host_name`).
    """

    microsoft_device_id: str
    device_name: str
    operating_system: str | None = None
    os_version: str | None = None
    primary_user: str | None = None
    defender_health_status: str | None = None
    risk_score: int | None = None
    exposure_level: str | None = None
    intune_compliance_state: str | None = None
    intune_enrollment_status: str | None = None
    last_seen_at: datetime | None = None
    defender_machine_id: str | None = None
    intune_device_id: str | None = None
    aad_device_id: str | None = None
    hostname: str | None = None

    def __post_init__(self) -> None:
        if self.defender_machine_id is None and self.intune_device_id is None:
            raise ValueError("a device record comes from Defender, Intune or both")
        if self.risk_score is not None and not 0 <= self.risk_score <= 100:
            raise ValueError(f"risk_score must be 0..100, got {self.risk_score}")
        if self.last_seen_at is not None and self.last_seen_at.utcoffset() is None:
            raise ValueError("last_seen_at must be timezone-aware")


def defender_device(machine: Mapping[str, object]) -> DeviceRecord:
    """A Defender for Endpoint machine (`GET /api/machines`) as a device record."""
    fields = FieldReader(machine, "defender machine")
    machine_id = fields.required_text("id", max_length=_ID_WIDTH)
    dns_name = fields.required_text("computerDnsName", max_length=_NAME_WIDTH)
    # The documented machine entity carries `version` (e.g. '22H2'); newer payloads and the
    # export APIs carry `osVersion`. Prefer the more precise one when both are present.
    os_version = fields.text("osVersion", max_length=_OS_WIDTH)
    if os_version is None:
        os_version = fields.text("version", max_length=_OS_WIDTH)
    return DeviceRecord(
        microsoft_device_id=machine_id,
        device_name=dns_name,
        operating_system=fields.text("osPlatform", max_length=_OS_WIDTH),
        os_version=os_version,
        defender_health_status=fields.text("healthStatus", max_length=_WORD_WIDTH),
        risk_score=fields.word("riskScore", RISK_SCORES),
        exposure_level=fields.text("exposureLevel", max_length=_WORD_WIDTH),
        last_seen_at=fields.timestamp("lastSeen"),
        defender_machine_id=machine_id,
        aad_device_id=fields.guid("aadDeviceId"),
        hostname=host_name(dns_name),
    )


def intune_device(managed: Mapping[str, object]) -> DeviceRecord:
    """An Intune managed device (Graph `deviceManagement/managedDevices`) as a device record.

    `intune_enrollment_status` is `managementState` ('managed', 'retirePending', ...): the state
    of the enrollment, whereas `deviceEnrollmentType` only says how the device enrolled.
    """
    fields = FieldReader(managed, "intune managed device")
    device_id = fields.required_text("id", max_length=_ID_WIDTH)
    device_name = fields.required_text("deviceName", max_length=_NAME_WIDTH)
    return DeviceRecord(
        microsoft_device_id=device_id,
        device_name=device_name,
        operating_system=fields.text("operatingSystem", max_length=_OS_WIDTH),
        os_version=fields.text("osVersion", max_length=_OS_WIDTH),
        primary_user=fields.text("userPrincipalName", max_length=_NAME_WIDTH),
        intune_compliance_state=fields.required_text("complianceState", max_length=_WORD_WIDTH),
        intune_enrollment_status=fields.text("managementState", max_length=_WORD_WIDTH),
        last_seen_at=fields.timestamp("lastSyncDateTime"),
        intune_device_id=device_id,
        aad_device_id=fields.guid("azureADDeviceId"),
        hostname=host_name(device_name),
    )


# --- Alerts ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceEvidence:
    """The device identifiers one `deviceEvidence` entry of an alert carries."""

    mde_device_id: str | None
    azure_ad_device_id: str | None
    device_dns_name: str | None


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """One `edr_alerts` row, plus the watermark value and the evidence that links a device.

    `last_updated_at` is `lastUpdateDateTime` truncated to microseconds (never later than
    Microsoft's 7-digit value, so `ge` on it re-reads ties rather than skipping them).
    """

    microsoft_alert_id: str
    severity: str
    threat_type: str | None
    threat_name: str | None
    status: str | None
    description: str | None
    detected_at: datetime
    last_updated_at: datetime
    device_evidence: tuple[DeviceEvidence, ...] = ()


def alert_record(alert: Mapping[str, object]) -> AlertRecord:
    """A Graph security alert (`security/alerts_v2`) as an alert record."""
    fields = FieldReader(alert, "graph alert")
    alert_id = fields.required_text("id", max_length=_ID_WIDTH)
    severity = fields.word("severity", ALERT_SEVERITIES)
    if severity is None:
        raise fields.error("severity", "is missing")
    # When the activity began is what an analyst means by "detected"; Graph leaves it null on
    # some alerts, and then the alert's creation is the earliest time known.
    detected_at = fields.timestamp("firstActivityDateTime")
    if detected_at is None:
        detected_at = fields.required_timestamp("createdDateTime")
    return AlertRecord(
        microsoft_alert_id=alert_id,
        severity=severity,
        threat_type=fields.text("category", max_length=_THREAT_TYPE_WIDTH),
        threat_name=fields.text("title", max_length=_NAME_WIDTH),
        status=fields.text("status", max_length=_WORD_WIDTH),
        description=fields.text("description"),
        detected_at=detected_at,
        last_updated_at=fields.required_timestamp("lastUpdateDateTime"),
        device_evidence=_device_evidence(fields),
    )


def _device_evidence(alert: FieldReader) -> tuple[DeviceEvidence, ...]:
    items = alert.raw("evidence")
    if items is None:
        return ()
    if not isinstance(items, list):
        raise alert.error("evidence", "must be a list")
    found: list[DeviceEvidence] = []
    for position, item in enumerate(items):
        fields = FieldReader(
            item, alert.kind, record_id=alert.record_id, prefix=f"evidence[{position}]."
        )
        odata_type = fields.text("@odata.type")
        if odata_type is None or odata_type.casefold() != _DEVICE_EVIDENCE_TYPE:
            continue
        evidence = DeviceEvidence(
            mde_device_id=fields.text("mdeDeviceId", max_length=_ID_WIDTH),
            azure_ad_device_id=fields.guid("azureAdDeviceId"),
            device_dns_name=fields.text("deviceDnsName", max_length=_NAME_WIDTH),
        )
        if evidence != DeviceEvidence(None, None, None):
            found.append(evidence)
    return tuple(found)


# --- Vulnerabilities ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VulnerabilityRecord:
    """One `edr_vulnerabilities` row (one per CVE per tenant)."""

    cve_id: str
    severity: str
    cvss_score: Decimal | None
    exploitability: str | None
    description: str | None


@dataclass(frozen=True, slots=True)
class DeviceVulnerabilityLink:
    """One `edr_device_vulnerabilities` row, by Defender machine id until the device is resolved."""

    machine_id: str
    cve_id: str
    detected_at: datetime | None


@dataclass(frozen=True, slots=True)
class VulnerabilityFinding:
    """What one SoftwareVulnerabilitiesByMachine row says: a CVE, and a machine that has it."""

    vulnerability: VulnerabilityRecord
    link: DeviceVulnerabilityLink


def vulnerability_finding(row: Mapping[str, object]) -> VulnerabilityFinding | None:
    """One row of `GET /api/machines/SoftwareVulnerabilitiesByMachine`.

    Returns None for a row without `cveId`: the export also lists installed software that has
    no known vulnerability, and those rows are not findings. Reads the documented names
    (`deviceId`, `vulnerabilitySeverityLevel`) and the short ones (`machineId`, `severity`).
    """
    fields = FieldReader(row, "defender software vulnerability")
    cve_id = fields.text("cveId", max_length=_CVE_WIDTH)
    if cve_id is None:
        return None
    machine_id = fields.text("deviceId", max_length=_ID_WIDTH)
    if machine_id is None:
        machine_id = fields.text("machineId", max_length=_ID_WIDTH)
    if machine_id is None:
        raise fields.error("deviceId", "is missing")
    severity = fields.word("vulnerabilitySeverityLevel", VULNERABILITY_SEVERITIES)
    if severity is None:
        severity = fields.word("severity", VULNERABILITY_SEVERITIES)
    if severity is None:
        raise fields.error("vulnerabilitySeverityLevel", "is missing")
    return VulnerabilityFinding(
        vulnerability=VulnerabilityRecord(
            cve_id=cve_id,
            severity=severity,
            cvss_score=fields.cvss("cvssScore"),
            exploitability=fields.text("exploitabilityLevel", max_length=_WORD_WIDTH),
            description=fields.text("description"),
        ),
        link=DeviceVulnerabilityLink(
            machine_id=machine_id,
            cve_id=cve_id,
            detected_at=fields.timestamp("firstSeenTimestamp"),
        ),
    )


# --- Compliance --------------------------------------------------------------------------------


class FailedRule(TypedDict):
    """One entry of `edr_compliance.failed_rules` (JSON, camelCase like the platform's)."""

    policyId: str
    policyName: str | None
    status: str
    lastReported: str | None


@dataclass(frozen=True, slots=True)
class PolicyDeviceStatus:
    """One device's status under one compliance policy (`.../{policyId}/deviceStatuses`).

    `managed_device_id` comes from the status id, which Graph forms as
    '<managedDeviceId>_<...>'; it is None when the id has another form, and then only
    `device_display_name` can place the status.
    """

    policy_id: str
    policy_name: str | None
    status: str
    device_display_name: str | None
    user_principal_name: str | None
    last_reported_at: datetime | None
    managed_device_id: str | None

    @property
    def is_failing(self) -> bool:
        return self.status.casefold() in FAILING_POLICY_STATUSES

    def failed_rule(self) -> FailedRule:
        return FailedRule(
            policyId=self.policy_id,
            policyName=self.policy_name,
            status=self.status,
            lastReported=_iso_utc(self.last_reported_at),
        )


def policy_device_status(
    raw: Mapping[str, object], *, policy_id: str, policy_name: str | None
) -> PolicyDeviceStatus:
    """A per-policy device status; the policy is the one whose statuses the caller is paging."""
    fields = FieldReader(raw, "compliance policy device status")
    return PolicyDeviceStatus(
        policy_id=policy_id,
        policy_name=policy_name,
        status=fields.required_text("status", max_length=_WORD_WIDTH),
        device_display_name=fields.text("deviceDisplayName", max_length=_NAME_WIDTH),
        user_principal_name=fields.text("userPrincipalName", max_length=_NAME_WIDTH),
        last_reported_at=fields.timestamp("lastReportedDateTime"),
        managed_device_id=_managed_device_id_prefix(fields.text("id")),
    )


def _managed_device_id_prefix(status_id: str | None) -> str | None:
    if status_id is None:
        return None
    prefix, separator, _ = status_id.partition("_")
    if not separator:
        return None
    try:
        return str(uuid.UUID(prefix))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class ComplianceRecord:
    """One `edr_compliance` row, keyed by the Intune device it describes."""

    intune_device_id: str
    compliance_state: str
    failed_rules: tuple[FailedRule, ...]
    checked_at: datetime


def compliance_record(
    device: DeviceRecord, failed_rules: Iterable[FailedRule], *, checked_at: datetime
) -> ComplianceRecord:
    """The compliance row of an Intune device; `checked_at` is when this poll read it."""
    if device.intune_device_id is None or device.intune_compliance_state is None:
        raise ValueError(
            f"device {device.microsoft_device_id!r} has no Intune compliance state to record"
        )
    if checked_at.utcoffset() is None:
        raise ValueError("checked_at must be timezone-aware")
    return ComplianceRecord(
        intune_device_id=device.intune_device_id,
        compliance_state=device.intune_compliance_state,
        failed_rules=tuple(failed_rules),
        checked_at=checked_at,
    )


def _iso_utc(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.isoformat().replace("+00:00", "Z")
