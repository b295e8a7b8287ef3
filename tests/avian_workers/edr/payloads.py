"""Microsoft JSON objects shaped as the APIs return them, with overridable fields."""

from __future__ import annotations

from typing import Any

MACHINE_ID = "1e5bc9d7e413ddd7902c2932e418702b84d0cc07"
OTHER_MACHINE_ID = "7a1c4e2b9f0d83a6c5e1b2d4f6a8c0e2b4d6f8a1"
INTUNE_ID = "705c034c-034c-705c-4c03-5c704c035c70"
OTHER_INTUNE_ID = "f1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
AAD_ID = "80fe8ff8-2624-418e-9591-41f0491218f9"
OTHER_AAD_ID = "c0b5a9d2-6f1e-4c3b-9a8d-7e6f5a4b3c2d"
POLICY_ID = "4214b716-b3b4-4ff7-a07a-d1c5f1d9f2e3"


def defender_machine(**overrides: Any) -> dict[str, Any]:
    """One item of Defender `GET /api/machines`."""
    machine: dict[str, Any] = {
        "id": MACHINE_ID,
        "computerDnsName": "pc01.contoso.local",
        "firstSeen": "2024-03-01T08:12:40.1234567Z",
        "lastSeen": "2024-12-09T09:58:11.7130366Z",
        "osPlatform": "Windows11",
        "version": "23H2",
        "osVersion": "10.0.22631.4602",
        "osProcessor": "x64",
        "lastIpAddress": "10.0.0.15",
        "lastExternalIpAddress": "203.0.113.10",
        "healthStatus": "Active",
        "riskScore": "Medium",
        "exposureLevel": "Low",
        "isAadJoined": True,
        "aadDeviceId": AAD_ID,
        "machineTags": ["finance"],
        "onboardingStatus": "Onboarded",
    }
    machine.update(overrides)
    return machine


def managed_device(**overrides: Any) -> dict[str, Any]:
    """One item of Graph `GET /v1.0/deviceManagement/managedDevices`."""
    device: dict[str, Any] = {
        "id": INTUNE_ID,
        "userId": "2b4f9e1a-8c7d-4e6f-a5b4-c3d2e1f0a9b8",
        "deviceName": "PC01",
        "managedDeviceOwnerType": "company",
        "enrolledDateTime": "2024-03-01T08:00:00Z",
        "lastSyncDateTime": "2024-12-09T09:30:00Z",
        "operatingSystem": "Windows",
        "complianceState": "noncompliant",
        "osVersion": "10.0.22631.4602",
        "azureADRegistered": True,
        "deviceEnrollmentType": "windowsAzureADJoin",
        "azureADDeviceId": AAD_ID,
        "deviceRegistrationState": "registered",
        "userPrincipalName": "ada@contoso.com",
        "managementState": "managed",
    }
    device.update(overrides)
    return device


def device_evidence(**overrides: Any) -> dict[str, Any]:
    """One `deviceEvidence` entry of a Graph alert."""
    evidence: dict[str, Any] = {
        "@odata.type": "#microsoft.graph.security.deviceEvidence",
        "createdDateTime": "2024-12-09T09:50:00Z",
        "roles": [],
        "mdeDeviceId": MACHINE_ID,
        "azureAdDeviceId": AAD_ID,
        "deviceDnsName": "pc01.contoso.local",
        "osPlatform": "Windows11",
    }
    evidence.update(overrides)
    return evidence


def graph_alert(**overrides: Any) -> dict[str, Any]:
    """One item of Graph `GET /v1.0/security/alerts_v2`."""
    alert: dict[str, Any] = {
        "id": "da637551227677560813_-961444813",
        "providerAlertId": "da637551227677560813_-961444813",
        "incidentId": "28282",
        "status": "new",
        "severity": "high",
        "classification": None,
        "title": "Suspicious PowerShell command line",
        "description": "A suspicious PowerShell activity was observed on the machine.",
        "category": "Execution",
        "serviceSource": "microsoftDefenderForEndpoint",
        "detectionSource": "microsoftDefenderForEndpoint",
        "createdDateTime": "2024-12-09T09:51:02.1234567Z",
        "lastUpdateDateTime": "2024-12-09T09:55:41.9876543Z",
        "firstActivityDateTime": "2024-12-09T09:49:30.5000000Z",
        "lastActivityDateTime": "2024-12-09T09:50:10.0000000Z",
        "evidence": [
            {
                "@odata.type": "#microsoft.graph.security.userEvidence",
                "userAccount": {"accountName": "ada", "domainName": "CONTOSO"},
            },
            device_evidence(),
        ],
    }
    alert.update(overrides)
    return alert


def vulnerability_row(**overrides: Any) -> dict[str, Any]:
    """One item of Defender `GET /api/machines/SoftwareVulnerabilitiesByMachine`."""
    row: dict[str, Any] = {
        "id": f"{MACHINE_ID}_google_chrome_131.0.6778.86_CVE-2024-12053",
        "deviceId": MACHINE_ID,
        "rbacGroupName": "Unassigned",
        "deviceName": "pc01.contoso.local",
        "osPlatform": "Windows11",
        "osVersion": "10.0.22631.4602",
        "osArchitecture": "x64",
        "softwareVendor": "google",
        "softwareName": "chrome",
        "softwareVersion": "131.0.6778.86",
        "cveId": "CVE-2024-12053",
        "vulnerabilitySeverityLevel": "High",
        "cvssScore": 8.8,
        "recommendedSecurityUpdate": None,
        "diskPaths": ["C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe"],
        "registryPaths": [],
        "firstSeenTimestamp": "2024-12-04 10:13:34.8476880",
        "lastSeenTimestamp": "2024-12-09 09:00:00",
        "exploitabilityLevel": "ExploitIsPublic",
        "recommendationReference": "va-_-google-_-chrome",
    }
    row.update(overrides)
    return row


def policy_device_status_item(**overrides: Any) -> dict[str, Any]:
    """One item of Graph `.../deviceCompliancePolicies/{id}/deviceStatuses`."""
    status: dict[str, Any] = {
        "id": f"{INTUNE_ID}_{POLICY_ID}_2b4f9e1a-8c7d-4e6f-a5b4-c3d2e1f0a9b8",
        "deviceDisplayName": "PC01",
        "userName": "Ada Lovelace",
        "deviceModel": "Surface Laptop 5",
        "platform": 0,
        "complianceGracePeriodExpirationDateTime": "9999-12-31T23:59:59Z",
        "status": "nonCompliant",
        "lastReportedDateTime": "2024-12-09T09:30:00Z",
        "userPrincipalName": "ada@contoso.com",
    }
    status.update(overrides)
    return status
