"""The parser's rules one at a time: severity, alert type, time, identifiers, refusals."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from avian_workers.mail.parse import (
    ALERT_TYPES,
    MailParseError,
    ParsedAlert,
    ParsedMail,
    parse_alert_email,
)
from tests.avian_workers.mail.emails import all_real_emails, make_mail

LOG_LINE = 'id=firewall sn=C0EAE4B2C3F1 time="2025-01-09 10:11:12 UTC" fw=203.0.113.9 {extra}'


def only_alert(raw: bytes) -> ParsedAlert:
    parsed = parse_alert_email(raw)
    assert parsed.not_alert_reason is None, parsed.not_alert_reason
    (alert,) = parsed.alerts
    return alert


def test_alert_types_are_the_contract_list() -> None:
    assert set(ALERT_TYPES) == {
        "ips_alert", "vpn_down", "license_expiring", "wan_down", "interface_down", "high_cpu",
        "high_memory", "gav_alert", "malware_detected", "botnet_alert", "atp_alert",
        "security_alert",
    }  # fmt: skip
    assert len(ALERT_TYPES) == 12


# Severity -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stated", "severity"),
    [
        ("CRITICAL", "critical"),
        ("Critical (immediate action)", "critical"),
        ("High", "high"),
        ("medium", "medium"),
        ("Moderate", "medium"),
        ("LOW", "low"),
        ("Info", "info"),
        ("Informational", "info"),
        ("Warning", "medium"),
        ("Alert", "critical"),
        ("Error", "high"),
        ("[HIGH]", "high"),
        ('"Low"', "low"),
    ],
)
def test_explicit_severity_field_sets_the_severity(stated: str, severity: str) -> None:
    alert = only_alert(make_mail(f"Severity: {stated}\n", subject="IPS Alert"))

    assert alert.severity == severity
    assert alert.metadata["severity_source"] == "severity"


def test_severity_level_is_an_explicit_severity_field() -> None:
    alert = only_alert(make_mail("Severity Level: High\n", subject="IPS Alert"))

    assert alert.severity == "high"


@pytest.mark.parametrize(("priority", "severity"), [("High", "high"), ("Low", "low")])
def test_a_severity_word_in_the_priority_field_is_read_as_that_severity(
    priority: str, severity: str
) -> None:
    alert = only_alert(make_mail(f"Priority: {priority}\n", subject="IPS Alert"))

    assert alert.severity == severity


@pytest.mark.parametrize(
    ("priority", "severity"),
    [
        ("Emergency", "critical"),
        ("Alert", "critical"),
        ("Critical", "critical"),
        ("Error", "high"),
        ("Warning", "medium"),
        ("Notice", "low"),
        ("Inform", "info"),
        ("Informational", "info"),
        ("Debug", "info"),
    ],
)
def test_sonicwall_priority_name_maps_to_severity(priority: str, severity: str) -> None:
    alert = only_alert(make_mail(f"Priority: {priority}\n", subject="IPS Alert"))

    assert alert.severity == severity
    assert alert.metadata["severity_source"] == "priority"
    assert alert.metadata["priority"] == priority


@pytest.mark.parametrize(
    ("level", "severity"),
    [
        (0, "critical"),
        (1, "critical"),
        (2, "critical"),
        (3, "high"),
        (4, "medium"),
        (5, "low"),
        (6, "info"),
        (7, "info"),
    ],
)
def test_numeric_pri_syslog_level_maps_to_severity(level: int, severity: str) -> None:
    line = LOG_LINE.format(extra=f'pri={level} m=609 msg="IPS Prevention Alert"')

    assert only_alert(make_mail(line)).severity == severity


def test_pri_outside_the_syslog_levels_gives_the_default_severity() -> None:
    line = LOG_LINE.format(extra='pri=9 m=609 msg="IPS Prevention Alert"')

    alert = only_alert(make_mail(line))
    assert alert.severity == "info"
    assert alert.metadata["severity_source"] == "default"


def test_explicit_severity_wins_over_priority() -> None:
    alert = only_alert(make_mail("Severity: Low\nPriority: Emergency\n", subject="IPS Alert"))

    assert alert.severity == "low"


def test_unrecognised_severity_falls_back_to_the_priority() -> None:
    alert = only_alert(make_mail("Severity: 7/10\nPriority: Error\n", subject="IPS Alert"))

    assert alert.severity == "high"
    assert alert.metadata["severity_source"] == "priority"


@pytest.mark.parametrize("stated", ["allow", "Allowed", "below", "flow", "lowest-cost"])
def test_words_containing_low_are_not_low(stated: str) -> None:
    alert = only_alert(make_mail(f"Severity: {stated}\nAction: allow\n", subject="IPS Alert"))

    assert alert.severity == "info"
    assert alert.metadata["severity_source"] == "default"


def test_severity_words_in_the_subject_do_not_set_the_severity() -> None:
    # "High CPU" names the type; only a labelled severity or priority sets the severity.
    alert = only_alert(make_mail("CPU usage 95%\n", subject="High CPU: critical load"))

    assert alert.alert_type == "high_cpu"
    assert alert.severity == "info"


# Alert type -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "alert_type"),
    [
        ("IPS Alert: SQL injection", "ips_alert"),
        ("Intrusion Prevention: attack blocked", "ips_alert"),
        ("Intrusions detected", "ips_alert"),
        ("VPN Tunnel Down: HQ-to-Branch", "vpn_down"),
        ("VPN peer disconnected", "vpn_down"),
        ("Lost connection to VPN peer", "vpn_down"),
        ("IPsec tunnel failed", "vpn_down"),
        ("License Expiring: IPS License Expires in 15 Days", "license_expiring"),
        ("Licence expired: Gateway Anti-Virus", "license_expiring"),
        ("Expiring license: Capture ATP", "license_expiring"),
        ("WAN Down: Primary WAN Interface Offline", "wan_down"),
        ("Interface X3 link down", "interface_down"),
        ("Interface Down: X3 LAN Interface Disconnected", "interface_down"),
        ("High CPU: CPU Usage at 87%", "high_cpu"),
        ("CPU utilization above threshold", "high_cpu"),
        ("High Memory: Memory Usage at 92%", "high_memory"),
        ("Low memory warning", "high_memory"),
        ("Gateway AV: Virus Detected", "gav_alert"),
        ("Gateway Anti-Virus Alert: EICAR", "gav_alert"),
        ("GAV blocked a file", "gav_alert"),
        ("Malware: Ransomware Detected", "malware_detected"),
        ("Anti-Spyware alert: spyware blocked", "malware_detected"),
        ("Botnet: C&C traffic blocked", "botnet_alert"),
        ("Capture ATP: malicious verdict", "atp_alert"),
        ("Advanced Threat Protection verdict", "atp_alert"),
        ("Security Alert: Suspicious Activity", "security_alert"),
        ("Alert from SonicWall", "security_alert"),
        # 'dropped' after a security service means blocked, not a link going down
        ("IPS Prevention Alert: packet dropped on interface X1", "ips_alert"),
        ("Botnet Filter: WAN connection dropped", "botnet_alert"),
        ("Gateway Anti-Virus Alert: connection from WAN dropped", "gav_alert"),
        # a blocked packet is not a link down, a failed sign-in is not a tunnel down
        ("Alert: Packet dropped on interface X1", "security_alert"),
        ("Alert: Packet(s) dropped on interface X1", "security_alert"),
        ("Alert: dropped packets on interface X2 (policy)", "security_alert"),
        ("Alert: 3 packets were dropped on interface X1", "security_alert"),
        ("Alert: Dropped 12 packets on interface X2", "security_alert"),
        ("Alert: packets lost on link X3", "security_alert"),
        ("IPsec Authentication Failed: peer 203.0.113.9 alert", "security_alert"),
        ("VPN login failure for user bob: alert", "security_alert"),
        ("VPN user login attempt failed: alert", "security_alert"),
        ("VPN authentication for user admin failed: alert", "security_alert"),
        ("SSL VPN: login from 198.51.100.4 failed (alert)", "security_alert"),
        ("Alert: UDP packet from WAN dropped", "security_alert"),
        ("Alert: Dropped TCP packet on interface X1", "security_alert"),
        ("VPN: authentication has failed for user bob (alert)", "security_alert"),
        ("VPN password check failed: alert", "security_alert"),
        ("WAN connection dropped", "wan_down"),
        ("Interface X1 link lost", "interface_down"),
        ("IKE negotiation failed: VPN tunnel HQ-to-Branch", "vpn_down"),
        ("VPN Tunnel Down - Peer IKE authentication failed", "vpn_down"),
        ("Dropped packet: interface X1 down", "interface_down"),
        ("WAN connection lost, traffic rerouted to X2", "wan_down"),
        ("WAN link lost: 0 packets received", "wan_down"),
        ("Dead Peer Detection: VPN tunnel lost, no packets received", "vpn_down"),
        ("Lost WAN connectivity; traffic stopped", "wan_down"),
        ("WAN lost: no traffic received from ISP gateway", "wan_down"),
        ("VPN Tunnel Failed: Phase 2 negotiation failed (Authentication method: PSK)", "vpn_down"),
        ("IPsec auth OK, tunnel failed", "vpn_down"),
    ],
)
def test_subject_names_the_alert_type(subject: str, alert_type: str) -> None:
    assert only_alert(make_mail("Serial Number: C0EAE4B2C3F1\n", subject=subject)).alert_type == (
        alert_type
    )


@pytest.mark.parametrize(
    "subject",
    [
        "DPI-SSL certificate alert",  # DPI is not IPS
        "Tips and relationships alert",  # "ips" inside words
        "SHIPS tracking alert",
        "Gateway AVerage latency alert",
        "WANTED: downstream report alert",
        "CPUs inventory alert",
        "Botnetwork naming alert",
        "Download from the portal alert",
        "Alert: 3 blocked IPs from Geo-IP filter",  # IP addresses, not IPS
        "Anti-Virus signature update alert",  # the product, not a virus found
    ],
)
def test_type_words_inside_other_words_do_not_count(subject: str) -> None:
    assert only_alert(make_mail("", subject=subject)).alert_type == "security_alert"


@pytest.mark.parametrize(
    ("subject", "alert_type"),
    [
        ("VPN tunnel HQ-to-Branch re-established after being down", "vpn_down"),
        ("WAN connection restored (was offline for 5 minutes)", "wan_down"),
        ("Interface X3 link back up after going down", "interface_down"),
        ("VPN Tunnel Re-established", "vpn_down"),
        ("Alert: WAN connection restored", "wan_down"),
        ("Restored WAN connection on X1", "wan_down"),
        ("VPN tunnel to Branch Office re-established", "vpn_down"),
        ("VPN Tunnel 'HQ-Branch' re-established", "vpn_down"),
        ("IPsec SA re-established", "vpn_down"),
        ("WAN Interface (X1) restored", "wan_down"),
        ("WAN Failover: primary WAN restored, traffic back on X1", "wan_down"),
        ("Interface X1 is back online after link failure", "interface_down"),
        ("VPN tunnel 'Main Office to Branch 2' re-established", "vpn_down"),
        ("VPN Tunnel HQ <-> Branch re-established", "vpn_down"),
        ("Connection to VPN peer restored", "vpn_down"),
        ("WAN IP changed; connection restored", "wan_down"),
        ("Link down detected on X3 then restored", "interface_down"),
        ("VPN peer is unreachable, tunnel re-established", "vpn_down"),
    ],
)
def test_a_link_or_tunnel_that_came_back_is_its_type_at_info_severity(
    subject: str, alert_type: str
) -> None:
    alert = only_alert(make_mail("Serial Number: 1\nSeverity: High\n", subject=subject))

    assert (alert.alert_type, alert.severity) == (alert_type, "info")
    assert alert.metadata["recovery"] is True
    assert alert.metadata["severity_stated"] == "high"


@pytest.mark.parametrize(
    ("subject", "alert_type"),
    [
        ("WAN Down: primary WAN offline, failover link is up", "wan_down"),
        ("WAN Down: primary WAN offline, traffic resumed on failover link X2", "wan_down"),
        ("Interface X1 down; service restored via X2", "interface_down"),
        ("WAN Down: primary WAN offline, connection restored via backup WAN", "wan_down"),
        ("VPN tunnel to HQ down; failover tunnel re-established", "vpn_down"),
        ("Interface X1 down; link recovered on X2", "interface_down"),
        ("WAN Down: primary WAN offline, failover connection restored", "wan_down"),
        ("VPN tunnel down: could not be re-established", "vpn_down"),
        ("WAN connection lost; not yet restored", "wan_down"),
        ("WAN down. ISP reports service will be restored by 14:00", "wan_down"),
        ("Interface X1 link flapping: link restored, then link down", "interface_down"),
        ("WAN connection restored at 10:02, lost again at 10:05", "wan_down"),
        ("VPN tunnel could not be re-established", "vpn_down"),
    ],
)
def test_an_outage_that_mentions_something_else_coming_back_stays_an_outage(
    subject: str, alert_type: str
) -> None:
    alert = only_alert(make_mail("Serial Number: 1\nSeverity: High\n", subject=subject))

    assert (alert.alert_type, alert.severity) == (alert_type, "high")
    assert "recovery" not in alert.metadata


@pytest.mark.parametrize(
    "subject",
    [
        "Alert: ARP entry restored on interface X0",
        "Alert: Connection restored to AVIAN cloud via WAN",
    ],
)
def test_something_else_restored_on_a_link_is_no_link_type(subject: str) -> None:
    alert = only_alert(make_mail("Serial Number: 1\nSeverity: High\n", subject=subject))

    assert (alert.alert_type, alert.severity) == ("security_alert", "high")


@pytest.mark.parametrize(
    "subject",
    [
        "Alert: Backup restored; WAN settings applied",
        "Alert: Restored default settings on interface X0",
        "Alert: Failover: WAN connection restored on secondary",
    ],
)
def test_a_restore_near_a_link_never_pages_as_an_outage(subject: str) -> None:
    # Without a down word a restore is at most the link's news at info, never an outage.
    alert = only_alert(make_mail("Serial Number: 1\nSeverity: High\n", subject=subject))

    assert alert.alert_type == "security_alert" or alert.severity == "info"


def test_a_recovery_without_a_stated_severity_states_none() -> None:
    alert = only_alert(make_mail("Serial Number: 1\n", subject="WAN connection restored"))

    assert (alert.alert_type, alert.severity) == ("wan_down", "info")
    assert alert.metadata["recovery"] is True
    assert "severity_stated" not in alert.metadata


def test_alert_type_field_is_read_before_the_subject() -> None:
    alert = only_alert(make_mail("Alert Type: Botnet Filter\n", subject="IPS Alert"))

    assert alert.alert_type == "botnet_alert"


def test_type_is_found_in_the_body_headline_when_subject_and_fields_are_generic() -> None:
    alert = only_alert(make_mail("SonicWall Botnet Filter Alert\n\nSN: 1\n", subject="Alert"))

    assert alert.alert_type == "botnet_alert"


def test_words_far_into_the_body_do_not_decide_the_type() -> None:
    body = "SonicWall Alert\n\nPossible causes:\n- VPN encryption load\n- Botnet filter\n"

    assert only_alert(make_mail(body, subject="Resource notice")).alert_type == "security_alert"


def test_log_line_without_type_words_is_a_generic_security_alert() -> None:
    line = LOG_LINE.format(extra='pri=6 m=97 msg="Web site access allowed"')

    assert only_alert(make_mail(line, subject="Log")).alert_type == "security_alert"


# Not alerts -----------------------------------------------------------------------------


def test_free_text_without_alert_words_is_not_an_alert() -> None:
    parsed = parse_alert_email(make_mail("Lunch is at noon.\n", subject="Friday lunch"))

    assert parsed.alerts == ()
    assert parsed.not_alert_reason == "no alert keywords in subject or body"


def test_automatic_reply_is_not_an_alert_even_when_it_quotes_one() -> None:
    raw = make_mail(
        "I am out of office.\n> IPS Alert: Intrusion\n",
        subject="Automatic reply: IPS Alert: Intrusion",
        headers={"Auto-Submitted": "auto-replied"},
    )

    parsed = parse_alert_email(raw)
    assert parsed.alerts == ()
    assert parsed.not_alert_reason == "automatic reply"


def test_auto_generated_mail_is_still_an_alert() -> None:
    # Firewalls mark their own alerts auto-generated; only replies are excluded.
    raw = make_mail("", subject="IPS Alert", headers={"Auto-Submitted": "auto-generated"})

    assert only_alert(raw).alert_type == "ips_alert"


def test_delivery_status_report_is_not_an_alert() -> None:
    raw = make_mail(
        "--r\nContent-Type: text/plain\n\nIPS Alert could not be delivered\n--r--\n",
        subject="Undelivered Mail Returned to Sender",
        content_type='multipart/report; report-type=delivery-status; boundary="r"',
    )

    assert parse_alert_email(raw).not_alert_reason == "delivery or read report"


def test_parsed_mail_has_alerts_or_a_reason_never_both_nor_neither() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        ParsedMail(message_id=None, subject="", sent_at=None, alerts=(), not_alert_reason=None)


# Time -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("2025-01-09 10:11:12 UTC", datetime(2025, 1, 9, 10, 11, 12, tzinfo=UTC)),
        ("2025-01-09T10:11:12Z", datetime(2025, 1, 9, 10, 11, 12, tzinfo=UTC)),
        ("2025-01-09T10:11:12.250+02:00", datetime(2025, 1, 9, 8, 11, 12, 250000, tzinfo=UTC)),
        ("2025-01-09 10:11:12 -0500", datetime(2025, 1, 9, 15, 11, 12, tzinfo=UTC)),
        ("2025-01-09 10:11:12 EST", datetime(2025, 1, 9, 15, 11, 12, tzinfo=UTC)),
        ("2025-07-09 10:11:12 EDT", datetime(2025, 7, 9, 14, 11, 12, tzinfo=UTC)),
        ("2025-01-09 10:11:12 UTC+01:00", datetime(2025, 1, 9, 9, 11, 12, tzinfo=UTC)),
        ("01/09/2025 10:11:12 PM PST", datetime(2025, 1, 10, 6, 11, 12, tzinfo=UTC)),
        ("01/09/2025 12:05:00 AM UTC", datetime(2025, 1, 9, 0, 5, 0, tzinfo=UTC)),
        ("Jan 9 2025 10:11:12 GMT", datetime(2025, 1, 9, 10, 11, 12, tzinfo=UTC)),
        ("Thu, 09 Jan 2025 10:11:12 +0100", datetime(2025, 1, 9, 9, 11, 12, tzinfo=UTC)),
    ],
)
def test_body_time_formats_are_read_as_utc(written: str, expected: datetime) -> None:
    alert = only_alert(make_mail(f"Timestamp: {written}\n", subject="IPS Alert"))

    assert alert.occurred_at == expected
    assert alert.occurred_at is not None
    assert alert.occurred_at.tzinfo is UTC
    assert alert.metadata["occurred_at_source"] == "body"


def test_body_time_without_a_zone_takes_the_date_header_offset() -> None:
    raw = make_mail(
        "Time: 2025-01-09 10:11:12\n", subject="IPS Alert", date="Thu, 09 Jan 2025 10:12:00 -0500"
    )

    alert = only_alert(raw)
    assert alert.occurred_at == datetime(2025, 1, 9, 15, 11, 12, tzinfo=UTC)
    assert alert.metadata["timezone_assumed"] == "date_header"


def test_body_time_without_a_zone_or_date_header_is_utc() -> None:
    alert = only_alert(make_mail("Time: 2025-01-09 10:11:12\n", subject="IPS Alert", date=None))

    assert alert.occurred_at == datetime(2025, 1, 9, 10, 11, 12, tzinfo=UTC)
    assert alert.metadata["timezone_assumed"] == "utc"


def test_rfc_body_time_without_a_zone_takes_the_date_header_offset_too() -> None:
    raw = make_mail(
        "Time: Thu, 09 Jan 2025 10:11:12\n",
        subject="IPS Alert",
        date="Thu, 09 Jan 2025 10:12:00 -0500",
    )

    alert = only_alert(raw)
    assert alert.occurred_at == datetime(2025, 1, 9, 15, 11, 12, tzinfo=UTC)
    assert alert.metadata["timezone_assumed"] == "date_header"


@pytest.mark.parametrize("offset", ["+2300", "+1960", "-0575"])
def test_a_date_header_with_an_impossible_offset_is_not_used(offset: str) -> None:
    raw = make_mail(
        "Time: 2025-01-09 10:11:12\n",
        subject="IPS Alert",
        date=f"Thu, 09 Jan 2025 10:12:00 {offset}",
    )

    parsed = parse_alert_email(raw)
    assert parsed.sent_at is None
    assert parsed.alerts[0].occurred_at == datetime(2025, 1, 9, 10, 11, 12, tzinfo=UTC)
    assert parsed.alerts[0].metadata["timezone_assumed"] == "utc"


def test_impossible_body_time_falls_back_to_the_date_header() -> None:
    alert = only_alert(make_mail("Timestamp: 2025-02-30 10:00:00 UTC\n", subject="IPS Alert"))

    assert alert.occurred_at == datetime(2025, 1, 9, 10, 0, 0, tzinfo=UTC)
    assert alert.metadata["occurred_at_source"] == "date_header"


def test_time_is_unknown_without_body_time_or_date_header() -> None:
    parsed = parse_alert_email(make_mail("", subject="IPS Alert", date=None))

    assert parsed.sent_at is None
    assert parsed.alerts[0].occurred_at is None
    assert "occurred_at_source" not in parsed.alerts[0].metadata


def test_unreadable_date_header_leaves_sent_at_unknown() -> None:
    parsed = parse_alert_email(make_mail("", subject="IPS Alert", date="yesterday-ish"))

    assert parsed.sent_at is None


# Device identifiers ---------------------------------------------------------------------


def test_unlabelled_upper_case_tokens_are_not_serial_numbers() -> None:
    body = "IPS event on C0EAE4B2C3F1\nReference: ABCDEF1234567890\nTICKET QWERTYUIOPASDF\n"

    alert = only_alert(make_mail(body, subject="IPS Alert"))
    assert alert.serial_number is None


@pytest.mark.parametrize(
    "label",
    [
        "Serial Number",
        "Serial",
        "Serial No",
        "S/N",
        "SN",
        "Device S/N",
        "Firewall Serial Number",
        "Serial Number (SN)",
        "SerialNumber",
    ],
)
def test_labelled_serial_number_is_read(label: str) -> None:
    alert = only_alert(make_mail(f"{label}: c0eae4b2c3f1\n", subject="IPS Alert"))

    assert alert.serial_number == "c0eae4b2c3f1"


@pytest.mark.parametrize("placeholder", ["N/A", "unknown", "-", "none", "Not Available"])
def test_placeholder_serial_number_is_no_serial_number(placeholder: str) -> None:
    alert = only_alert(make_mail(f"Serial Number: {placeholder}\n", subject="IPS Alert"))

    assert alert.serial_number is None


def test_management_ip_is_normalised() -> None:
    body = "Management IP: 2001:DB8:0:0::1 (IPv6)\n"

    assert only_alert(make_mail(body, subject="IPS Alert")).management_ip == "2001:db8::1"


def test_management_ip_that_is_not_an_address_is_ignored() -> None:
    alert = only_alert(make_mail("Management IP: firewall.local\n", subject="IPS Alert"))

    assert alert.management_ip is None


@pytest.mark.parametrize("label", ["Hostname", "Host Name", "Device Name", "Firewall Name"])
def test_labelled_host_name_is_read(label: str) -> None:
    alert = only_alert(make_mail(f"{label}: FW-HQ-PRIMARY\n", subject="IPS Alert"))

    assert alert.hostname == "FW-HQ-PRIMARY"


def test_other_host_names_are_not_the_firewall() -> None:
    body = "Source Hostname: DESKTOP-1\nDestination Host: example.test\n"

    assert only_alert(make_mail(body, subject="IPS Alert")).hostname is None


def test_log_line_sn_and_fw_are_the_serial_number_and_management_ip() -> None:
    line = 'id=fw sn=0040103C0FFE fw=198.51.100.1 pri=1 m=609 msg="IPS Prevention Alert"'

    alert = only_alert(make_mail(line))
    assert (alert.serial_number, alert.management_ip) == ("0040103C0FFE", "198.51.100.1")


# Message --------------------------------------------------------------------------------


def test_explicit_message_field_wins_over_the_subject() -> None:
    alert = only_alert(make_mail("Message: Port scan from 203.0.113.7\n", subject="IPS Alert"))

    assert alert.message == "Port scan from 203.0.113.7"


def test_message_falls_back_to_the_subject() -> None:
    assert only_alert(make_mail("SN: 1\n", subject="IPS Alert: scan")).message == "IPS Alert: scan"


def test_message_falls_back_to_the_first_body_line_without_a_subject() -> None:
    alert = only_alert(make_mail("\n====\nBotnet filter alert\nSN: 1\n", subject=None))

    assert alert.message == "Botnet filter alert"


# Refusals and hygiene -------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"", b"   \r\n\t  "])
def test_empty_message_is_refused(raw: bytes) -> None:
    with pytest.raises(MailParseError, match="empty"):
        parse_alert_email(raw)


def test_bytes_without_header_fields_are_refused() -> None:
    with pytest.raises(MailParseError, match="no header fields"):
        parse_alert_email(b"\x89PNG\r\n\x1a\n binary data, not mail")


def test_oversized_body_is_refused_rather_than_half_read() -> None:
    with pytest.raises(MailParseError, match="above the 1000000 limit"):
        parse_alert_email(make_mail("IPS Alert " * 110_000))


def test_mail_parse_error_is_a_value_error() -> None:
    assert issubclass(MailParseError, ValueError)


def test_nul_bytes_and_control_characters_never_reach_the_output() -> None:
    raw = make_mail("Message: IPS\x00 hit\x07 here\nHostname: FW\x00-1\n", subject="IPS\x00 Alert")

    parsed = parse_alert_email(raw)
    alert = parsed.alerts[0]
    assert (parsed.subject, alert.message, alert.hostname) == ("IPS Alert", "IPS hit here", "FW-1")
    assert "\\u0000" not in json.dumps(alert.metadata)


def test_broken_encoded_word_in_the_subject_is_kept_as_written() -> None:
    parsed = parse_alert_email(make_mail("", subject="=?utf-8?b?!!!not-base64?= IPS Alert"))

    assert parsed.subject == "=?utf-8?b?!!!not-base64?= IPS Alert"
    assert parsed.alerts[0].alert_type == "ips_alert"


@pytest.mark.parametrize(("name", "raw"), all_real_emails().items(), ids=list(all_real_emails()))
def test_every_real_email_gives_json_metadata_and_utc_times(name: str, raw: bytes) -> None:
    parsed = parse_alert_email(raw)

    for alert in parsed.alerts:
        assert alert.alert_type in ALERT_TYPES
        assert json.loads(json.dumps(alert.metadata)) == alert.metadata
        assert alert.occurred_at is not None
        assert alert.occurred_at.tzinfo is UTC
        assert alert.message
