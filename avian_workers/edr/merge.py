"""Which Defender machine and Intune device are one device, and which device a finding belongs to.

The contract's rule (edr_devices): a Defender machine and an Intune managed device are the same
device when Defender `aadDeviceId` equals Intune `azureADDeviceId`, else when their host names
match case-insensitively. Where the contract is silent:

- Host names. Defender's `computerDnsName` is usually qualified ('pc01.contoso.local'), Intune's
  `deviceName` bare ('PC01'). A bare name matches the first label of a qualified one; two
  qualified names must be equal, so 'pc01.contoso.local' is not 'pc01.fabrikam.local'.
- Host names decide only when the Azure AD ids cannot: when both sides carry one and they
  differ, they are different Azure AD devices (a rebuilt PC that kept its name), never merged.
- A host name that fits more than one device is ambiguous and merges or links nothing: an extra
  row is better than an alert on the wrong machine.
- A name joins a record only to a device with no record of the same source yet: two Defender
  machines (or two Intune devices) are told apart by Defender (or Intune), even when one of
  them shares its name with the device's record of the other source.
- Tenants: ids are unique only within one Microsoft tenant, and the same ids can appear under
  two AVIAN tenants. Nothing here is global; the caller keeps one `DeviceIdentityIndex` (and one
  `FailedRulesByDevice`) per AVIAN tenant, which is what keeps tenants apart.

The store never holds a tenant's whole index: per page it loads, by the page's `IdentityLookup`,
every stored identity of each device the page could resolve to, and resolves the page against
that (see `DeviceIdentityIndex`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Final, Literal

from avian_workers.edr.normalize import (
    AlertRecord,
    DeviceRecord,
    DeviceVulnerabilityLink,
    FailedRule,
    PolicyDeviceStatus,
    VulnerabilityRecord,
    host_name,
)

__all__ = [
    "DEFENDER_FIELDS",
    "INTUNE_FIELDS",
    "DeviceIdentityIndex",
    "DeviceSource",
    "FailedRulesByDevice",
    "IdentityLookup",
    "SourceIdentity",
    "device_for_alert",
    "device_for_vulnerability",
    "folded_id",
    "host_label",
    "hostnames_match",
    "merge_devices",
    "same_device",
    "unique_links",
    "unique_vulnerabilities",
]

type DeviceSource = Literal["defender", "intune"]

# Columns each source is authoritative for. A merged row takes these from that source and
# falls back to the other source only where the authority has no value. `last_seen_at` is the
# newer of the two. In upsert terms: a Defender page sets DEFENDER_FIELDS; an Intune page sets
# INTUNE_FIELDS and fills DEFENDER_FIELDS only where they are NULL; both keep the greatest
# `last_seen_at`. Of several records of one source for one device (a re-onboarded PC's old
# machine), only the one seen last writes (edr.store).
DEFENDER_FIELDS: Final = (
    "device_name",  # the FQDN says more than Intune's bare name
    "operating_system",  # 'Windows11' says more than Intune's 'Windows'
    "os_version",
    "defender_health_status",
    "risk_score",
    "exposure_level",
)
INTUNE_FIELDS: Final = ("primary_user", "intune_compliance_state", "intune_enrollment_status")


def hostnames_match(first: str, second: str) -> bool:
    """Whether two host names name the same host (see the module docstring)."""
    first_name, second_name = host_name(first), host_name(second)
    if first_name is None or second_name is None:
        return False
    if first_name == second_name:
        return True
    if "." in first_name and "." in second_name:
        return False
    return _first_label(first_name) == _first_label(second_name)


def same_device(defender: DeviceRecord, intune: DeviceRecord) -> bool:
    """The contract's rule for one Defender record and one Intune record."""
    if defender.aad_device_id is not None and intune.aad_device_id is not None:
        return defender.aad_device_id == intune.aad_device_id
    if defender.hostname is None or intune.hostname is None:
        return False
    return hostnames_match(defender.hostname, intune.hostname)


