"""Which firewall an alert is about, and the key under which repeats of it are counted.

Matching order: serial number (case-insensitive, exact), then management IP, then host name
through the operator-maintained alias table (`firewall_devices` has no host-name column).
When an alert states a serial number, a device recorded with a *different* serial is never
chosen by IP or host name: private management IPs such as 192.168.1.1 repeat across tenants,
and the serial is the one identifier a firewall cannot share. For the same reason, equally good
candidates of more than one tenant (active ones, when any are active) choose none: the alert goes
to review rather than to a guess, which would hand one customer's alert to another.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal
from uuid import UUID

from avian_workers.mail.parse import ParsedAlert

__all__ = [
    "DeviceDirectory",
    "DeviceMatch",
    "HostAlias",
    "KnownDevice",
    "MatchedBy",
    "alert_fingerprint",
]

MatchedBy = Literal["serial_number", "management_ip", "hostname"]

_ACTIVE = "active"


@dataclass(frozen=True)
class KnownDevice:
    """A `firewall_devices` row, reduced to what matching needs."""

    device_id: UUID
    tenant_id: UUID
    serial_number: str | None
    management_ip: str
    status: str


@dataclass(frozen=True)
class HostAlias:
    """An operator's statement that `hostname` names the device `device_id`."""

    hostname: str
    device_id: UUID


@dataclass(frozen=True)
class DeviceMatch:
    """The chosen device (None when nothing matched), how, and every equally good candidate.

    `candidates` lists the tied devices in preference order, the chosen one first; more than
    one means a tie was resolved (active devices first, then the lowest device id). A tie
    between tenants is not resolved: `device` is None and `candidates` lists them all.
    """

    device: KnownDevice | None
    matched_by: MatchedBy | None
    candidates: tuple[UUID, ...]

    @property
    def tied(self) -> bool:
        return len(self.candidates) > 1

    @property
    def across_tenants(self) -> bool:
        """Candidates were found, but of more than one tenant, so none was chosen."""
        return self.device is None and bool(self.candidates)


_NO_MATCH = DeviceMatch(device=None, matched_by=None, candidates=())


class DeviceDirectory:
    """All devices and host aliases of a run, indexed once for O(1) lookups."""

    def __init__(self, devices: Iterable[KnownDevice], aliases: Iterable[HostAlias]) -> None:
        by_id: dict[UUID, KnownDevice] = {}
        by_serial: defaultdict[str, list[KnownDevice]] = defaultdict(list)
        by_ip: defaultdict[str, list[KnownDevice]] = defaultdict(list)
        for device in devices:
            by_id[device.device_id] = device
            if device.serial_number and device.serial_number.strip():
                by_serial[_serial_key(device.serial_number)].append(device)
            by_ip[_ip_key(device.management_ip)].append(device)
        by_hostname: defaultdict[str, list[KnownDevice]] = defaultdict(list)
        for alias in aliases:
            aliased = by_id.get(alias.device_id)
            # An alias of a deleted device is stale; it cannot name anything.
            if aliased is not None and aliased not in by_hostname[_hostname_key(alias.hostname)]:
                by_hostname[_hostname_key(alias.hostname)].append(aliased)
        self._by_serial = _ranked(by_serial)
        self._by_ip = _ranked(by_ip)
        self._by_hostname = _ranked(by_hostname)

    def match(self, alert: ParsedAlert) -> DeviceMatch:
        """The device `alert` is about; see the module docstring for the rules."""
        serial = _serial_key(alert.serial_number) if alert.serial_number else None
        if serial is not None:
            found = self._by_serial.get(serial, ())
            if found:
                return _chosen(found, "serial_number")
        lookups: tuple[tuple[MatchedBy, Mapping[str, tuple[KnownDevice, ...]], str | None], ...] = (
            (
                "management_ip",
                self._by_ip,
                _ip_key(alert.management_ip) if alert.management_ip else None,
            ),
            (
                "hostname",
                self._by_hostname,
                _hostname_key(alert.hostname) if alert.hostname else None,
            ),
        )
        for matched_by, index, key in lookups:
            if key is None:
                continue
            found = tuple(
                device
                for device in index.get(key, ())
                if serial is None
                or device.serial_number is None
                or not device.serial_number.strip()
                or _serial_key(device.serial_number) == serial
            )
            if found:
                return _chosen(found, matched_by)
        return _NO_MATCH


