"""The sixteen seed emails the platform's earlier workers were tested with, and what each says.

Every expectation below was read off the mail itself: the subject names the type, the
`Severity:` field the severity, `Timestamp:` (EST = UTC-5) the time, and the "Device
Information" block the identifiers. minimal-info-01 has neither severity nor timestamp:
it gets the default severity and the Date header's time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from avian_workers.mail.parse import parse_alert_email
from tests.avian_workers.mail.emails import SEED_DIR, seed

HQ = ("C0EAE4B2C3F1", "192.168.1.1", "FW-HQ-PRIMARY")


@dataclass(frozen=True)
class SeedExpectation:
    file: str
    alert_type: str
    severity: str
    occurred_at: datetime
    device: tuple[str | None, str | None, str | None]  # serial number, management IP, hostname
    message: str


def utc(day: int, hour: int, minute: int, second: int) -> datetime:
    return datetime(2025, 12, day, hour, minute, second, tzinfo=UTC)


SEEDS = (
    SeedExpectation(
        "atp-critical-01.eml", "atp_alert", "critical", utc(8, 20, 12, 44), HQ,
        "ATP: Advanced Threat Detected - Zero-Day Exploit",
    ),
    SeedExpectation(
        "botnet-high-01.eml", "botnet_alert", "high", utc(8, 17, 18, 33), HQ,
        "Botnet: Command & Control Communication Blocked",
    ),
    SeedExpectation(
        "cpu-medium-01.eml", "high_cpu", "medium", utc(8, 18, 42, 18), HQ,
        "High CPU: CPU Usage at 87%",
    ),
    SeedExpectation(
        "gav-high-01.eml", "gav_alert", "high", utc(8, 15, 22, 15), HQ,
        "Gateway AV: Virus Detected and Blocked",
    ),
    SeedExpectation(
        "interface-high-01.eml", "interface_down", "high", utc(8, 16, 15, 33), HQ,
        "Interface Down: X3 LAN Interface Disconnected",
    ),
    SeedExpectation(
        "ips-critical-01.eml", "ips_alert", "critical", utc(8, 19, 23, 45), HQ,
        "IPS Alert: Critical Intrusion Attempt Detected",
    ),
    SeedExpectation(
        "license-expired-critical-01.eml", "license_expiring", "critical", utc(8, 5, 5, 0), HQ,
        "License Expired: Gateway Anti-Virus License Has Expired",
    ),
    SeedExpectation(
        "license-medium-01.eml", "license_expiring", "medium", utc(8, 14, 0, 0), HQ,
        "License Expiring: IPS License Expires in 15 Days",
    ),
    SeedExpectation(
        "malware-critical-01.eml", "malware_detected", "critical", utc(8, 21, 45, 22), HQ,
        "Malware: Ransomware Detected and Blocked",
    ),
    SeedExpectation(
        "memory-medium-01.eml", "high_memory", "medium", utc(8, 19, 5, 47), HQ,
        "High Memory: Memory Usage at 92%",
    ),
    SeedExpectation(
        "minimal-info-01.eml", "security_alert", "info", utc(8, 23, 0, 0),
        ("C0EAE4B2C3F1", None, None), "Alert from SonicWall",
    ),
    SeedExpectation(
        "multiple-devices-01.eml", "vpn_down", "critical", utc(9, 0, 15, 30), HQ,
        "VPN Tunnel Down: Multiple Sites Affected",
    ),
    SeedExpectation(
        "security-info-01.eml", "security_alert", "info", utc(8, 13, 30, 15), HQ,
        "Security Alert: Suspicious Activity Detected",
    ),
    SeedExpectation(
        "unknown-device-01.eml", "ips_alert", "high", utc(8, 22, 22, 10),
        ("UNKNOWN-SERIAL-999", "172.16.50.1", "FW-BRANCH-UNKNOWN"),
        "IPS Alert: Intrusion Detected on Unknown Device",
    ),
    SeedExpectation(
        "vpn-high-01.eml", "vpn_down", "high", utc(8, 20, 45, 12), HQ,
        "VPN Down: Site-to-Site Tunnel Disconnected",
    ),
    SeedExpectation(
        "wan-critical-01.eml", "wan_down", "critical", utc(8, 21, 30, 22), HQ,
        "WAN Down: Primary WAN Interface Offline",
    ),
)  # fmt: skip


def test_the_table_covers_every_seed_email() -> None:
    assert {expected.file for expected in SEEDS} == {p.name for p in SEED_DIR.glob("*.eml")}
    assert len(SEEDS) == 16


@pytest.mark.parametrize("expected", SEEDS, ids=lambda expected: expected.file)
def test_seed_email_yields_one_alert_with_the_stated_facts(expected: SeedExpectation) -> None:
    parsed = parse_alert_email(seed(expected.file))

    assert parsed.not_alert_reason is None
    (alert,) = parsed.alerts
    assert alert.alert_type == expected.alert_type
    assert alert.severity == expected.severity
    assert alert.occurred_at == expected.occurred_at
    assert alert.occurred_at is not None
    assert alert.occurred_at.tzinfo is UTC
    assert (alert.serial_number, alert.management_ip, alert.hostname) == expected.device
    assert alert.message == expected.message
    assert parsed.subject == expected.message


@pytest.mark.parametrize("expected", SEEDS, ids=lambda expected: expected.file)
def test_seed_email_keeps_its_message_id_and_json_metadata(expected: SeedExpectation) -> None:
    parsed = parse_alert_email(seed(expected.file))

    (alert,) = parsed.alerts
    assert parsed.message_id is not None
    assert parsed.message_id.endswith("@sonicwall.example.com>")
    assert alert.metadata["message_id"] == parsed.message_id
    assert alert.metadata["subject"] == parsed.subject
    assert json.loads(json.dumps(alert.metadata)) == alert.metadata


def test_seed_times_come_from_the_body_except_minimal_which_uses_the_date_header() -> None:
    sources = {
        expected.file: parse_alert_email(seed(expected.file))
        .alerts[0]
        .metadata["occurred_at_source"]
        for expected in SEEDS
    }

    assert sources.pop("minimal-info-01.eml") == "date_header"
    assert set(sources.values()) == {"body"}


def test_seed_severities_are_explicit_except_minimal_which_defaults_to_info() -> None:
    sources = {
        expected.file: parse_alert_email(seed(expected.file)).alerts[0].metadata["severity_source"]
        for expected in SEEDS
    }

    assert sources.pop("minimal-info-01.eml") == "default"
    assert set(sources.values()) == {"severity"}


def test_numbered_instruction_mentioning_serial_number_is_not_read_as_a_label() -> None:
    # "3. Select device serial number: C0EAE4B2C3F1" appears in both licence seeds.
    parsed = parse_alert_email(seed("license-medium-01.eml"))

    fields = parsed.alerts[0].metadata["fields"]
    assert not any(key.endswith("select_device_serial_number") for key in fields)


def test_source_hostname_of_an_infected_host_is_not_the_firewall_hostname() -> None:
    parsed = parse_alert_email(seed("botnet-high-01.eml"))

    alert = parsed.alerts[0]
    assert alert.hostname == "FW-HQ-PRIMARY"
    assert alert.metadata["fields"]["source_hostname"] == "DESKTOP-WKS042"
    assert alert.metadata["src"] == {"ip": "10.0.2.78"}
    assert alert.metadata["dst"] == {"ip": "203.0.113.89"}