def merge_devices(defender: DeviceRecord, intune: DeviceRecord) -> DeviceRecord:
    """One row from a Defender record and an Intune record of the same device.

    Keeps the Defender record's `microsoft_device_id`; use `DeviceIdentityIndex.assign` for the
    stored key.
    """
    if defender.defender_machine_id is None:
        raise ValueError(f"{defender.microsoft_device_id!r} is not a Defender record")
    if intune.intune_device_id is None:
        raise ValueError(f"{intune.microsoft_device_id!r} is not an Intune record")
    if (
        defender.aad_device_id is not None
        and intune.aad_device_id is not None
        and defender.aad_device_id != intune.aad_device_id
    ):
        raise ValueError(
            f"Defender machine {defender.defender_machine_id!r} and Intune device "
            f"{intune.intune_device_id!r} belong to different Azure AD devices"
        )
    seen = [moment for moment in (defender.last_seen_at, intune.last_seen_at) if moment is not None]
    return DeviceRecord(
        microsoft_device_id=defender.microsoft_device_id,
        device_name=defender.device_name,
        operating_system=_first_known(defender.operating_system, intune.operating_system),
        os_version=_first_known(defender.os_version, intune.os_version),
        defender_health_status=_first_known(
            defender.defender_health_status, intune.defender_health_status
        ),
        risk_score=_first_known(defender.risk_score, intune.risk_score),
        exposure_level=_first_known(defender.exposure_level, intune.exposure_level),
        primary_user=_first_known(intune.primary_user, defender.primary_user),
        intune_compliance_state=_first_known(
            intune.intune_compliance_state, defender.intune_compliance_state
        ),
        intune_enrollment_status=_first_known(
            intune.intune_enrollment_status, defender.intune_enrollment_status
        ),
        last_seen_at=max(seen, default=None),
        defender_machine_id=defender.defender_machine_id,
        intune_device_id=intune.intune_device_id,
        aad_device_id=_first_known(defender.aad_device_id, intune.aad_device_id),
        hostname=_first_known(defender.hostname, intune.hostname),
    )


def _first_known[T](preferred: T | None, fallback: T | None) -> T | None:
    return preferred if preferred is not None else fallback


def _first_label(name: str) -> str:
    return name.split(".", 1)[0]


def _folded(identifier: str) -> str:
    # Defender ids are hex and Graph ids GUIDs: neither is case-sensitive.
    return identifier.strip().casefold()


def folded_id(identifier: str | None) -> str | None:
    """The form a Defender, Intune or Azure AD id is compared in (case and spaces ignored)."""
    return None if identifier is None else _folded(identifier)


def host_label(hostname: str | None) -> str | None:
    """The first label of a host name: every name that can match it shares this label."""
    name = host_name(hostname)
    return None if name is None else _first_label(name)


# --- Identity index ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SourceIdentity:
    """The identity keys of one Defender machine or one Intune device.

    This is what the store persists per source record so the next run can `remember` it.
    """

    source: DeviceSource
    source_id: str
    aad_device_id: str | None = None
    hostname: str | None = None

    @classmethod
    def of(cls, record: DeviceRecord) -> SourceIdentity:
        """The identity of a record straight from `defender_device` or `intune_device`."""
        if record.defender_machine_id is not None and record.intune_device_id is not None:
            raise ValueError(
                f"{record.microsoft_device_id!r} is already merged; index its sources one by one"
            )
        if record.defender_machine_id is not None:
            return cls(
                "defender", record.defender_machine_id, record.aad_device_id, record.hostname
            )
        assert record.intune_device_id is not None  # DeviceRecord guarantees one of the two
        return cls("intune", record.intune_device_id, record.aad_device_id, record.hostname)

    @property
    def source_key(self) -> str:
        """`source_id` as it is compared (what the store indexes it by)."""
        return _folded(self.source_id)


