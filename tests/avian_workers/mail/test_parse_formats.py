"""Our own fixtures (tests/fixtures/emails): every layout and encoding real SonicWall mail uses."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from avian_workers.mail.parse import MailParseError, ParsedAlert, parse_alert_email
from tests.avian_workers.mail.emails import fixture, make_mail


@dataclass(frozen=True)
class AlertExpectation:
    alert_type: str
    severity: str
    occurred_at: datetime
    device: tuple[str | None, str | None, str | None]  # serial number, management IP, hostname
    message: str


def facts(alert: ParsedAlert) -> AlertExpectation:
    assert alert.occurred_at is not None
    return AlertExpectation(
        alert.alert_type,
        alert.severity,
        alert.occurred_at,
        (alert.serial_number, alert.management_ip, alert.hostname),
        alert.message,
    )


def jan(day: int, hour: int, minute: int, second: int) -> datetime:
    return datetime(2025, 1, day, hour, minute, second, tzinfo=UTC)


FIXTURES = {
    "sonicos-logline-ips.eml": [
        AlertExpectation(
            "ips_alert", "critical", jan(9, 10, 11, 12), ("C0EAE4B2C3F1", "203.0.113.9", None),
            "IPS Prevention Alert: WEB-ATTACKS SQL Injection Attempt, SID 7210",
        ),
    ],
    "sonicos-loglines-three-events.eml": [
        AlertExpectation(
            "gav_alert", "high", jan(9, 10, 15, 0), ("C0EAE4B2C3F1", "203.0.113.9", None),
            "Gateway Anti-Virus Alert: Trojan.Agent blocked",
        ),
        AlertExpectation(
            "botnet_alert", "medium", jan(9, 10, 16, 30), ("C0EAE4B2C3F1", "203.0.113.9", None),
            "Botnet Filter: connection to command and control host blocked",
        ),
        AlertExpectation(
            "security_alert", "info", jan(9, 10, 20, 0), ("C0EAE4B2C3F1", "203.0.113.9", None),
            "Web site access allowed",
        ),
    ],
    "html-only-gav.eml": [
        AlertExpectation(
            "gav_alert", "high", jan(9, 11, 0, 5), ("C0EAE4B2C3F1", "192.168.1.1", "FW-HQ-PRIMARY"),
            'Virus "EICAR-Test-File" blocked & logged',
        ),
    ],
    "quoted-printable-logline.eml": [
        AlertExpectation(
            "vpn_down", "critical", jan(9, 12, 0, 0), ("C0EAE4B2C3F1", "203.0.113.9", None),
            "VPN Tunnel down: HQ-to-Branch1 peer 198.51.100.50 unreachable",
        ),
    ],
    "multipart-alternative-cpu.eml": [
        AlertExpectation(
            "high_cpu", "medium", jan(9, 13, 0, 0),
            ("C0EAE4B2C3F1", "192.168.1.1", "FW-HQ-PRIMARY"), "High CPU: CPU Usage at 88%",
        ),
    ],
    "base64-wan-down.eml": [
        AlertExpectation(
            "wan_down", "critical", jan(9, 12, 30, 0), ("18B1690A2B3C", "10.20.0.1", "FW-MTL-01"),
            "WAN interface X1 is down",
        ),
    ],
    "wrong-charset-latin1-declared-utf8.eml": [
        AlertExpectation(
            "ips_alert", "high", jan(9, 21, 45, 0), ("C0EAE4B2C3F1", None, "FW-QC-L\u00e9vis"),
            "Tentative d'intrusion bloqu\u00e9e",
        ),
    ],
    "unknown-charset-license.eml": [
        AlertExpectation(
            "license_expiring", "medium", jan(10, 7, 0, 0), ("C0EAE4B2C3F1", None, None),
            "License Expiring: Capture ATP license expires in 30 days",
        ),
    ],
    "csv-digest-four-events.eml": [
        AlertExpectation(
            "ips_alert", "critical", jan(9, 9, 0, 1), ("C0EAE4B2C3F1", "192.168.1.1", None),
            "IPS Detection Alert: ICMP Ping of death, SID 1",
        ),
        AlertExpectation(
            "gav_alert", "high", jan(9, 9, 5, 0), ("C0EAE4B2C3F1", "192.168.1.1", None),
            "Gateway Anti-Virus Alert: EICAR blocked",
        ),
        AlertExpectation(
            "botnet_alert", "medium", jan(9, 9, 10, 0), ("C0EAE4B2C3F1", "192.168.1.1", None),
            "Connection to C&C server dropped",
        ),
        AlertExpectation(
            "interface_down", "low", jan(9, 9, 15, 0), ("0040103C0FFE", "192.168.1.1", None),
            "Interface X3 link down",
        ),
    ],
    "unknown-device-logline.eml": [
        AlertExpectation(
            "vpn_down", "critical", jan(9, 14, 0, 0), ("0017C5000001", "198.18.0.1", None),
            "VPN Tunnel down: peer 198.51.100.60 unreachable",
        ),
    ],
    "no-message-id.eml": [
        AlertExpectation(
            "high_memory", "low", jan(9, 20, 0, 0), ("C0EAE4B2C3F1", None, None),
            "High Memory: Memory Usage at 91%",
        ),
    ],
}  # fmt: skip


@pytest.mark.parametrize(("name", "expected"), FIXTURES.items(), ids=list(FIXTURES))
def test_fixture_yields_the_alerts_it_describes(
    name: str, expected: list[AlertExpectation]
) -> None:
    parsed = parse_alert_email(fixture(name))

    assert parsed.not_alert_reason is None
    assert [facts(alert) for alert in parsed.alerts] == expected


def test_log_line_keeps_event_id_category_and_endpoints_in_metadata() -> None:
    (alert,) = parse_alert_email(fixture("sonicos-logline-ips.eml")).alerts

    assert alert.metadata["format"] == "sonicos_log"
    assert alert.metadata["event_id"] == "609"
    assert alert.metadata["category"] == "32"
    assert alert.metadata["priority"] == "1"
    assert alert.metadata["src"] == {"ip": "198.51.100.7", "port": 443, "interface": "X1"}
    assert alert.metadata["dst"] == {"ip": "10.0.0.5", "port": 51514, "interface": "X0"}
    assert alert.metadata["fields"]["note"] == "Dropped"
    assert alert.metadata["fields"]["proto"] == "tcp/https"


def test_labelled_lines_around_a_log_line_are_kept_as_mail_fields() -> None:
    (alert,) = parse_alert_email(fixture("quoted-printable-logline.eml")).alerts

    assert alert.metadata["mail_fields"] == {
        "note": 'tunnel "HQ-to-Branch1" r\u00e9essaie dans 30 s'
    }


def test_log_line_without_device_identifiers_takes_them_from_labelled_lines() -> None:
    body = 'Hostname: FW-HQ-PRIMARY\nid=firewall pri=1 m=609 msg="IPS Prevention Alert"\n'

    (alert,) = parse_alert_email(make_mail(body)).alerts
    assert (alert.hostname, alert.metadata["format"]) == ("FW-HQ-PRIMARY", "sonicos_log")


def test_each_log_line_of_a_body_is_its_own_alert_with_its_line_number() -> None:
    alerts = parse_alert_email(fixture("sonicos-loglines-three-events.eml")).alerts

    assert [alert.metadata["line"] for alert in alerts] == [3, 4, 5]
    assert [alert.metadata["event_id"] for alert in alerts] == ["1200", "1198", "97"]


def test_a_log_line_saying_allowed_is_not_read_as_low_severity() -> None:
    alert = parse_alert_email(fixture("sonicos-loglines-three-events.eml")).alerts[2]

    assert alert.message == "Web site access allowed"
    assert alert.severity == "info"  # pri=6, informational
    assert alert.metadata["severity_source"] == "priority"


def test_html_only_mail_ignores_head_style_and_script_text() -> None:
    # The <title> and <style> mention IPS and the <script> says "low"; none of it is content.
    (alert,) = parse_alert_email(fixture("html-only-gav.eml")).alerts

    assert alert.alert_type == "gav_alert"
    assert alert.metadata["body_part"] == "text/html"
    assert alert.metadata["fields"]["alert_type"] == "Gateway Anti-Virus"
    assert "IPS" not in str(alert.metadata)


def test_html_with_a_marked_section_the_html_parser_rejects_is_still_read() -> None:
    body = (
        "<p>IPS Alert</p><![x]><table><tr><td>Serial Number</td><td>C0EAE4B2C3F1</td></tr>"
        "<tr><td>Severity</td><td>High</td></tr></table>"
    )

    alert = only_alert(make_mail(body, content_type="text/html; charset=utf-8"))
    assert (alert.alert_type, alert.serial_number, alert.severity) == (
        "ips_alert",
        "C0EAE4B2C3F1",
        "high",
    )


def test_multipart_alternative_reads_the_plain_text_part() -> None:
    # The HTML alternative states a different serial and severity on purpose.
    (alert,) = parse_alert_email(fixture("multipart-alternative-cpu.eml")).alerts

    assert alert.metadata["body_part"] == "text/plain"
    assert alert.serial_number == "C0EAE4B2C3F1"
    assert alert.metadata["fields"]["site"] == "Montr\u00e9al"


def test_multipart_alternative_with_a_blank_plain_part_reads_the_html_part() -> None:
    raw = b"""Subject: SonicWall Alert
