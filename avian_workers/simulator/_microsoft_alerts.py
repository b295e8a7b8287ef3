"""Generated alerts_v2 alerts with device, file and user evidence, as Graph returns them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from avian_workers.simulator._microsoft_values import (
    FIRST_NAMES,
    HOUR,
    MINUTE,
    JsonObject,
    digest,
    format_ticks,
    guid,
    number,
    pick,
)

if TYPE_CHECKING:
    from avian_workers.simulator._microsoft_data import TenantData

_ALERT_SEVERITY = ("informational", "low", "low", "medium", "medium", "high")
_ALERT_STATUS = ("new", "new", "inProgress", "resolved")
# (category, title, threat family, MITRE technique)
_THREATS = (
    ("Malware", "'Emotet' malware was detected", "Emotet", "T1204.002"),
    ("Execution", "Suspicious PowerShell command line", None, "T1059.001"),
    ("DefenseEvasion", "Suspicious execution of hidden file", None, "T1564.001"),
    ("CredentialAccess", "Possible credential dumping via LSASS access", None, "T1003.001"),
    ("Ransomware", "Ransomware behavior detected in the file system", "Lockbit", "T1486"),
    ("Persistence", "Suspicious scheduled task created", None, "T1053.005"),
    ("InitialAccess", "Malicious document opened from email attachment", "Qakbot", "T1566.001"),
    (
        "SuspiciousActivity",
        "Unwanted software 'PUA:Win32/Presenoker' was detected",
        "Presenoker",
        "T1204",
    ),
)
# Enum members Graph only reveals with `Prefer: include-unknown-enum-members`.
_EVOLVABLE_SERVICE_SOURCE = "microsoftDefenderForCloud"
_EVOLVABLE_DETECTION_SOURCE = "microsoftDefenderForServers"


@dataclass(slots=True)
class Alert:
    """One alert and its sort key; replaced, never mutated, once published."""

    ticks: int
    body: JsonObject


def generate_alert(
    data: TenantData, k: int, *, ticks: int | None = None, machine: int | None = None
) -> Alert:
    """Alert number `k` of a tenant; `ticks` pins its lastUpdateDateTime (a late arrival)."""
    spec = data.spec
    if ticks is None:
        # The newest alert sits near the anchor, older ones every ~9 minutes before it.
        # Every sixth shares the timestamp of the one before it: ties happen in Graph.
        step = k - 1 if k % 6 == 5 else k
        ticks = data.anchor - (spec.alerts - 1 - step) * 9 * MINUTE
        ticks -= number(data.key, "alert-jitter", step) % MINUTE
    alert_id = f"da{number('alert', data.ns, k) % 10**18:018d}_{number('alert2', data.ns, k) % 2**31 - 2**30}"
    category, title, family, technique = pick(_THREATS, data.key, "threat", k)
    severity = pick(_ALERT_SEVERITY, data.key, "severity", k)
    evolvable = k % 11 == 10
    has_device = data.machine_count > 0 and k % 8 != 7
    evidence: list[JsonObject] = []
    if has_device:
        j = (
            machine
            if machine is not None
            else number(data.key, "alert-device", k) % data.machine_count
        )
        evidence.append(_device_evidence(data, j, ticks, main=True))
        if k % 13 == 12 and data.machine_count > 1:
            evidence.append(_device_evidence(data, (j + 1) % data.machine_count, ticks, main=False))
        evidence.append(_file_evidence(data, j, ticks, family))
    else:
        evidence.append(_user_evidence(data, k, ticks))
    created = ticks - (1 + number(data.key, "age", k) % 48) * HOUR
    if k >= spec.alerts:  # a late arrival was created just before its last update
        created = ticks - 5 * MINUTE
    body: JsonObject = {
        "@odata.type": "#microsoft.graph.security.alert",
        "id": alert_id,
        "providerAlertId": alert_id,
        "incidentId": str(1000 + number(data.key, "incident", k) % 90000),
        "status": pick(_ALERT_STATUS, data.key, "status", k),
        "severity": severity,
        "classification": None,
        "determination": None,
        "serviceSource": (
            _EVOLVABLE_SERVICE_SOURCE
            if evolvable
            else ("microsoftDefenderForEndpoint" if has_device else "microsoftDefenderForOffice365")
        ),
        "detectionSource": (
            _EVOLVABLE_DETECTION_SOURCE
            if evolvable
            else ("antivirus" if family else "microsoftDefenderForEndpoint")
        ),
        "detectorId": guid("detector", category),
        "tenantId": spec.tenant_id,
        "title": title,
        "description": f"{title} on a device of {data.domain}.",
        "recommendedActions": "Review the device timeline and isolate it if needed.",
        "category": category,
        "assignedTo": None,
        "alertWebUrl": f"https://security.microsoft.com/alerts/{alert_id}?tid={spec.tenant_id}",
        "incidentWebUrl": f"https://security.microsoft.com/incidents/{alert_id}?tid={spec.tenant_id}",
        "actorDisplayName": None,
        "threatDisplayName": family,
        "threatFamilyName": family,
        "mitreTechniques": [technique],
        "createdDateTime": format_ticks(created),
        "lastUpdateDateTime": format_ticks(ticks),
        "resolvedDateTime": None,
        "firstActivityDateTime": format_ticks(created - HOUR),
        "lastActivityDateTime": format_ticks(created),
        "comments": [],
        "evidence": evidence,
        "systemTags": [],
    }
    return Alert(ticks, body)


def _device_evidence(data: TenantData, j: int, ticks: int, *, main: bool) -> JsonObject:
    machine = data.machine(j)
    return {
        "@odata.type": "#microsoft.graph.security.deviceEvidence",
        "createdDateTime": format_ticks(ticks),
        "verdict": "suspicious" if main else "unknown",
        "remediationStatus": "none",
        "remediationStatusDetails": None,
        "firstSeenDateTime": machine["firstSeen"],
        "mdeDeviceId": machine["id"],
        "azureAdDeviceId": machine["aadDeviceId"],
        "deviceDnsName": machine["computerDnsName"],
        "hostName": machine["computerDnsName"].split(".", 1)[0],
        "osPlatform": machine["osPlatform"],
        "osBuild": machine["osBuild"],
        "version": machine["version"],
        "healthStatus": machine["healthStatus"].lower(),
        "riskScore": machine["riskScore"].lower(),
        "rbacGroupId": machine["rbacGroupId"],
        "rbacGroupName": machine["rbacGroupName"],
        "onboardingStatus": "onboarded",
        "defenderAvStatus": "updated",
        "ipInterfaces": [machine["lastIpAddress"]],
        "loggedOnUsers": [],
        "roles": ["compromised"] if main else [],
        "detailedRoles": ["Main device"] if main else [],
        "tags": [],
        "vmMetadata": None,
    }


def _file_evidence(data: TenantData, j: int, ticks: int, family: str | None) -> JsonObject:
    machine_id = data.machine(j)["id"]
    return {
        "@odata.type": "#microsoft.graph.security.fileEvidence",
        "createdDateTime": format_ticks(ticks),
        "verdict": "malicious" if family else "suspicious",
        "remediationStatus": "prevented" if family else "none",
        "remediationStatusDetails": None,
        "detectionStatus": "prevented" if family else "detected",
        "mdeDeviceId": machine_id,
        "roles": [],
        "detailedRoles": [],
        "tags": [],
        "fileDetails": {
            "sha1": digest("sha1", machine_id, ticks, size=20).hex(),
            "sha256": digest("sha256", machine_id, ticks, size=32).hex(),
            "fileName": f"{(family or 'payload').lower()}.exe",
            "filePath": "C:\\Users\\Public\\Downloads",
            "fileSize": 1_048_576,
            "filePublisher": None,
            "signer": None,
            "issuer": None,
        },
    }


def _user_evidence(data: TenantData, k: int, ticks: int) -> JsonObject:
    first = pick(FIRST_NAMES, data.key, "alert-user", k)
    return {
        "@odata.type": "#microsoft.graph.security.userEvidence",
        "createdDateTime": format_ticks(ticks),
        "verdict": "suspicious",
        "remediationStatus": "none",
        "remediationStatusDetails": None,
        "roles": ["contextual"],
        "detailedRoles": [],
        "tags": [],
        "userAccount": {
            "accountName": first.lower(),
            "domainName": data.domain.split(".", 1)[0].upper(),
            "userSid": f"S-1-5-21-{number(data.key, 'sid', k) % 10**9}",
            "azureAdUserId": guid("user", data.key, k % 97),
            "userPrincipalName": f"{first.lower()}@{data.domain}",
            "displayName": first,
        },
    }


# Every device is looked up by several datasets (machine, Intune record, vulnerability rows,
# compliance statuses) one after another: a bounded cache shared by all tenants keeps the
# derivation to about once per device per run without holding every tenant in memory.


def alert_order(alert: Alert) -> tuple[int, str]:
    return alert.ticks, alert.body["id"]


def with_evolvable_enums_hidden(body: JsonObject) -> JsonObject:
    """An alert as Graph sends it to a client that did not ask for new enum members."""
    changes: JsonObject = {}
    if body.get("serviceSource") == _EVOLVABLE_SERVICE_SOURCE:
        changes["serviceSource"] = "unknownFutureValue"
    if body.get("detectionSource") == _EVOLVABLE_DETECTION_SOURCE:
        changes["detectionSource"] = "unknownFutureValue"
    return {**body, **changes} if changes else body