@dataclass(frozen=True, slots=True)
class IdentityLookup:
    """The identifiers a page can resolve by, compared forms: what the store looks up per page.

    Every stored identity that shares one of these (a source id, an Azure AD id or a host
    name's first label) is a candidate; the store loads all identities of every candidate's
    device, which is all `DeviceIdentityIndex` needs to resolve the page as it would with the
    tenant's whole index.
    """

    defender_ids: frozenset[str] = frozenset()
    intune_ids: frozenset[str] = frozenset()
    aad_ids: frozenset[str] = frozenset()
    host_labels: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.defender_ids or self.intune_ids or self.aad_ids or self.host_labels)

    @classmethod
    def of_devices(cls, records: Iterable[DeviceRecord]) -> IdentityLookup:
        """What a page of Defender machines or Intune devices can match."""
        defender, intune, aad, labels = set(), set(), set(), set()
        for record in records:
            if record.defender_machine_id is not None:
                defender.add(_folded(record.defender_machine_id))
            if record.intune_device_id is not None:
                intune.add(_folded(record.intune_device_id))
            if record.aad_device_id is not None:
                aad.add(_folded(record.aad_device_id))
            label = host_label(record.hostname)
            if label is not None:
                labels.add(label)
        return cls(frozenset(defender), frozenset(intune), frozenset(aad), frozenset(labels))

    @classmethod
    def of_alerts(cls, alerts: Iterable[AlertRecord]) -> IdentityLookup:
        """What a page of alerts' device evidence can match."""
        defender, aad, labels = set(), set(), set()
        for alert in alerts:
            for item in alert.device_evidence:
                if item.mde_device_id is not None:
                    defender.add(_folded(item.mde_device_id))
                if item.azure_ad_device_id is not None:
                    aad.add(_folded(item.azure_ad_device_id))
                label = host_label(item.device_dns_name)
                if label is not None:
                    labels.add(label)
        return cls(
            defender_ids=frozenset(defender), aad_ids=frozenset(aad), host_labels=frozenset(labels)
        )

    @classmethod
    def of_machines(cls, machine_ids: Iterable[str]) -> IdentityLookup:
        """What Defender machine ids (a vulnerability page) can match."""
        return cls(defender_ids=frozenset(_folded(machine_id) for machine_id in machine_ids))


@dataclass(slots=True)
class _Device:
    aad_ids: set[str] = field(default_factory=set)
    defender_hostnames: set[str] = field(default_factory=set)
    intune_hostnames: set[str] = field(default_factory=set)
    sources: set[DeviceSource] = field(default_factory=set)

    def hostnames(self, source: DeviceSource) -> set[str]:
        return self.defender_hostnames if source == "defender" else self.intune_hostnames

    def has_host(self, hostname: str, *, source: DeviceSource | None = None) -> bool:
        names = (
            self.hostnames(source)
            if source is not None
            else self.defender_hostnames | self.intune_hostnames
        )
        if "." in hostname:
            # A device known by a qualified name is that host only: its bare Intune name must
            # not let 'pc01.fabrikam.local' reach 'pc01.contoso.local'.
            qualified = {name for name in names if "." in name}
            if qualified:
                return hostname in qualified
        return any(hostnames_match(hostname, name) for name in names)