Date: Thu, 09 Jan 2025 10:00:00 +0000
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="b"

--b
Content-Type: text/plain; charset=us-ascii

\x20\x20
--b
Content-Type: text/html; charset=us-ascii

<p>Botnet Filter Alert</p><table><tr><td>Serial Number</td><td>C0EAE4B2C3F1</td></tr></table>
--b--
"""
    (alert,) = parse_alert_email(raw).alerts

    assert alert.alert_type == "botnet_alert"
    assert alert.serial_number == "C0EAE4B2C3F1"
    assert alert.metadata["body_part"] == "text/html"


def test_base64_body_and_rfc2047_subject_are_decoded() -> None:
    parsed = parse_alert_email(fixture("base64-wan-down.eml"))

    assert parsed.subject == "Alerte : WAN Down \u2013 Montr\u00e9al"
    assert parsed.alerts[0].metadata["fields"]["site"] == "Montr\u00e9al \u2014 Succursale"


def test_quoted_printable_soft_line_breaks_rejoin_the_log_line() -> None:
    (alert,) = parse_alert_email(fixture("quoted-printable-logline.eml")).alerts

    assert alert.metadata["fields"]["n"] == "48213"
    assert alert.metadata["dst"] == {"ip": "198.51.100.50", "port": 500, "interface": "X1"}


def test_latin1_bytes_declared_as_utf8_decode_as_latin_text_and_say_so() -> None:
    parsed = parse_alert_email(fixture("wrong-charset-latin1-declared-utf8.eml"))

    assert parsed.subject == "Alerte IPS: tentative bloqu\u00e9e"
    assert parsed.alerts[0].metadata["body_charset"] == {"declared": "utf-8", "used": "cp1252"}


def test_unknown_charset_name_falls_back_to_utf8() -> None:
    (alert,) = parse_alert_email(fixture("unknown-charset-license.eml")).alerts

    assert alert.metadata["body_charset"] == {"declared": "x-avian-unknown", "used": "utf-8"}
    assert alert.metadata["fields"]["ger\u00e4t"] == "B\u00fcro-Firewall"


def test_csv_digest_rows_become_alerts_in_order_with_their_row_numbers() -> None:
    alerts = parse_alert_email(fixture("csv-digest-four-events.eml")).alerts

    # The blank line between rows 3 and 4 of the attachment is not an event.
    assert [alert.metadata["csv_row"] for alert in alerts] == [1, 2, 3, 4]
    assert {alert.metadata["csv_file"] for alert in alerts} == {"events.csv"}
    assert [alert.metadata["event_id"] for alert in alerts] == ["608", "809", "1194", "1001"]
    assert [alert.metadata["format"] for alert in alerts] == ["csv_digest"] * 4


def test_csv_digest_row_without_a_zone_is_read_in_the_date_header_offset() -> None:
    last = parse_alert_email(fixture("csv-digest-four-events.eml")).alerts[3]

    assert last.metadata["timezone_assumed"] == "date_header"


def test_csv_digest_rows_take_the_device_from_the_mail_body_unless_they_name_one() -> None:
    alerts = parse_alert_email(fixture("csv-digest-four-events.eml")).alerts

    assert [alert.serial_number for alert in alerts] == [
        "C0EAE4B2C3F1",
        "C0EAE4B2C3F1",
        "C0EAE4B2C3F1",
        "0040103C0FFE",
    ]


def test_csv_digest_with_semicolons_and_separate_date_and_time_columns() -> None:
    csv_text = (
        "Date;Time;Severity;Message;Serial Number\n"
        "2025-01-09;08:00:00 UTC;High;Possible port scan detected;C0EAE4B2C3F1\n"
    )
    alerts = parse_alert_email(digest_mail(csv_text)).alerts

    assert [(a.alert_type, a.severity, a.occurred_at) for a in alerts] == [
        ("security_alert", "high", jan(9, 8, 0, 0))
    ]


@pytest.mark.parametrize("before", ["SonicWall Log Digest\n", "sep=;\n", "\nDaily report,TZ570\n"])
def test_csv_digest_header_may_follow_a_title_line(before: str) -> None:
    csv_text = before + "Time;Priority;Message\n2025-01-09 10:00:00;Alert;IPS Prevention Alert\n"

    (alert,) = parse_alert_email(digest_mail(csv_text)).alerts

    assert alert.alert_type == "ips_alert"
    assert alert.severity == "critical"


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (
            b"\xef\xbb\xbfTime,Priority,Message\n2025-01-09 10:00:00,Alert,IPS Prevention Alert\n",
            'text/csv; charset=windows-1252; name="digest.csv"',
        ),
        (
            "\ufeffTime,Priority,Message\n2025-01-09 10:00:00,Alert,IPS Prevention Alert\n".encode(
                "utf-16-le"
            ),
            'text/csv; name="digest.csv"',
        ),
    ],
    ids=["utf-8 BOM, charset says windows-1252", "utf-16 BOM, no charset"],
)
def test_a_byte_order_mark_decides_the_digest_encoding(data: bytes, content_type: str) -> None:
    (alert,) = parse_alert_email(digest_mail(data, content_type=content_type)).alerts

    assert alert.occurred_at == jan(9, 10, 0, 0)
    assert alert.alert_type == "ips_alert"


def test_csv_attachment_without_an_event_column_is_not_a_digest() -> None:
    raw = digest_mail("Serial Number,Model\nC0EAE4B2C3F1,TZ570\n", body="IPS Alert\nSN: 00401\n")

    (alert,) = parse_alert_email(raw).alerts
    assert alert.metadata["format"] == "key_value"
    assert alert.alert_type == "ips_alert"
    assert alert.serial_number == "00401"


def test_csv_digest_with_a_header_only_is_not_an_alert() -> None:
    parsed = parse_alert_email(digest_mail("Time,Priority,Message\n"))

    assert parsed.alerts == ()
    assert parsed.not_alert_reason == "CSV digest without event rows"


def test_csv_digest_with_too_many_rows_is_refused_rather_than_half_read() -> None:
    rows = "".join(f"2025-01-09 10:00:00 UTC,Alert,IPS event {n}\n" for n in range(10_001))

    with pytest.raises(MailParseError, match="more than 10000 rows"):
        parse_alert_email(digest_mail("Time,Priority,Message\n" + rows))


def test_non_alert_fixture_says_why_it_is_not_an_alert() -> None:
    parsed = parse_alert_email(fixture("non-alert-maintenance.eml"))

    assert parsed.alerts == ()
    assert parsed.not_alert_reason == "no alert keywords in subject or body"
    assert parsed.message_id == "<maintenance-001@avian.example.com>"


def test_mail_without_message_id_still_parses() -> None:
    parsed = parse_alert_email(fixture("no-message-id.eml"))

    assert parsed.message_id is None
    assert "message_id" not in parsed.alerts[0].metadata
    assert parsed.sent_at == jan(9, 20, 0, 0)


def test_log_line_inside_html_preformatted_text() -> None:
    line = (
        'id=firewall sn=C0EAE4B2C3F1 time="2025-01-09 10:11:12 UTC" fw=203.0.113.9 pri=4 m=609 '
        "msg=&quot;IPS Detection Alert: scan&quot;"
    )
    raw = make_mail(f"<pre>{line}\n{line}</pre>", content_type="text/html; charset=utf-8")

    alerts = parse_alert_email(raw).alerts
    assert [(a.alert_type, a.severity, a.message) for a in alerts] == [
        ("ips_alert", "medium", "IPS Detection Alert: scan")
    ] * 2


def only_alert(raw: bytes) -> ParsedAlert:
    (alert,) = parse_alert_email(raw).alerts
    return alert


def digest_mail(
    csv_text: str | bytes,
    body: str = "Event digest\n",
    *,
    content_type: str = 'application/octet-stream; name="digest.csv"',
) -> bytes:
    data = csv_text if isinstance(csv_text, bytes) else csv_text.encode()
    encoded = base64.encodebytes(data).decode()
    return f"""Subject: SonicWall digest
Date: Thu, 09 Jan 2025 10:00:00 +0000
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="d"

--d
Content-Type: text/plain; charset=us-ascii

{body}
--d
Content-Type: {content_type}
Content-Disposition: attachment; filename="digest.csv"
Content-Transfer-Encoding: base64

{encoded}
--d--
""".encode()