def _ranked(
    index: Mapping[str, list[KnownDevice]],
) -> dict[str, tuple[KnownDevice, ...]]:
    """Each entry's devices in preference order: active first, then lowest device id."""
    return {
        key: tuple(
            sorted(devices, key=lambda device: (device.status != _ACTIVE, device.device_id.int))
        )
        for key, devices in index.items()
    }


def _chosen(found: tuple[KnownDevice, ...], matched_by: MatchedBy) -> DeviceMatch:
    # The tie that counts is among the best-ranked: active devices when there are any (an
    # inactive firewall of one customer does not hide another customer's active one).
    best = [d for d in found if (d.status == _ACTIVE) == (found[0].status == _ACTIVE)]
    if len({device.tenant_id for device in best}) > 1:
        return DeviceMatch(
            device=None, matched_by=None, candidates=tuple(d.device_id for d in found)
        )
    return DeviceMatch(
        device=found[0],
        matched_by=matched_by,
        candidates=tuple(device.device_id for device in found),
    )


def _serial_key(serial: str) -> str:
    return serial.strip().casefold()


def _hostname_key(hostname: str) -> str:
    return " ".join(hostname.split()).casefold()


def _ip_key(address: str) -> str:
    """One spelling per address (`2001:DB8:0::1` == `2001:db8::1`); other text as written."""
    text = address.strip()
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        pass
    try:
        # `firewall_devices.management_ip` is free text; some rows carry a prefix length.
        return ipaddress.ip_interface(text).ip.compressed
    except ValueError:
        return text.casefold()


# Storm-suppression fingerprint.
#
# A repeat of the same condition often differs only in a reading: "CPU Usage at 87%" then
# "at 91%", "Expires in 15 Days" then "in 14 Days", or a time stamp inside the text. Those
# readings are folded. Everything that can distinguish two events stays: IP addresses, ports,
# signature ids, interface names and any other bare number, because suppression must never
# swallow a distinct event (a second attacker, a second signature).
_FINGERPRINT_VERSION = "v2"  # v2: triage adds severity and distinguishing fields
_TIMESTAMP = re.compile(
    r"\b\d{4}-\d{1,2}-\d{1,2}(?:[t ]\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?)?"
    r"|\b\d{1,2}/\d{1,2}/\d{4}(?:\s\d{1,2}:\d{2}(?::\d{2})?)?"
    r"|\b\d{1,2}:\d{2}:\d{2}(?:[.,]\d{1,9})?"
)
_MEASUREMENT = re.compile(
    r"\b\d+(?:[.,]\d+)?\s?(?:%|percent\b|(?:[kmgt]i?b|bytes?|ms|msec|s|secs?|seconds?"
    r"|mins?|minutes?|hrs?|hours?|days?|weeks?|months?)\b)"
)
_SPACE = re.compile(r"\s+")


def normalised_message(message: str) -> str:
    """`message` case-folded, whitespace-collapsed, with times and measured readings folded."""
    text = message.casefold()
    text = _TIMESTAMP.sub("<time>", text)
    text = _MEASUREMENT.sub("<reading>", text)
    return _SPACE.sub(" ", text).strip()


def alert_fingerprint(device_id: UUID, alert_type: str, message: str) -> str:
    """A stable hex key (SHA-256) for "the same alert again": device, type, normalised message.

    The version prefix changes whenever normalisation does, so stored keys never silently
    start meaning something else.
    """
    key = "\x1f".join(
        (_FINGERPRINT_VERSION, str(device_id), alert_type, normalised_message(message))
    )
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