class DeviceIdentityIndex:
    """Gives every device of one tenant a `microsoft_device_id` that reruns keep.

    The store builds one per page from the stored identities the page's `IdentityLookup`
    names, so a page resolves against what is stored (earlier pages and runs), exactly as
    an index of the whole tenant would, except that an identity stored with other keys than it
    has now is known by its new keys only, as a rerun would know it.

    The key of a new device is the id of its first record in feed order. Feed the index in this
    order and a device with a Defender machine is always keyed by the Defender machine id, else
    by the Intune device id:

    1. `remember` every identity stored by earlier runs (from the store's identity table), so a
       stored key never changes, even after a Defender machine shows up for an Intune-only row;
    2. `assign` every Defender machine, page by page;
    3. `assign` every Intune device, page by page.

    Within one source, page order changes no key, except among records that compete: Defender
    machines sharing an Azure AD id join one row under the first one's id, and of two Intune
    devices with different Azure AD ids that claim one unjoined machine by name, the first wins.
    Remembered identities make those stable across runs too. Rows already stored are never
    merged with each other here; that would need the database rows themselves to be merged.
    `find` then resolves any Defender id, Intune id, Azure AD id or host name to its key, for
    linking alerts, vulnerabilities and compliance. The index holds only identity keys, a few
    short strings per device.
    """

    def __init__(self) -> None:
        self._devices: dict[str, _Device] = {}
        self._keys_by_source_id: dict[tuple[DeviceSource, str], str] = {}
        self._identities: dict[tuple[DeviceSource, str], SourceIdentity] = {}
        self._keys_by_aad_id: dict[str, str] = {}
        self._keys_by_first_label: dict[str, set[str]] = {}

    def __len__(self) -> int:
        """The number of devices (rows), not of source records."""
        return len(self._devices)

    def remember(self, microsoft_device_id: str, identity: SourceIdentity) -> None:
        """Seed the index with a source record an earlier run stored under `microsoft_device_id`."""
        source_key = (identity.source, _folded(identity.source_id))
        known = self._keys_by_source_id.get(source_key)
        if known is not None and known != microsoft_device_id:
            raise ValueError(
                f"{identity.source} id {identity.source_id!r} is stored under both "
                f"{known!r} and {microsoft_device_id!r}"
            )
        self._attach(microsoft_device_id, identity)

    def assign(self, record: DeviceRecord) -> DeviceRecord:
        """The record with its device's stable `microsoft_device_id`; registers its keys."""
        identity = SourceIdentity.of(record)
        key = self._existing_key(identity)
        if key is None:
            key = identity.source_id
        self._attach(key, identity)
        if key == record.microsoft_device_id:
            return record  # a new device keeps its own id; replace() is costly per record
        return replace(record, microsoft_device_id=key)

    def find(
        self,
        *,
        defender_machine_id: str | None = None,
        intune_device_id: str | None = None,
        aad_device_id: str | None = None,
        hostname: str | None = None,
    ) -> str | None:
        """The key of the device these identifiers name, trying them in the order given."""
        if defender_machine_id is not None:
            key = self._keys_by_source_id.get(("defender", _folded(defender_machine_id)))
            if key is not None:
                return key
        if intune_device_id is not None:
            key = self._keys_by_source_id.get(("intune", _folded(intune_device_id)))
            if key is not None:
                return key
        if aad_device_id is not None:
            key = self._keys_by_aad_id.get(_folded(aad_device_id))
            if key is not None:
                return key
        if hostname is not None:
            return self._only(self._host_candidates(hostname, source=None))
        return None

    def keys_known_to(self, source: DeviceSource) -> set[str]:
        """The device keys a record of `source` is stored or assigned under."""
        return {key for key, identity in self.identities() if identity.source == source}

    def identities(self) -> Iterator[tuple[str, SourceIdentity]]:
        """Every source record known, with its device key: what the store persists."""
        for source_key, identity in self._identities.items():
            yield self._keys_by_source_id[source_key], identity

    def _existing_key(self, identity: SourceIdentity) -> str | None:
        key = self._keys_by_source_id.get((identity.source, _folded(identity.source_id)))
        if key is not None:
            return key
        if identity.aad_device_id is not None:
            key = self._keys_by_aad_id.get(_folded(identity.aad_device_id))
            if key is not None:
                return key
        if identity.hostname is None:
            return None
        # Only a device that has no record of this source yet can take it by name: two Defender
        # machines (or two Intune devices) are told apart by Defender (or Intune), not by us,
        # even when one of them shares its name with the device's record of the other source.
        other: DeviceSource = "intune" if identity.source == "defender" else "defender"
        candidates = {
            key
            for key in self._host_candidates(identity.hostname, source=other)
            if identity.source not in self._devices[key].sources
            and (identity.aad_device_id is None or not self._devices[key].aad_ids)
        }
        return self._only(candidates)

    def _host_candidates(self, hostname: str, *, source: DeviceSource | None) -> set[str]:
        name = host_name(hostname)
        if name is None:
            return set()
        return {
            key
            for key in self._keys_by_first_label.get(_first_label(name), ())
            if self._devices[key].has_host(name, source=source)
        }

    @staticmethod
    def _only(candidates: set[str]) -> str | None:
        return next(iter(candidates)) if len(candidates) == 1 else None

    def _attach(self, key: str, identity: SourceIdentity) -> None:
        device = self._devices.get(key)
        if device is None:
            device = self._devices[key] = _Device()
        device.sources.add(identity.source)
        source_key = (identity.source, _folded(identity.source_id))
        self._keys_by_source_id[source_key] = key
        self._identities[source_key] = identity
        if identity.aad_device_id is not None:
            aad_id = _folded(identity.aad_device_id)
            device.aad_ids.add(aad_id)
            # First come keeps it: two stored rows that share an Azure AD id stay two rows.
            self._keys_by_aad_id.setdefault(aad_id, key)
        name = host_name(identity.hostname)
        if name is not None:
            device.hostnames(identity.source).add(name)
            self._keys_by_first_label.setdefault(_first_label(name), set()).add(key)


# --- Links -------------------------------------------------------------------------------------


