"""Which device an alert belongs to, and the storm-suppression fingerprint."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from uuid import UUID

import pytest

from avian_workers.mail.match import (
    DeviceDirectory,
    DeviceMatch,
    HostAlias,
    KnownDevice,
    alert_fingerprint,
)
from avian_workers.mail.parse import ParsedAlert, parse_alert_email
from tests.avian_workers.mail.emails import SEED_DIR, fixture, seed

TENANT_A = UUID("aaaaaaaa-0000-0000-0000-000000000001")
TENANT_B = UUID("bbbbbbbb-0000-0000-0000-000000000002")

HQ = KnownDevice(
    device_id=UUID("00000000-0000-0000-0000-00000000000a"),
    tenant_id=TENANT_A,
    serial_number="C0EAE4B2C3F1",
    management_ip="192.168.1.1",
    status="active",
)
BRANCH = KnownDevice(
    device_id=UUID("00000000-0000-0000-0000-00000000000b"),
    tenant_id=TENANT_B,
    serial_number="0040103C0FFE",
    management_ip="198.51.100.1",
    status="active",
)
NO_SERIAL = KnownDevice(
    device_id=UUID("00000000-0000-0000-0000-00000000000c"),
    tenant_id=TENANT_B,
    serial_number=None,
    management_ip="203.0.113.9",
    status="active",
)


def alert(
    serial_number: str | None = None,
    management_ip: str | None = None,
    hostname: str | None = None,
) -> ParsedAlert:
    return ParsedAlert(
        alert_type="ips_alert",
        severity="high",
        occurred_at=datetime(2025, 1, 9, tzinfo=UTC),
        serial_number=serial_number,
        management_ip=management_ip,
        hostname=hostname,
        message="IPS Alert",
        metadata={},
    )


def directory(*devices: KnownDevice, aliases: tuple[HostAlias, ...] = ()) -> DeviceDirectory:
    return DeviceDirectory(devices, aliases)


# The seed and fixture mail --------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    sorted(path.name for path in SEED_DIR.glob("*.eml") if path.name != "unknown-device-01.eml"),
)
def test_seed_emails_match_the_hq_firewall_by_serial_number(name: str) -> None:
    (parsed,) = parse_alert_email(seed(name)).alerts

    found = directory(HQ, BRANCH).match(parsed)
    assert found == DeviceMatch(device=HQ, matched_by="serial_number", candidates=(HQ.device_id,))


@pytest.mark.parametrize(
    "raw", [seed("unknown-device-01.eml"), fixture("unknown-device-logline.eml")]
)
def test_unknown_device_emails_match_nothing(raw: bytes) -> None:
    (parsed,) = parse_alert_email(raw).alerts

    hq_alias = HostAlias("FW-HQ-PRIMARY", HQ.device_id)
    found = directory(HQ, BRANCH, NO_SERIAL, aliases=(hq_alias,)).match(parsed)
    assert found == DeviceMatch(device=None, matched_by=None, candidates=())


def test_log_line_fw_address_matches_a_device_without_a_recorded_serial() -> None:
    (parsed,) = parse_alert_email(fixture("sonicos-logline-ips.eml")).alerts
    unrelated_serial = replace(HQ, serial_number=None, management_ip="10.9.9.9")

    found = directory(unrelated_serial, NO_SERIAL).match(parsed)
    assert (found.device, found.matched_by) == (NO_SERIAL, "management_ip")


# Precedence -----------------------------------------------------------------------------


def test_serial_number_match_ignores_case_and_surrounding_space() -> None:
    recorded_lower = replace(HQ, serial_number=" c0eae4b2c3f1 ")

    found = directory(recorded_lower).match(alert(serial_number="C0EAE4B2C3F1"))
    assert (found.device, found.matched_by) == (recorded_lower, "serial_number")


def test_serial_number_wins_over_management_ip() -> None:
    found = directory(HQ, BRANCH).match(
        alert(serial_number=BRANCH.serial_number, management_ip=HQ.management_ip)
    )

    assert (found.device, found.matched_by) == (BRANCH, "serial_number")


def test_management_ip_is_used_when_the_alert_states_no_serial() -> None:
    found = directory(HQ, BRANCH).match(alert(management_ip="198.51.100.1"))

    assert (found.device, found.matched_by) == (BRANCH, "management_ip")


def test_management_ip_is_compared_as_an_address() -> None:
    ipv6 = replace(BRANCH, management_ip="2001:0DB8:0000::0001")
    with_prefix = replace(HQ, management_ip="192.168.1.1/24")

    devices = directory(ipv6, with_prefix)
    assert devices.match(alert(management_ip="2001:db8::1")).device == ipv6
    assert devices.match(alert(management_ip="192.168.1.1")).device == with_prefix


def test_management_ip_is_used_when_the_stated_serial_is_unknown_and_none_is_recorded() -> None:
    found = directory(HQ, NO_SERIAL).match(
        alert(serial_number="NEVER-SEEN", management_ip="203.0.113.9")
    )

    assert (found.device, found.matched_by) == (NO_SERIAL, "management_ip")


def test_device_recorded_with_another_serial_is_never_matched_by_address_or_name() -> None:
    # 192.168.1.1 is HQ's private address, but the alert comes from a different firewall.
    aliases = (HostAlias("FW-HQ-PRIMARY", HQ.device_id),)

    found = directory(HQ, aliases=aliases).match(
        alert(serial_number="0017C5000001", management_ip="192.168.1.1", hostname="FW-HQ-PRIMARY")
    )
    assert found.device is None


def test_host_name_matches_through_an_alias_ignoring_case() -> None:
    aliases = (HostAlias("fw-branch-07", BRANCH.device_id),)

    found = directory(HQ, BRANCH, aliases=aliases).match(alert(hostname="FW-Branch-07"))
    assert (found.device, found.matched_by) == (BRANCH, "hostname")


def test_management_ip_wins_over_host_name() -> None:
    aliases = (HostAlias("FW-HQ-PRIMARY", HQ.device_id),)

    found = directory(HQ, BRANCH, aliases=aliases).match(
        alert(management_ip=BRANCH.management_ip, hostname="FW-HQ-PRIMARY")
    )
    assert (found.device, found.matched_by) == (BRANCH, "management_ip")


def test_unmatched_address_falls_through_to_the_host_name() -> None:
    aliases = (HostAlias("FW-HQ-PRIMARY", HQ.device_id),)

    found = directory(HQ, aliases=aliases).match(
        alert(management_ip="10.99.0.1", hostname="FW-HQ-PRIMARY")
    )
    assert (found.device, found.matched_by) == (HQ, "hostname")


def test_alias_of_a_device_that_no_longer_exists_matches_nothing() -> None:
    gone = UUID("00000000-0000-0000-0000-0000000000ff")

    found = directory(HQ, aliases=(HostAlias("FW-OLD", gone),)).match(alert(hostname="fw-old"))
    assert found == DeviceMatch(device=None, matched_by=None, candidates=())


def test_alert_without_identifiers_matches_nothing() -> None:
    assert directory(HQ, BRANCH).match(alert()).device is None


# Ties -----------------------------------------------------------------------------------


def test_tie_prefers_an_active_device_over_a_lower_id() -> None:
    offline_low = replace(HQ, device_id=UUID(int=1), status="offline", serial_number=None)
    # Of another tenant: an inactive firewall of one customer does not hide another's active one.
    active_high = replace(BRANCH, device_id=UUID(int=2), management_ip=HQ.management_ip)

    found = directory(active_high, offline_low).match(alert(management_ip=HQ.management_ip))
    assert found.device == active_high
    assert found.candidates == (UUID(int=2), UUID(int=1))
    assert found.tied


def test_tie_between_active_devices_takes_the_lowest_id_whatever_the_input_order() -> None:
    devices = [replace(HQ, device_id=UUID(int=n)) for n in (7, 3, 5)]

    for ordering in (devices, devices[::-1]):
        found = DeviceDirectory(ordering, ()).match(alert(serial_number=HQ.serial_number))
        assert found.device is not None
        assert found.device.device_id == UUID(int=3)
        assert found.candidates == (UUID(int=3), UUID(int=5), UUID(int=7))


def test_two_aliases_with_the_same_name_are_a_tie() -> None:
    branch = replace(BRANCH, tenant_id=HQ.tenant_id)
    aliases = (HostAlias("edge", branch.device_id), HostAlias("EDGE", HQ.device_id))

    found = directory(HQ, branch, aliases=aliases).match(alert(hostname="edge"))
    assert found.device == HQ
    assert found.candidates == (HQ.device_id, branch.device_id)


@pytest.mark.parametrize("identifier", ["serial_number", "management_ip", "hostname"])
def test_a_tie_between_tenants_chooses_no_device_and_names_the_candidates(
    identifier: str,
) -> None:
    # Private management IPs repeat across customers: a guess hands one customer's alert to
    # another, whichever id is lower.
    other = replace(
        BRANCH,
        device_id=UUID(int=2),
        serial_number=HQ.serial_number.lower() if HQ.serial_number else None,
        management_ip=HQ.management_ip,
    )
    aliases = (HostAlias("edge", HQ.device_id), HostAlias("edge", other.device_id))
    stated = {
        "serial_number": HQ.serial_number,
        "management_ip": HQ.management_ip,
        "hostname": "edge",
    }[identifier]

    found = directory(HQ, other, aliases=aliases).match(alert(**{identifier: stated}))

    assert (found.device, found.matched_by) == (None, None)
    assert set(found.candidates) == {HQ.device_id, other.device_id}
    assert found.across_tenants


def test_single_candidate_is_not_a_tie() -> None:
    assert not directory(HQ).match(alert(serial_number=HQ.serial_number)).tied


# Fingerprint ----------------------------------------------------------------------------

DEVICE = UUID("00000000-0000-0000-0000-00000000000a")


def test_fingerprint_is_a_sha256_hex_digest_that_never_changes_between_releases() -> None:
    # Stored keys must keep meaning the same; changing normalisation needs a new version (v2).
    assert (
        alert_fingerprint(UUID(int=1), "high_cpu", "High CPU: CPU Usage at 87%")
        == "3ef040007ff277fdd778a876a7e58446731b4b874d1ceff9ce5fef09659c111a"
    )


def test_fingerprint_ignores_case_and_whitespace() -> None:
    assert alert_fingerprint(DEVICE, "ips_alert", "IPS  Alert:\tSQL injection ") == (
        alert_fingerprint(DEVICE, "ips_alert", "ips alert: sql INJECTION")
    )


@pytest.mark.parametrize(
    ("first", "again"),
    [
        ("High CPU: CPU Usage at 87%", "High CPU: CPU Usage at 91%"),
        ("License Expires in 15 Days", "License Expires in 14 Days"),
        ("Free memory 327 MB", "Free memory 1.5 GB"),
        ("Tunnel down since 2025-01-09 10:11:12", "Tunnel down since 2025-01-09 10:26:40"),
        ("Link lost at 10:11:12", "Link lost at 10:12:13"),
    ],
)
def test_fingerprint_folds_readings_and_times_of_a_repeating_condition(
    first: str, again: str
) -> None:
    assert alert_fingerprint(DEVICE, "high_cpu", first) == alert_fingerprint(
        DEVICE, "high_cpu", again
    )


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("IPS: SQL injection from 203.0.113.7", "IPS: SQL injection from 203.0.113.8"),
        ("IPS Prevention Alert: SID 7210", "IPS Prevention Alert: SID 7211"),
        ("Port scan on port 22", "Port scan on port 3389"),
        ("Interface X1 down", "Interface X2 down"),
        ("15 connection attempts", "16 connection attempts"),
    ],
)
def test_fingerprint_keeps_what_distinguishes_events(one: str, other: str) -> None:
    assert alert_fingerprint(DEVICE, "ips_alert", one) != alert_fingerprint(
        DEVICE, "ips_alert", other
    )


def test_fingerprint_depends_on_device_and_type() -> None:
    base = alert_fingerprint(DEVICE, "ips_alert", "IPS Alert")

    assert alert_fingerprint(UUID(int=2), "ips_alert", "IPS Alert") != base
    assert alert_fingerprint(DEVICE, "gav_alert", "IPS Alert") != base
