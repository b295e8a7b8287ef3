"""Deterministic tenant data for the Microsoft simulator, in the shapes Microsoft documents.

Everything derives from the tenant's spec, so two runs see the same data and a test can ask
the simulator what it should have received. Items are built when a page asks for them: only
alerts (few, and mutable by tests) are kept in memory.

Physical device `i` of a tenant appears, by `i % 10`:
  0-6  in Defender and Intune, Defender `aadDeviceId` == Intune `azureADDeviceId`
  7    in both, Defender `aadDeviceId` null: the records match only by host name
  8    in Defender only (a server that is not enrolled in Intune)
  9    in Intune only (a phone, no Defender sensor)
Defender's `computerDnsName` is the lower-case FQDN and Intune's `deviceName` the upper-case
short host name, as the two products report them.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from avian_workers.simulator._microsoft_alerts import Alert, alert_order, generate_alert
from avian_workers.simulator._microsoft_values import (
    DAY,
    FIRST_NAMES,
    TICKS_PER_SECOND,
    JsonObject,
    datetime_ticks,
    format_seconds,
    format_ticks,
    guid,
    number,
    pick,
    uuid4_text,
)

_FULL_CATEGORIES = 7  # categories 0-6 match by Entra device id
_NAME_ONLY = 7
_DEFENDER_ONLY = 8
_INTUNE_ONLY = 9

_WORDS = ("oak", "elm", "fir", "ash", "yew", "birch", "cedar", "maple", "pine", "larch")
_LAST_NAMES = ("Tremblay", "Gagnon", "Roy", "Smith", "Martin", "Lee", "Brown", "Wilson", "Singh")

_HEALTH = ("Active",) * 8 + ("Inactive", "ImpairedCommunication", "NoSensorData")
_RISK = ("None", "Informational", "Low", "Low", "Medium", "Medium", "High")
_EXPOSURE = ("None", "Low", "Low", "Medium", "Medium", "High")
_COMPLIANCE = ("compliant",) * 14 + ("noncompliant",) * 4 + ("inGracePeriod", "unknown", "error")
_EXPLOITABILITY = (
    "NoExploit",
    "NoExploit",
    "ExploitIsPublic",
    "ExploitIsVerified",
    "ExploitIsInKit",
)
_SOFTWARE = (
    ("microsoft", "edge", "126.0.2592.87"),
    ("google", "chrome", "126.0.6478.127"),
    ("mozilla", "firefox", "127.0.2"),
    ("adobe", "acrobat_reader_dc", "24.002.20857"),
    ("oracle", "jre", "8.0.4010.10"),
    ("7-zip", "7-zip", "23.01.0.0"),
    ("zoom", "zoom", "6.0.11.39959"),
    ("microsoft", "office", "16.0.17628.20144"),
)
_POLICY_PLATFORMS = (
    ("windows10", "#microsoft.graph.windows10CompliancePolicy", "Windows"),
    ("ios", "#microsoft.graph.iosCompliancePolicy", "iOS"),
    ("android", "#microsoft.graph.androidWorkProfileCompliancePolicy", "Android"),
)

Dataset = Literal[
    "machines", "vulnerabilities", "managedDevices", "compliancePolicies", "alerts", "secureScores"
]


@dataclass(frozen=True)
class TenantSpec:
    """A simulated tenant: its app registration and how much data it holds."""

    tenant_id: str
    client_id: str
    client_secret: str = field(repr=False)
    seed: int = 1
    # Tenants given the same namespace share device and alert ids (a tenant isolation test)
    # while names, users and severities still differ.
    id_namespace: str | None = None
    domain: str | None = None
    devices: int = 40
    alerts: int = 30
    cves: int = 25
    cves_per_device: int = 3
    policies: int = 3
    secure_scores: int = 3
    graph_page_size: int = 1000  # largest page Graph sends, whatever $top asks
    anchor: datetime | None = None  # the newest alert's lastUpdateDateTime; default: creation
    # The one mailbox the app may open over IMAP with an Outlook token (in Exchange Online:
    # the IMAP.AccessAsApp role plus a mailbox permission for the app's service principal).
    mailbox: str | None = None

    def __post_init__(self) -> None:
        sizes = (self.devices, self.alerts, self.cves, self.cves_per_device, self.policies)
        if min(sizes) < 0 or self.secure_scores < 0:
            raise ValueError("tenant sizes must not be negative")
        if self.cves_per_device > self.cves:
            raise ValueError("cves_per_device cannot exceed cves")
        if self.graph_page_size < 1:
            raise ValueError("graph_page_size must be at least 1")


@dataclass(frozen=True, slots=True)
class _Device:
    index: int
    category: int
    mde_id: str
    aad_id: str
    intune_id: str
    user_id: str
    host: str
    fqdn: str
    platform: str  # windows10 | ios | android
    upn: str
    user_name: str
    compliance: str
    bits: int  # 256 content bits: fields pick from their own slice
    hardware: bytes  # 12 id-derived bytes: MAC and serial number

    def pick[T](self, options: tuple[T, ...], slot: int) -> T:
        return options[self.number(slot) % len(options)]

    def number(self, slot: int) -> int:
        """16 pseudo-random bits, slot 0-15."""
        return (self.bits >> (16 * slot)) & 0xFFFF


class TenantData:
    """The generated content of one tenant."""

    def __init__(self, spec: TenantSpec, *, created_ticks: int) -> None:
        self.spec = spec
        self.ns = spec.id_namespace or spec.tenant_id
        self.key = f"{spec.seed}|{spec.tenant_id}"
        self.domain = spec.domain or f"{pick(_WORDS, self.key, 'domain')}{spec.seed}.example.com"
        self.prefix = f"{pick(_WORDS, self.key, 'prefix')}{number(self.key, 'p') % 100:02d}"
        self._external_ip = number(self.key, "ip") % 254 + 1
        self.anchor = datetime_ticks(spec.anchor) if spec.anchor else created_ticks
        self._user_ids = [guid("user", self.key, u) for u in range(97)]
        self._cves = [self._derive_cve(c) for c in range(spec.cves)]
        self._lock = threading.Lock()
        self._late_alerts = 0
        self._alerts = sorted(
            (generate_alert(self, k) for k in range(spec.alerts)), key=alert_order
        )

    # -- sizes and index arithmetic -------------------------------------------------------

    @property
    def machine_count(self) -> int:
        return self.spec.devices - self.spec.devices // 10

    @property
    def managed_device_count(self) -> int:
        n = self.spec.devices
        return n - (n // 10 + (1 if n % 10 == 9 else 0))

    @property
    def vulnerability_row_count(self) -> int:
        return self.machine_count * self.spec.cves_per_device

    def _machine_index(self, j: int) -> int:
        block, r = divmod(j, 9)  # residues 0-8 carry a Defender sensor
        return block * 10 + r

    def _managed_index(self, j: int) -> int:
        block, r = divmod(j, 9)  # residues 0-7 and 9 are enrolled in Intune
        return block * 10 + (r if r < _DEFENDER_ONLY else _INTUNE_ONLY)

    # -- physical devices ------------------------------------------------------------------

    def _device(self, i: int) -> _Device:
        return _cached_device(self, i)

    def _derive_device(self, i: int) -> _Device:
        ids = hashlib.blake2b(f"{self.ns}|{i}".encode(), digest_size=64).digest()
        bits = int.from_bytes(hashlib.blake2b(f"{self.key}|{i}".encode(), digest_size=32).digest())
        category = i % 10
        if category == _INTUNE_ONLY:
            platform = "ios" if (i // 10) % 2 == 0 else "android"
            host = f"{self.prefix}-mob{i:05d}"
        elif category == _DEFENDER_ONLY:
            platform, host = "windows10", f"{self.prefix}-srv{i:05d}"
        else:
            platform, host = "windows10", f"{self.prefix}-ws{i:05d}"
        first = FIRST_NAMES[(bits & 0xFFFF) % len(FIRST_NAMES)]
        last = _LAST_NAMES[((bits >> 16) & 0xFFFF) % len(_LAST_NAMES)]
        user = f"{first.lower()}.{last.lower()}{i % 97}"
        return _Device(
            index=i,
            category=category,
            mde_id=ids[:20].hex(),
            aad_id=uuid4_text(ids[20:36]),
            intune_id=uuid4_text(ids[36:52]),
            user_id=self._user_ids[i % 97],
            host=host,
            fqdn=f"{host}.{self.domain}",
            platform=platform,
            upn=f"{user}@{self.domain}",
            user_name=f"{first} {last}",
            compliance=_COMPLIANCE[((bits >> 32) & 0xFFFF) % len(_COMPLIANCE)],
            bits=bits,
            hardware=ids[52:],
        )

    def machine(self, j: int) -> JsonObject:
        """Defender machine number `j` (0-based)."""
        d = self._device(self._machine_index(j))
        server = d.category == _DEFENDER_ONLY
        joined = d.category < _FULL_CATEGORIES
        build = 20348 if server else d.pick((19045, 22621, 22631), 3)
        seen = self.anchor - (d.number(4) * 1979 * TICKS_PER_SECOND // 1000)
        return {
            "id": d.mde_id,
            "computerDnsName": d.fqdn,
            "firstSeen": format_ticks(seen - 200 * DAY),
            "lastSeen": format_ticks(seen),
            "osPlatform": "WindowsServer2022"
            if server
            else ("Windows11" if build > 22000 else "Windows10"),
            "osProcessor": "x64",
            "version": "21H2" if server else {19045: "22H2", 22621: "22H2", 22631: "23H2"}[build],
            "osBuild": build,
            "lastIpAddress": f"10.{(d.index >> 16) & 255}.{(d.index >> 8) & 255}.{d.index & 255}",
            "lastExternalIpAddress": f"203.0.113.{self._external_ip}",
            "healthStatus": d.pick(_HEALTH, 5),
            "onboardingStatus": "Onboarded",
            "rbacGroupId": 2 if server else 1,
            "rbacGroupName": "Servers" if server else "Workstations",
            "riskScore": d.pick(_RISK, 6),
            "exposureLevel": d.pick(_EXPOSURE, 7),
            "isAadJoined": joined,
            "aadDeviceId": d.aad_id if joined else None,
            "machineTags": ["server"] if server else [],
            "defenderAvStatus": "Updated",
            "deviceValue": "Normal",
            "osArchitecture": "64-bit",
            "managedBy": "MicrosoftDefenderForEndpoint" if server else "Intune",
            "managedByStatus": "Success",
            "isPotentialDuplication": False,
            "isExcluded": False,
            "exclusionReason": None,
            "ipAddresses": [
                {
                    "ipAddress": f"10.{(d.index >> 16) & 255}.{(d.index >> 8) & 255}.{d.index & 255}",
                    "macAddress": d.hardware[:6].hex().upper(),
                    "type": "Ethernet",
                    "operationalStatus": "Up",
                }
            ],
            "vmMetadata": None,
        }

    def managed_device(self, j: int) -> JsonObject:
        """Intune managed device number `j` (0-based)."""
        d = self._device(self._managed_index(j))
        enrolled = self.anchor - (30 + d.number(8) % 600) * DAY
        synced = self.anchor - d.number(9) * TICKS_PER_SECOND
        os_name, os_version, model, maker, enrollment = {
            "windows10": (
                "Windows",
                "10.0.22631.3880",
                "Latitude 7440",
                "Dell Inc.",
                "windowsAzureADJoin",
            ),
            "ios": ("iOS", "17.5.1", "iPhone 15", "Apple", "appleBulkWithUser"),
            "android": ("Android", "14", "Pixel 8", "Google", "androidEnterpriseFullyManaged"),
        }[d.platform]
        grace = (
            format_ticks(self.anchor + 3 * DAY)
            if d.compliance == "inGracePeriod"
            else "9999-12-31T23:59:59Z"
        )
        return {
            "id": d.intune_id,
            "userId": d.user_id,
            "deviceName": d.host.upper(),
            "managedDeviceOwnerType": "company",
            "enrolledDateTime": format_ticks(enrolled),
            "lastSyncDateTime": format_ticks(synced),
            "operatingSystem": os_name,
            "complianceState": d.compliance,
            "jailBroken": "False" if d.platform != "windows10" else "Unknown",
            "managementAgent": "mdm",
            "osVersion": os_version,
            "easActivated": False,
            "easDeviceId": "",
            "easActivationDateTime": "0001-01-01T00:00:00Z",
            "azureADRegistered": True,
            "deviceEnrollmentType": enrollment,
            "activationLockBypassCode": None,
            "emailAddress": d.upn,
            "azureADDeviceId": d.aad_id,
            "deviceRegistrationState": "registered",
            "deviceCategoryDisplayName": "Unknown Category",
            "isSupervised": d.platform == "ios",
            "exchangeLastSuccessfulSyncDateTime": "0001-01-01T00:00:00Z",
            "exchangeAccessState": "none",
            "exchangeAccessStateReason": "none",
            "remoteAssistanceSessionUrl": None,
            "remoteAssistanceSessionErrorDetails": None,
            "isEncrypted": d.compliance != "noncompliant",
            "userPrincipalName": d.upn,
            "model": model,
            "manufacturer": maker,
            "imei": "",
            "complianceGracePeriodExpirationDateTime": grace,
            "serialNumber": d.hardware[6:11].hex().upper(),
            "phoneNumber": None,
            "androidSecurityPatchLevel": "2024-06-01" if d.platform == "android" else "",
            "userDisplayName": d.user_name,
            "configurationManagerClientEnabledFeatures": None,
            "wiFiMacAddress": d.hardware[5::-1].hex(),
            "deviceHealthAttestationState": None,
            "subscriberCarrier": "",
            "meid": "",
            "totalStorageSpaceInBytes": 255_362_842_624,
            "freeStorageSpaceInBytes": 101_347_016_704,
            "managedDeviceName": f"{d.user_id[:8]}_{os_name}_{j}",
            "partnerReportedThreatState": "unknown",
            "requireUserEnrollmentApproval": None,
            "managementCertificateExpirationDate": format_ticks(enrolled + 365 * DAY),
            "iccid": None,
            "udid": None,
            "notes": None,
            "ethernetMacAddress": None,
            "physicalMemoryInBytes": 0,
        }

    # -- vulnerabilities --------------------------------------------------------------------

    def cve(self, c: int) -> tuple[str, float | None, str, str, tuple[str, str, str]]:
        """CVE number `c` of the catalogue: (id, CVSS, severity, exploitability, software)."""
        return self._cves[c]

    def _derive_cve(self, c: int) -> tuple[str, float | None, str, str, tuple[str, str, str]]:
        bits = number("cve", self.spec.seed, c)
        cve_id = f"CVE-{2020 + c % 6}-{10000 + (c // 6) * 7 + self.spec.seed % 7}"
        cvss = None if c % 17 == 16 else round(2.0 + (bits % 81) / 10, 1)
        if cvss is None:
            severity = "Medium"
        elif cvss >= 9.0:
            severity = "Critical"
        elif cvss >= 7.0:
            severity = "High"
        elif cvss >= 4.0:
            severity = "Medium"
        else:
            severity = "Low"
        exploitability = _EXPLOITABILITY[(bits >> 16) % len(_EXPLOITABILITY)]
        return cve_id, cvss, severity, exploitability, _SOFTWARE[c % len(_SOFTWARE)]

    def vulnerability_row(self, r: int) -> JsonObject:
        """Row `r` of SoftwareVulnerabilitiesByMachine (one device, software and CVE)."""
        per_device = self.spec.cves_per_device
        j, t = divmod(r, per_device)
        d = self._device(self._machine_index(j))
        machine_os = "WindowsServer2022" if d.category == _DEFENDER_ONLY else "Windows11"
        seen = self.anchor - d.number(10) * TICKS_PER_SECOND // 3
        no_cve = d.index % 5 == 4 and t == per_device - 1  # inventoried software, no known CVE
        if no_cve:
            cve_id, cvss, severity, exploitability = None, None, None, "NoExploit"
            vendor, software, version = _SOFTWARE[d.index % len(_SOFTWARE)]
        else:
            c = (d.number(11) + t) % self.spec.cves
            cve_id, cvss, severity, exploitability, (vendor, software, version) = self.cve(c)
        return {
            # Microsoft's id names device and software, not the CVE: it repeats across CVEs.
            "id": f"{d.mde_id}_{software}_{version}__",
            "deviceId": d.mde_id,
            "rbacGroupName": "Servers" if d.category == _DEFENDER_ONLY else "Workstations",
            "deviceName": d.fqdn,
            "osPlatform": machine_os,
            "osVersion": "10.0.20348.2527" if d.category == _DEFENDER_ONLY else "10.0.22631.3880",
            "osArchitecture": "x64",
            "softwareVendor": vendor,
            "softwareName": software,
            "softwareVersion": version,
            "cveId": cve_id,
            "cvssScore": cvss,
            "vulnerabilitySeverityLevel": severity,
            "recommendedSecurityUpdate": None if no_cve else f"{vendor} security update",
            "recommendedSecurityUpdateId": None,
            "recommendedSecurityUpdateUrl": None,
            "diskPaths": [f"C:\\Program Files\\{vendor}\\{software}\\{software}.exe"],
            "registryPaths": [],
            "lastSeenTimestamp": format_seconds(seen),
            "firstSeenTimestamp": format_seconds(seen - 40 * DAY),
            "exploitabilityLevel": exploitability,
            "recommendationReference": f"va-_-{vendor}-_-{software}",
            "securityUpdateAvailable": not no_cve,
        }

    # -- compliance -------------------------------------------------------------------------

    def policy(self, p: int) -> JsonObject:
        _, odata_type, label = _POLICY_PLATFORMS[p % len(_POLICY_PLATFORMS)]
        created = self.anchor - (400 + p) * DAY
        return {
            "@odata.type": odata_type,
            "id": guid("policy", self.ns, p),
            "createdDateTime": format_ticks(created),
            "description": f"Minimum security requirements for {label} devices",
            "lastModifiedDateTime": format_ticks(created + 90 * DAY),
            "displayName": f"{label} baseline {p // len(_POLICY_PLATFORMS) + 1}",
            "version": 1 + p % 4,
            "passwordRequired": True,
            "storageRequireEncryption": True,
        }

    def policy_ids(self) -> list[str]:
        return [guid("policy", self.ns, p) for p in range(self.spec.policies)]

    def status_count(self, p: int) -> int:
        return len(self._status_devices(p))

    def device_statuses(
        self, p: int, start: int = 0, stop: int | None = None
    ) -> Iterator[JsonObject]:
        """Device statuses of policy `p` (the enrolled devices of its platform), a slice."""
        first_of_platform = p % len(_POLICY_PLATFORMS)
        platform = _POLICY_PLATFORMS[first_of_platform][0]
        for i in self._status_devices(p)[start:stop]:
            d = self._device(i)
            # A non-compliant device fails the first policy of its platform, passes the rest.
            if d.compliance in {"noncompliant", "inGracePeriod"}:
                status = "nonCompliant" if p == first_of_platform else "compliant"
            else:
                status = d.compliance
            grace = self.anchor + 3 * DAY if d.compliance == "inGracePeriod" else None
            yield {
                "id": guid("status", self.ns, p, i),
                "deviceDisplayName": d.host.upper(),
                "userName": d.user_name,
                "deviceModel": "Latitude 7440" if platform == "windows10" else "Mobile",
                "complianceGracePeriodExpirationDateTime": (
                    format_ticks(grace) if grace else "9999-12-31T23:59:59Z"
                ),
                "status": status,
                "lastReportedDateTime": format_ticks(self.anchor - d.number(12) * TICKS_PER_SECOND),
                "userPrincipalName": d.upn,
            }

    def _status_devices(self, p: int) -> list[int]:
        """Physical indices of the enrolled devices on policy `p`'s platform."""
        platform = _POLICY_PLATFORMS[p % len(_POLICY_PLATFORMS)][0]
        n = self.spec.devices
        if platform == "windows10":
            return [i for i in range(n) if i % 10 < _DEFENDER_ONLY]
        parity = 0 if platform == "ios" else 1
        return [i for i in range(_INTUNE_ONLY, n, 10) if (i // 10) % 2 == parity]

    # -- secure score ----------------------------------------------------------------------

    def secure_score(self, day: int) -> JsonObject:
        """Secure Score `day` days before the anchor (0 = newest)."""
        created = self.anchor - self.anchor % DAY - day * DAY
        max_score = 250.0
        current = round(60 + number(self.key, "score", day) % 14000 / 100, 2)
        return {
            "id": f"{self.spec.tenant_id}_{format_ticks(created)[:10]}",
            "azureTenantId": self.spec.tenant_id,
            "activeUserCount": 40 + number(self.key, "users") % 200,
            "createdDateTime": format_ticks(created),
            "currentScore": current,
            "enabledServices": ["HasExchange", "HasSharePoint", "HasOD4B", "HasMDEP"],
            "licensedUserCount": 50 + number(self.key, "licensed") % 250,
            "maxScore": max_score,
            "vendorInformation": {"provider": "SecureScore", "vendor": "Microsoft"},
            "averageComparativeScores": [
                {"basis": "AllTenants", "averageScore": 42.5},
                {"basis": "TotalSeats", "averageScore": 37.1},
            ],
            "controlScores": [
                {
                    "controlCategory": "Identity",
                    "controlName": "MFARegistrationV2",
                    "description": "Ensure all users can complete multifactor authentication.",
                    "score": round(current / 10, 2),
                },
                {
                    "controlCategory": "Device",
                    "controlName": "DefenderAVEnabled",
                    "description": "Turn on Microsoft Defender Antivirus.",
                    "score": 10.0,
                },
            ],
        }

    # -- alerts --------------------------------------------------------------------------------

    def alerts(self) -> list[Alert]:
        """Alerts ordered by lastUpdateDateTime then id (a snapshot)."""
        return self._alerts

    def alerts_between(self, low: int | None, high: int | None) -> list[Alert]:
        """Alerts whose ticks are in [low, high] (either bound optional), oldest first."""
        alerts = self._alerts
        keys = [a.ticks for a in alerts]
        start = bisect_left(keys, low) if low is not None else 0
        end = bisect_right(keys, high) if high is not None else len(alerts)
        return alerts[start:end]

    def add_alert(
        self, last_update_ticks: int, *, machine: int | None = None, severity: str = "medium"
    ) -> JsonObject:
        """A new alert with the given lastUpdateDateTime (an old one is a late arrival)."""
        with self._lock:
            k = self.spec.alerts + self._late_alerts
            self._late_alerts += 1
            alert = generate_alert(self, k, ticks=last_update_ticks, machine=machine)
            alert.body.update(severity=severity, status="new")
            self._publish([*self._alerts, alert])
        return alert.body

    def update_alert(self, alert_id: str, last_update_ticks: int, **changes: Any) -> JsonObject:
        """Change an alert (status, severity ...) and move its lastUpdateDateTime."""
        with self._lock:
            current = next((a for a in self._alerts if a.body["id"] == alert_id), None)
            if current is None:
                raise KeyError(alert_id)
            body = {
                **current.body,
                **changes,
                "lastUpdateDateTime": format_ticks(last_update_ticks),
            }
            rest = [a for a in self._alerts if a is not current]
            self._publish([*rest, Alert(last_update_ticks, body)])
        return body

    def _publish(self, alerts: list[Alert]) -> None:
        # Readers take `self._alerts` without the lock: publish a new sorted list in one step.
        self._alerts = sorted(alerts, key=alert_order)


@functools.lru_cache(maxsize=32_768)
def _cached_device(data: TenantData, i: int) -> _Device:
    return data._derive_device(i)