def device_for_alert(alert: AlertRecord, index: DeviceIdentityIndex) -> str | None:
    """The key of the device an alert is about, from its device evidence, or None.

    Strongest identifier first across all evidence: `mdeDeviceId` (a Defender machine id), then
    `azureAdDeviceId`, then `deviceDnsName`. An alert about several devices goes to the first
    device listed at the strongest level that resolves.
    """
    evidence = alert.device_evidence
    for item in evidence:
        if item.mde_device_id is not None:
            key = index.find(defender_machine_id=item.mde_device_id)
            if key is not None:
                return key
    for item in evidence:
        if item.azure_ad_device_id is not None:
            key = index.find(aad_device_id=item.azure_ad_device_id)
            if key is not None:
                return key
    for item in evidence:
        if item.device_dns_name is not None:
            key = index.find(hostname=item.device_dns_name)
            if key is not None:
                return key
    return None


def device_for_vulnerability(
    link: DeviceVulnerabilityLink, index: DeviceIdentityIndex
) -> str | None:
    """The key of the device a vulnerability row names (always by Defender machine id)."""
    return index.find(defender_machine_id=link.machine_id)


def unique_vulnerabilities(records: Iterable[VulnerabilityRecord]) -> list[VulnerabilityRecord]:
    """One record per CVE, the first seen: the export repeats a CVE for every machine and
    package, and one upsert statement may not touch a row twice."""
    first: dict[str, VulnerabilityRecord] = {}
    for record in records:
        first.setdefault(record.cve_id, record)
    return list(first.values())


def unique_links(links: Iterable[DeviceVulnerabilityLink]) -> list[DeviceVulnerabilityLink]:
    """One link per (machine, CVE), keeping the earliest detection (several packages of one
    machine can carry the same CVE)."""
    earliest: dict[tuple[str, str], DeviceVulnerabilityLink] = {}
    for link in links:
        key = (link.machine_id, link.cve_id)
        kept = earliest.get(key)
        if kept is None or (
            link.detected_at is not None
            and (kept.detected_at is None or link.detected_at < kept.detected_at)
        ):
            earliest[key] = link
    return list(earliest.values())


# --- Compliance failures -----------------------------------------------------------------------


class FailedRulesByDevice:
    """Failing compliance-policy statuses of one tenant, collected policy by policy.

    A status is placed by the managed device id in its own id when it has one (Graph's form),
    else by its device display name. Only failing statuses are kept, so memory follows the
    number of failures, not of devices. Per device and policy the latest report wins.
    """

    def __init__(self) -> None:
        self._by_device_id: dict[str, dict[str, PolicyDeviceStatus]] = {}
        self._by_name: dict[str, dict[str, PolicyDeviceStatus]] = {}
        # Failing statuses with neither a device id nor a device name: counted, not guessed.
        self.unplaced_count = 0

    def add(self, status: PolicyDeviceStatus) -> None:
        if not status.is_failing:
            return
        if status.managed_device_id is not None:
            bucket = self._by_device_id.setdefault(_folded(status.managed_device_id), {})
        else:
            name = host_name(status.device_display_name)
            if name is None:
                self.unplaced_count += 1
                return
            bucket = self._by_name.setdefault(name, {})
        kept = bucket.get(status.policy_id)
        if kept is None or _reported_later(status, kept):
            bucket[status.policy_id] = status

    def rules_for(self, device: DeviceRecord) -> tuple[FailedRule, ...]:
        """The failed rules of an Intune device, ordered by policy name then id."""
        statuses: dict[str, PolicyDeviceStatus] = {}
        if device.hostname is not None:
            # Display names are Intune's bare names; a merged row's host name may be the FQDN.
            for name in dict.fromkeys((device.hostname, _first_label(device.hostname))):
                statuses |= self._by_name.get(name, {})
        if device.intune_device_id is not None:
            statuses |= self._by_device_id.get(_folded(device.intune_device_id), {})
        ordered = sorted(statuses.values(), key=lambda s: (s.policy_name or "", s.policy_id))
        return tuple(status.failed_rule() for status in ordered)


def _reported_later(status: PolicyDeviceStatus, kept: PolicyDeviceStatus) -> bool:
    if status.last_reported_at is None:
        return False
    return kept.last_reported_at is None or status.last_reported_at > kept.last_reported_at
