"""Triage: what each message becomes, decided without I/O and never by raising."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from email.header import Header
from email.parser import BytesHeaderParser
from email.policy import compat32
from uuid import UUID

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avian_workers.mail._text import header_text
from avian_workers.mail.match import DeviceDirectory, KnownDevice
from avian_workers.mail.triage import NO_MESSAGE_ID_KEY, TriagedMessage, identify, triage
from tests.avian_workers.mail.emails import all_real_emails, fixture, make_mail, seed

HQ = KnownDevice(
    device_id=UUID("00000000-0000-0000-0000-00000000000a"),
    tenant_id=UUID("aaaaaaaa-0000-0000-0000-000000000001"),
    serial_number="C0EAE4B2C3F1",
    management_ip="192.168.1.1",
    status="active",
)
DIRECTORY = DeviceDirectory([HQ], [])
NOW = datetime(2025, 1, 10, 12, 0, tzinfo=UTC)
RECEIVED = datetime(2025, 1, 9, 23, 59, 30, tzinfo=UTC)


def triaged(raw: bytes, *, received_at: datetime | None = RECEIVED) -> TriagedMessage:
    return triage(
        identify(raw, uidvalidity=7, uid=3),
        raw,
        received_at=received_at,
        directory=DIRECTORY,
        now=NOW,
    )


def test_message_key_is_the_message_id_and_the_hash_of_the_raw_bytes() -> None:
    raw = seed("ips-critical-01.eml")

    identity = identify(raw, uidvalidity=7, uid=3)

    assert identity.key.message_key == "<ips-001@sonicwall.example.com>"
    assert identity.key.raw_sha256 == hashlib.sha256(raw).hexdigest()
    assert identity.subject == "IPS Alert: Critical Intrusion Attempt Detected"
    assert identity.sender == "alerts@sonicwall.example.com"


def long_message_id(text: str) -> str:
    """A Message-ID of 998 characters once decoded, sent as RFC 2047 encoded words."""
    return Header(text * (998 // len(text) + 1), "utf-8").encode()


def test_a_message_id_too_long_for_the_ledger_index_is_keyed_by_its_hash() -> None:
    raw = make_mail("Severity: High", message_id=long_message_id("警告"))

    identity = identify(raw, uidvalidity=7, uid=3)

    assert identity.message_id is not None
    assert len(identity.message_id.encode()) > 2_000
    assert identity.key.message_key == (
        "message-id-sha256:" + hashlib.sha256(identity.message_id.encode()).hexdigest()
    )


def test_long_message_ids_keep_distinct_keys_and_the_same_one_on_every_run() -> None:
    first = make_mail("Severity: High", message_id=long_message_id("警告"))
    second = make_mail("Severity: High", message_id=long_message_id("攻撃"))

    keys = [identify(raw, uidvalidity=7, uid=3).key.message_key for raw in (first, second, first)]

    assert keys[0] != keys[1]
    assert keys[0] == keys[2]


def test_a_message_id_that_fits_the_index_stays_the_key_as_it_is() -> None:
    message_id = "<" + "a" * 990 + "@x>"

    identity = identify(make_mail(message_id=message_id), uidvalidity=7, uid=3)

    assert identity.key.message_key == message_id


def test_message_without_message_id_is_keyed_by_its_bytes_whatever_its_uid() -> None:
    raw = fixture("no-message-id.eml")

    identity = identify(raw, uidvalidity=7, uid=3)

    assert identity.key == identify(raw, uidvalidity=8, uid=41).key
    assert identity.key.message_key == NO_MESSAGE_ID_KEY
    assert identity.message_id is None


def test_matched_alert_carries_device_fingerprint_and_the_parsed_time() -> None:
    message = triaged(seed("ips-critical-01.eml"))

    (alert,) = message.alerts
    assert message.review is None
    assert (alert.device, alert.matched_by) == (HQ, "serial_number")
    assert alert.occurred_at == datetime(2025, 12, 8, 19, 23, 45, tzinfo=UTC)
    assert alert.occurred_at_source == "parsed"
    assert len(alert.fingerprint) == 64


def test_event_without_any_time_takes_the_receipt_time_then_the_processing_time() -> None:
    raw = make_mail("Serial Number: C0EAE4B2C3F1\n", subject="IPS Alert", date=None)

    (received,) = triaged(raw).alerts
    (processed,) = triaged(raw, received_at=None).alerts

    assert (received.occurred_at, received.occurred_at_source) == (RECEIVED, "received_at")
    assert (processed.occurred_at, processed.occurred_at_source) == (NOW, "processed_at")


def test_same_signature_from_two_sources_has_two_fingerprints() -> None:
    def from_source(address: str) -> str:
        body = f"Serial Number: C0EAE4B2C3F1\nSource IP: {address}\nSource Port: 5{address[-1]}\n"
        (alert,) = triaged(make_mail(body, subject="IPS Alert: SQL Injection")).alerts
        return alert.fingerprint

    assert from_source("203.0.113.1") != from_source("203.0.113.2")
    assert from_source("203.0.113.1") == from_source("203.0.113.1")


def ips_alert_fingerprint(*, signature: str, severity: str, at: str, port: int) -> str:
    body = (
        f"Serial Number: C0EAE4B2C3F1\nSeverity: {severity}\nTimestamp: {at}\n"
        f"Attack Signature: {signature}\nSource IP: 203.0.113.45\nSource Port: {port}\n"
        "Destination IP: 10.0.1.100\n"
    )
    (alert,) = triaged(make_mail(body, subject="IPS Alert: Intrusion Attempt Detected")).alerts
    return alert.fingerprint


def test_a_different_attack_between_the_same_hosts_is_a_new_alert_not_a_repeat() -> None:
    first = ips_alert_fingerprint(signature="SQL Injection", severity="HIGH", at="10:00", port=1)
    assert first == ips_alert_fingerprint(
        signature="SQL Injection", severity="HIGH", at="10:01", port=2
    )
    assert first != ips_alert_fingerprint(
        signature="Log4j RCE", severity="HIGH", at="10:01", port=2
    )


def test_an_escalation_to_a_higher_severity_is_a_new_alert_not_a_repeat() -> None:
    high = ips_alert_fingerprint(signature="SQL Injection", severity="HIGH", at="10:00", port=1)
    assert high != ips_alert_fingerprint(
        signature="SQL Injection", severity="CRITICAL", at="10:01", port=1
    )


def test_readings_that_change_between_repeats_do_not_change_the_fingerprint() -> None:
    def at_usage(percent: int) -> str:
        raw = make_mail(
            "Serial Number: C0EAE4B2C3F1\n", subject=f"High CPU: CPU Usage at {percent}%"
        )
        (alert,) = triaged(raw).alerts
        return alert.fingerprint

    assert at_usage(87) == at_usage(91)


def test_unknown_firewall_is_a_review_with_the_unmatched_event() -> None:
    message = triaged(seed("unknown-device-01.eml"))

    assert message.alerts == ()
    assert message.review is not None
    assert message.review.reason == "unknown_device"
    assert [event.serial_number for event in message.review.unmatched] == ["UNKNOWN-SERIAL-999"]


def test_an_event_that_matches_firewalls_of_two_tenants_equally_is_a_review() -> None:
    raw = seed("unknown-device-01.eml")  # states 172.16.50.1, and a serial nobody has
    same_ip = [
        KnownDevice(UUID(int=n), UUID(int=100 + n), None, "172.16.50.1", "active") for n in (1, 2)
    ]

    message = triage(
        identify(raw, uidvalidity=7, uid=3),
        raw,
        received_at=RECEIVED,
        directory=DeviceDirectory(same_ip, []),
        now=NOW,
    )

    assert message.alerts == ()
    assert message.review is not None
    assert message.review.reason == "unknown_device"
    assert message.review.detail.endswith(
        "1 of them match firewalls of more than one tenant equally well"
    )


def test_digest_keeps_matched_rows_as_alerts_and_the_unmatched_row_for_review() -> None:
    message = triaged(fixture("csv-digest-four-events.eml"))

    assert len(message.alerts) == 3
    assert message.review is not None
    assert message.review.reason == "unknown_device"
    assert message.review.detail.startswith("1 event matches no firewall device")


def test_mail_that_is_not_an_alert_is_a_review_with_the_parsers_reason() -> None:
    message = triaged(fixture("non-alert-maintenance.eml"))

    assert message.alerts == ()
    assert message.review is not None
    assert message.review.reason == "not_alert"


def test_unreadable_bytes_are_a_review_saying_why() -> None:
    message = triaged(b"\x00\x01 not a mail at all")

    assert message.review is not None
    assert message.review.reason == "unparseable"
    assert message.review.detail
    assert message.identity.key.message_key == NO_MESSAGE_ID_KEY


REAL = tuple(all_real_emails().values())


@settings(
    max_examples=150,
    deadline=timedelta(seconds=1),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    st.one_of(
        st.binary(max_size=2000),
        st.tuples(st.sampled_from(REAL), st.binary(max_size=64), st.integers(0, 4000)).map(
            lambda parts: parts[0][: parts[2]] + parts[1] + parts[0][parts[2] :]
        ),
    )
)
def test_any_bytes_become_a_triaged_message_never_an_exception(raw: bytes) -> None:
    message = triaged(raw)

    assert message.alerts or message.review is not None
    if message.review is not None:
        assert "\x00" not in message.review.detail


_LINE_ENDS = st.sampled_from([b"\r\n", b"\n", b"\r"])
_HEADER_LINES = st.sampled_from(
    [
        b"Message-ID: <a@b>",
        b"Subject: =?utf-8?q?IPS_Alert?=",
        b"From: fw@example.net",
        b" folded continuation",
        b"\tMessage-ID: <c@d>",
        b"Message-ID: <second@b>",
        b"not a header line",
        b"",
        b"Subject: caf\xc3\xa9 \xff",
        b"Content-Type: text/plain",
    ]
)


@given(st.lists(st.tuples(_HEADER_LINES, _LINE_ENDS), max_size=12), st.binary(max_size=64))
def test_identity_reads_the_same_headers_as_a_parse_of_the_whole_message(
    lines: list[tuple[bytes, bytes]], tail: bytes
) -> None:
    raw = b"".join(line + end for line, end in lines) + tail
    whole = BytesHeaderParser(policy=compat32).parsebytes(raw, headersonly=True)

    identity = identify(raw, uidvalidity=7, uid=3)

    expected = [header_text(whole.get(name)) for name in ("Message-ID", "Subject", "From")]
    assert [identity.message_id, identity.subject, identity.sender] == [
        text[:998] if text else None for text in expected
    ]
