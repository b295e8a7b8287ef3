"""Device identity: the contract's merge rule, stable keys across pages and reruns, and links."""

from __future__ import annotations

import random
from dataclasses import fields
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from avian_workers.edr.merge import (
    DEFENDER_FIELDS,
    INTUNE_FIELDS,
    DeviceIdentityIndex,
    FailedRulesByDevice,
    IdentityLookup,
    SourceIdentity,
    device_for_alert,
    device_for_vulnerability,
    folded_id,
    host_label,
    hostnames_match,
    merge_devices,
    same_device,
    unique_links,
    unique_vulnerabilities,
)
from avian_workers.edr.normalize import (
    DeviceRecord,
    DeviceVulnerabilityLink,
    PolicyDeviceStatus,
    VulnerabilityRecord,
    alert_record,
    defender_device,
    intune_device,
    policy_device_status,
)
from tests.avian_workers.edr.payloads import (
    AAD_ID,
    INTUNE_ID,
    MACHINE_ID,
    OTHER_AAD_ID,
    OTHER_INTUNE_ID,
    OTHER_MACHINE_ID,
    POLICY_ID,
    defender_machine,
    device_evidence,
    graph_alert,
    managed_device,
    policy_device_status_item,
)


def defender(**overrides: Any) -> DeviceRecord:
    return defender_device(defender_machine(**overrides))


def intune(**overrides: Any) -> DeviceRecord:
    return intune_device(managed_device(**overrides))


def machine_id(n: int) -> str:
    return f"{n:040x}"


def guid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012x}"


def keys_of(index: DeviceIdentityIndex, records: list[DeviceRecord]) -> dict[str, str]:
    """Source id -> assigned key, for every record fed in order."""
    assigned = {}
    for record in records:
        source_id = record.defender_machine_id or record.intune_device_id
        assert source_id is not None
        assigned[source_id] = index.assign(record).microsoft_device_id
    return assigned


# --- The rule, pairwise ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "match"),
    [
        ("pc01.contoso.local", "PC01", True),
        ("PC01", "pc01", True),
        ("pc01.contoso.local", "PC01.CONTOSO.LOCAL.", True),
        ("pc01.contoso.local", "pc01.fabrikam.local", False),
        ("pc01", "pc02", False),
        ("pc01.contoso.local", "pc011", False),
        ("pc01-old", "pc01", False),
        ("", "pc01", False),
    ],
)
def test_host_names_match(first: str, second: str, match: bool) -> None:
    assert hostnames_match(first, second) is match
    assert hostnames_match(second, first) is match


@pytest.mark.parametrize(
    ("defender_overrides", "intune_overrides", "same"),
    [
        ({}, {}, True),
        ({"computerDnsName": "laptop-7"}, {"deviceName": "PC01"}, True),
        ({"aadDeviceId": OTHER_AAD_ID}, {}, False),
        ({"aadDeviceId": None}, {}, True),
        ({}, {"azureADDeviceId": None}, True),
        ({"aadDeviceId": None}, {"deviceName": "PC02"}, False),
        ({"aadDeviceId": None, "computerDnsName": "pc01.fabrikam.local"}, {}, True),
    ],
    ids=[
        "same-aad-same-name",
        "same-aad-different-names",
        "different-aad-same-name",
        "no-defender-aad-same-name",
        "no-intune-aad-same-name",
        "no-aad-different-name",
        "no-aad-fqdn-vs-bare",
    ],
)
def test_same_device_rule(
    defender_overrides: dict[str, Any], intune_overrides: dict[str, Any], same: bool
) -> None:
    assert same_device(defender(**defender_overrides), intune(**intune_overrides)) is same


# --- Merging two records -----------------------------------------------------------------------


def test_merged_row_takes_defender_risk_and_intune_compliance() -> None:
    merged = merge_devices(defender(), intune())

    assert merged == DeviceRecord(
        microsoft_device_id=MACHINE_ID,
        device_name="pc01.contoso.local",
        operating_system="Windows11",
        os_version="10.0.22631.4602",
        primary_user="ada@contoso.com",
        defender_health_status="Active",
        risk_score=60,
        exposure_level="Low",
        intune_compliance_state="noncompliant",
        intune_enrollment_status="managed",
        last_seen_at=datetime(2024, 12, 9, 9, 58, 11, 713036, tzinfo=UTC),
        defender_machine_id=MACHINE_ID,
        intune_device_id=INTUNE_ID,
        aad_device_id=AAD_ID,
        hostname="pc01.contoso.local",
    )


def distinct_records() -> tuple[DeviceRecord, DeviceRecord]:
    """A Defender and an Intune record whose every field differs."""
    seen = datetime(2024, 12, 9, tzinfo=UTC)
    return (
        DeviceRecord(
            microsoft_device_id="d",
            device_name="d-name",
            operating_system="d-os",
            os_version="d-ver",
            primary_user="d-user",
            defender_health_status="d-health",
            risk_score=90,
            exposure_level="d-exposure",
            intune_compliance_state="d-compliance",
            intune_enrollment_status="d-enrollment",
            last_seen_at=seen,
            defender_machine_id="d",
        ),
        DeviceRecord(
            microsoft_device_id="i",
            device_name="i-name",
            operating_system="i-os",
            os_version="i-ver",
            primary_user="i-user",
            defender_health_status="i-health",
            risk_score=10,
            exposure_level="i-exposure",
            intune_compliance_state="i-compliance",
            intune_enrollment_status="i-enrollment",
            last_seen_at=seen,
            intune_device_id="i",
        ),
    )


@pytest.mark.parametrize("field", DEFENDER_FIELDS)
def test_merged_row_takes_each_defender_field_from_defender(field: str) -> None:
    from_defender, from_intune = distinct_records()

    merged = merge_devices(from_defender, from_intune)

    assert getattr(merged, field) == getattr(from_defender, field)


@pytest.mark.parametrize("field", INTUNE_FIELDS)
def test_merged_row_takes_each_intune_field_from_intune(field: str) -> None:
    from_defender, from_intune = distinct_records()

    merged = merge_devices(from_defender, from_intune)

    assert getattr(merged, field) == getattr(from_intune, field)


def test_every_device_field_has_exactly_one_merge_rule() -> None:
    identity_and_time = {
        "microsoft_device_id",
        "defender_machine_id",
        "intune_device_id",
        "aad_device_id",
        "hostname",
        "last_seen_at",
    }
    ruled = [*DEFENDER_FIELDS, *INTUNE_FIELDS, *identity_and_time]

    assert sorted(ruled) == sorted(f.name for f in fields(DeviceRecord))


def test_merged_row_fills_a_defender_gap_from_intune() -> None:
    merged = merge_devices(defender(osVersion=None, version=None), intune(osVersion="10.0.1"))

    assert merged.os_version == "10.0.1"


@pytest.mark.parametrize(
    ("defender_seen", "intune_seen", "newest"),
    [
        ("2024-12-09T10:00:00Z", "2024-12-08T10:00:00Z", "2024-12-09T10:00:00Z"),
        ("2024-12-08T10:00:00Z", "2024-12-09T10:00:00Z", "2024-12-09T10:00:00Z"),
        (None, "2024-12-09T10:00:00Z", "2024-12-09T10:00:00Z"),
        ("2024-12-09T10:00:00Z", None, "2024-12-09T10:00:00Z"),
        (None, None, None),
    ],
    ids=["defender-newer", "intune-newer", "only-intune", "only-defender", "neither"],
)
def test_merged_row_is_last_seen_at_the_newest_sighting(
    defender_seen: str | None, intune_seen: str | None, newest: str | None
) -> None:
    merged = merge_devices(defender(lastSeen=defender_seen), intune(lastSyncDateTime=intune_seen))

    expected = None if newest is None else datetime.fromisoformat(newest)
    assert merged.last_seen_at == expected


def test_records_of_different_azure_ad_devices_are_not_merged() -> None:
    with pytest.raises(ValueError, match="different Azure AD devices"):
        merge_devices(defender(aadDeviceId=OTHER_AAD_ID), intune())


def test_merge_refuses_records_from_the_wrong_sources() -> None:
    with pytest.raises(ValueError, match="not a Defender record"):
        merge_devices(intune(), intune())


# --- Index: one key per device -----------------------------------------------------------------


def test_defender_and_intune_with_equal_azure_ad_ids_share_the_defender_key() -> None:
    index = DeviceIdentityIndex()

    keys = keys_of(
        index, [defender(computerDnsName="laptop-7.contoso.local"), intune(deviceName="PC01")]
    )

    assert keys == {MACHINE_ID: MACHINE_ID, INTUNE_ID: MACHINE_ID}
    assert len(index) == 1


def test_defender_fqdn_and_intune_bare_name_match_case_insensitively() -> None:
    index = DeviceIdentityIndex()

    keys = keys_of(
        index,
        [
            defender(aadDeviceId=None, computerDnsName="PC01.contoso.local"),
            intune(azureADDeviceId=None, deviceName="pc01"),
        ],
    )

    assert keys[INTUNE_ID] == MACHINE_ID


def test_devices_that_do_not_match_keep_their_own_keys() -> None:
    index = DeviceIdentityIndex()

    keys = keys_of(index, [defender(), intune(azureADDeviceId=OTHER_AAD_ID, deviceName="PC02")])

    assert keys == {MACHINE_ID: MACHINE_ID, INTUNE_ID: INTUNE_ID}
    assert len(index) == 2


def test_same_name_with_different_azure_ad_ids_is_two_devices() -> None:
    index = DeviceIdentityIndex()

    keys = keys_of(index, [defender(), intune(azureADDeviceId=OTHER_AAD_ID)])

    assert keys[INTUNE_ID] == INTUNE_ID


def test_host_name_that_fits_two_devices_merges_nothing() -> None:
    index = DeviceIdentityIndex()

    keys = keys_of(
        index,
        [
            defender(aadDeviceId=None, computerDnsName="pc01.contoso.local"),
            defender(id=OTHER_MACHINE_ID, aadDeviceId=None, computerDnsName="pc01.fabrikam.local"),
            intune(azureADDeviceId=None, deviceName="PC01"),
        ],
    )

    assert keys[INTUNE_ID] == INTUNE_ID
    assert len(index) == 3


def test_defender_machines_sharing_a_name_stay_apart() -> None:
    index = DeviceIdentityIndex()

    keys = keys_of(
        index, [defender(aadDeviceId=None), defender(id=OTHER_MACHINE_ID, aadDeviceId=None)]
    )

    assert keys == {MACHINE_ID: MACHINE_ID, OTHER_MACHINE_ID: OTHER_MACHINE_ID}


def rerun_of(*first_run: DeviceRecord) -> DeviceIdentityIndex:
    """An index that remembers what a first run of `first_run` stored."""
    stored = DeviceIdentityIndex()
    keys_of(stored, list(first_run))
    rerun = DeviceIdentityIndex()
    for key, identity in stored.identities():
        rerun.remember(key, identity)
    return rerun


@pytest.mark.parametrize("name", ["pc01.fabrikam.local", "pc01.contoso.local", "PC01"])
def test_a_new_machine_never_joins_another_machines_device_by_the_intune_name(name: str) -> None:
    index = rerun_of(defender(), intune())

    keys = keys_of(index, [defender(id=OTHER_MACHINE_ID, aadDeviceId=None, computerDnsName=name)])

    assert keys == {OTHER_MACHINE_ID: OTHER_MACHINE_ID}


def test_a_new_intune_device_never_joins_another_intune_devices_device_by_name() -> None:
    index = rerun_of(defender(), intune())

    keys = keys_of(index, [intune(id=OTHER_INTUNE_ID, azureADDeviceId=None, deviceName="PC01")])

    assert keys == {OTHER_INTUNE_ID: OTHER_INTUNE_ID}


def test_defender_machines_of_one_azure_ad_device_are_one_device() -> None:
    index = DeviceIdentityIndex()

    keys = keys_of(index, [defender(), defender(id=OTHER_MACHINE_ID), intune()])

    assert set(keys.values()) == {MACHINE_ID}


def test_intune_devices_of_one_azure_ad_device_are_one_device() -> None:
    index = DeviceIdentityIndex()

    keys = keys_of(index, [defender(), intune(), intune(id=OTHER_INTUNE_ID)])

    assert set(keys.values()) == {MACHINE_ID}


def test_a_record_seen_again_on_a_later_page_keeps_its_key() -> None:
    index = DeviceIdentityIndex()
    first = index.assign(intune(azureADDeviceId=None)).microsoft_device_id

    again = index.assign(intune(azureADDeviceId=None)).microsoft_device_id

    assert again == first == INTUNE_ID
    assert len(index) == 1


def tenant_fleet() -> tuple[list[DeviceRecord], list[DeviceRecord]]:
    """Defender and Intune records of a mixed fleet: aad matches, name matches, loners."""
    machines, managed = [], []
    for n in range(12):
        aad = guid(n) if n % 3 != 0 else None  # every third machine is not Azure AD joined
        machines.append(defender(id=machine_id(n), aadDeviceId=aad, computerDnsName=f"pc{n}.corp"))
    for n in range(6, 20):  # overlaps machines 6..11, then Intune-only devices
        managed.append(
            intune(id=guid(1000 + n), azureADDeviceId=guid(n), deviceName=f"PC{n}".upper())
        )
    return machines, managed


def test_keys_do_not_depend_on_page_order_within_each_source() -> None:
    machines, managed = tenant_fleet()
    expected = keys_of(DeviceIdentityIndex(), machines + managed)

    shuffler = random.Random(20241209)
    for _ in range(25):
        shuffled_machines = shuffler.sample(machines, len(machines))
        shuffled_managed = shuffler.sample(managed, len(managed))

        keys = keys_of(DeviceIdentityIndex(), shuffled_machines + shuffled_managed)

        assert keys == expected


def test_fleet_merges_by_azure_ad_id_and_by_name() -> None:
    machines, managed = tenant_fleet()

    keys = keys_of(DeviceIdentityIndex(), machines + managed)

    # Machine 7 is Azure AD joined (guid(7)), as is Intune device 1007: merged by id.
    assert keys[guid(1007)] == machine_id(7)
    # Machine 6 has no aad id, so its Intune twin PC6 merges by name.
    assert keys[guid(1006)] == machine_id(6)
    # Intune device 1015 has no Defender machine.
    assert keys[guid(1015)] == guid(1015)


def test_a_new_device_with_a_defender_machine_is_keyed_by_the_machine_id() -> None:
    keys = keys_of(DeviceIdentityIndex(), [defender(), intune()])

    assert keys[INTUNE_ID] == MACHINE_ID


def test_remembered_key_survives_a_defender_machine_appearing_later() -> None:
    first_run = DeviceIdentityIndex()
    first_run.assign(intune())
    stored = list(first_run.identities())

    second_run = DeviceIdentityIndex()
    for key, identity in stored:
        second_run.remember(key, identity)
    keys = keys_of(second_run, [defender(), intune()])

    assert keys == {MACHINE_ID: INTUNE_ID, INTUNE_ID: INTUNE_ID}


def test_rerun_with_remembered_identities_reproduces_every_key() -> None:
    machines, managed = tenant_fleet()
    first_run = DeviceIdentityIndex()
    first_keys = keys_of(first_run, machines + managed)

    second_run = DeviceIdentityIndex()
    for key, identity in first_run.identities():
        second_run.remember(key, identity)

    assert keys_of(second_run, machines + managed) == first_keys


def named_by(
    stored: list[tuple[str, SourceIdentity]], lookup: IdentityLookup
) -> DeviceIdentityIndex:
    """What the store loads for a page: every identity of each device the lookup names."""
    ids = {"defender": lookup.defender_ids, "intune": lookup.intune_ids}
    devices = {
        key
        for key, identity in stored
        if identity.source_key in ids[identity.source]
        or folded_id(identity.aad_device_id) in lookup.aad_ids
        or host_label(identity.hostname) in lookup.host_labels
    }
    index = DeviceIdentityIndex()
    for key, identity in sorted(stored, key=lambda pair: (pair[1].source, pair[1].source_id)):
        if key in devices:
            index.remember(key, identity)
    return index


def test_pages_resolved_against_only_the_identities_they_name_get_the_whole_index_keys() -> None:
    machines, managed = tenant_fleet()
    expected = keys_of(DeviceIdentityIndex(), machines + managed)

    table: dict[tuple[str, str], tuple[str, SourceIdentity]] = {}  # the identity table
    keys: dict[str, str] = {}
    records = machines + managed
    for start in range(0, len(records), 5):  # pages of five, each stored before the next
        page = records[start : start + 5]
        index = named_by(list(table.values()), IdentityLookup.of_devices(page))
        keys |= keys_of(index, page)
        table |= {(i.source, i.source_id): (key, i) for key, i in index.identities()}

    assert keys == expected
    assert len(table) == len(records)


def test_identities_list_every_source_record_with_its_key() -> None:
    index = DeviceIdentityIndex()
    keys_of(index, [defender(), intune()])

    assert sorted(index.identities(), key=lambda pair: pair[1].source) == [
        (MACHINE_ID, SourceIdentity("defender", MACHINE_ID, AAD_ID, "pc01.contoso.local")),
        (MACHINE_ID, SourceIdentity("intune", INTUNE_ID, AAD_ID, "pc01")),
    ]


def test_remember_refuses_one_source_record_under_two_keys() -> None:
    index = DeviceIdentityIndex()
    index.remember("key-a", SourceIdentity("intune", INTUNE_ID))

    with pytest.raises(ValueError, match="stored under both"):
        index.remember("key-b", SourceIdentity("intune", INTUNE_ID))


def test_a_merged_record_cannot_be_indexed_as_one_source() -> None:
    with pytest.raises(ValueError, match="already merged"):
        DeviceIdentityIndex().assign(merge_devices(defender(), intune()))


# --- Index: resolving identifiers --------------------------------------------------------------


def merged_pc01_index() -> DeviceIdentityIndex:
    index = DeviceIdentityIndex()
    keys_of(index, [defender(), intune()])
    return index


@pytest.mark.parametrize(
    "identifier",
    [
        {"defender_machine_id": MACHINE_ID},
        {"defender_machine_id": MACHINE_ID.upper()},
        {"intune_device_id": INTUNE_ID},
        {"aad_device_id": AAD_ID},
        {"aad_device_id": AAD_ID.upper()},
        {"hostname": "pc01.contoso.local"},
        {"hostname": "PC01"},
    ],
    ids=["machine", "machine-upper", "intune", "aad", "aad-upper", "fqdn", "bare-name"],
)
def test_find_resolves_every_identifier_of_a_device(identifier: dict[str, str]) -> None:
    assert merged_pc01_index().find(**identifier) == MACHINE_ID


@pytest.mark.parametrize(
    "identifier",
    [
        {"defender_machine_id": OTHER_MACHINE_ID},
        {"intune_device_id": OTHER_INTUNE_ID},
        {"aad_device_id": OTHER_AAD_ID},
        {"hostname": "pc02"},
        {"hostname": "pc01.fabrikam.local"},
        {},
    ],
    ids=["machine", "intune", "aad", "name", "other-domain", "nothing"],
)
def test_find_returns_none_for_an_unknown_device(identifier: dict[str, str]) -> None:
    assert merged_pc01_index().find(**identifier) is None


def test_find_by_a_host_name_shared_by_two_devices_returns_none() -> None:
    index = DeviceIdentityIndex()
    keys_of(
        index,
        [
            defender(aadDeviceId=None, computerDnsName="pc01.contoso.local"),
            defender(id=OTHER_MACHINE_ID, aadDeviceId=None, computerDnsName="pc01.fabrikam.local"),
        ],
    )

    assert index.find(hostname="PC01") is None
    assert index.find(hostname="pc01.fabrikam.local") == OTHER_MACHINE_ID


# --- Alert and vulnerability links -------------------------------------------------------------


def test_alert_links_to_the_device_of_its_mde_device_id() -> None:
    alert = alert_record(graph_alert(evidence=[device_evidence(azureAdDeviceId=None)]))

    assert device_for_alert(alert, merged_pc01_index()) == MACHINE_ID


def test_alert_links_by_azure_ad_id_when_the_machine_is_unknown() -> None:
    index = DeviceIdentityIndex()
    index.assign(intune())  # Intune-only tenant: no Defender machine ids to match
    alert = alert_record(graph_alert())

    assert device_for_alert(alert, index) == INTUNE_ID


def test_alert_links_by_dns_name_when_no_id_is_known() -> None:
    index = DeviceIdentityIndex()
    index.assign(intune(azureADDeviceId=None))
    alert = alert_record(graph_alert())

    assert device_for_alert(alert, index) == INTUNE_ID


def test_alert_machine_id_outranks_an_earlier_evidence_azure_ad_id() -> None:
    index = DeviceIdentityIndex()
    index.assign(intune())
    index.assign(defender(id=OTHER_MACHINE_ID, aadDeviceId=None, computerDnsName="srv9.corp"))
    alert = alert_record(
        graph_alert(
            evidence=[
                device_evidence(mdeDeviceId=None),  # points at the Intune device by aad id
                device_evidence(mdeDeviceId=OTHER_MACHINE_ID, azureAdDeviceId=None),
            ]
        )
    )

    assert device_for_alert(alert, index) == OTHER_MACHINE_ID


def test_alert_without_resolvable_evidence_has_no_device() -> None:
    alert = alert_record(
        graph_alert(
            evidence=[
                device_evidence(
                    mdeDeviceId=OTHER_MACHINE_ID,
                    azureAdDeviceId=OTHER_AAD_ID,
                    deviceDnsName="ghost.contoso.local",
                )
            ]
        )
    )

    assert device_for_alert(alert, merged_pc01_index()) is None


def test_tenants_sharing_ids_link_alerts_only_within_their_own_index() -> None:
    # Tenant A has the Defender machine; tenant B only an Intune device with the same aad id.
    tenant_a, tenant_b = DeviceIdentityIndex(), DeviceIdentityIndex()
    tenant_a.assign(defender())
    tenant_b.assign(intune(id=OTHER_INTUNE_ID, deviceName="B-PC"))
    alert = alert_record(graph_alert())  # same alert id and evidence arrive in both tenants

    assert device_for_alert(alert, tenant_a) == MACHINE_ID
    assert device_for_alert(alert, tenant_b) == OTHER_INTUNE_ID


def test_vulnerability_links_to_the_merged_device_of_its_machine() -> None:
    index = DeviceIdentityIndex()
    index.remember(INTUNE_ID, SourceIdentity("intune", INTUNE_ID, AAD_ID, "pc01"))
    index.assign(defender())  # joins the stored Intune-keyed row
    link = DeviceVulnerabilityLink(MACHINE_ID, "CVE-2024-12053", None)

    assert device_for_vulnerability(link, index) == INTUNE_ID


def test_vulnerability_of_an_unknown_machine_has_no_device() -> None:
    link = DeviceVulnerabilityLink(OTHER_MACHINE_ID, "CVE-2024-12053", None)

    assert device_for_vulnerability(link, merged_pc01_index()) is None


def test_unique_vulnerabilities_keep_the_first_record_per_cve() -> None:
    first = VulnerabilityRecord("CVE-1", "high", Decimal("8.1"), None, None)
    records = [first, VulnerabilityRecord("CVE-2", "low", None, None, None), first]

    assert [r.cve_id for r in unique_vulnerabilities(records)] == ["CVE-1", "CVE-2"]


def test_unique_links_keep_the_earliest_detection_per_machine_and_cve() -> None:
    early = datetime(2024, 12, 1, tzinfo=UTC)
    late = datetime(2024, 12, 5, tzinfo=UTC)
    links = [
        DeviceVulnerabilityLink("m1", "CVE-1", late),
        DeviceVulnerabilityLink("m1", "CVE-1", None),
        DeviceVulnerabilityLink("m1", "CVE-1", early),
        DeviceVulnerabilityLink("m2", "CVE-1", late),
    ]

    assert unique_links(links) == [
        DeviceVulnerabilityLink("m1", "CVE-1", early),
        DeviceVulnerabilityLink("m2", "CVE-1", late),
    ]


# --- Failed compliance rules -------------------------------------------------------------------


def status(
    policy: str = POLICY_ID, name: str | None = "Baseline", **item: Any
) -> PolicyDeviceStatus:
    return policy_device_status(
        policy_device_status_item(**item), policy_id=policy, policy_name=name
    )


def test_failing_status_is_placed_by_the_managed_device_id_in_its_id() -> None:
    rules = FailedRulesByDevice()
    rules.add(status(deviceDisplayName="renamed-since"))

    assert [r["policyId"] for r in rules.rules_for(intune())] == [POLICY_ID]


def test_status_without_a_device_id_is_placed_by_display_name_case_insensitively() -> None:
    rules = FailedRulesByDevice()
    rules.add(status(id="17", deviceDisplayName="pc01"))

    assert [r["policyId"] for r in rules.rules_for(intune(deviceName="PC01"))] == [POLICY_ID]


def test_status_placed_by_name_is_found_for_a_merged_row_named_by_its_fqdn() -> None:
    rules = FailedRulesByDevice()
    rules.add(status(id="17", deviceDisplayName="PC01"))
    merged = merge_devices(defender(), intune(id=OTHER_INTUNE_ID))

    assert merged.hostname == "pc01.contoso.local"
    assert [r["policyId"] for r in rules.rules_for(merged)] == [POLICY_ID]


def test_status_carrying_another_devices_id_is_not_placed_by_name() -> None:
    rules = FailedRulesByDevice()
    rules.add(status(id=f"{OTHER_INTUNE_ID}_{POLICY_ID}", deviceDisplayName="PC01"))

    assert rules.rules_for(intune(deviceName="PC01")) == ()


def test_passing_statuses_are_not_failed_rules() -> None:
    rules = FailedRulesByDevice()
    for word in ("compliant", "notApplicable", "remediated", "unknown"):
        rules.add(status(status=word))

    assert rules.rules_for(intune()) == ()


def test_latest_report_per_policy_wins() -> None:
    rules = FailedRulesByDevice()
    rules.add(status(status="error", lastReportedDateTime="2024-12-09T09:00:00Z"))
    rules.add(status(status="nonCompliant", lastReportedDateTime="2024-12-09T10:00:00Z"))
    rules.add(status(status="conflict", lastReportedDateTime="2024-12-08T10:00:00Z"))

    assert [r["status"] for r in rules.rules_for(intune())] == ["nonCompliant"]


def test_failed_rules_are_ordered_by_policy_name() -> None:
    rules = FailedRulesByDevice()
    rules.add(status(policy="p-2", name="Encryption"))
    rules.add(status(policy="p-1", name="Windows baseline"))
    rules.add(status(policy="p-3", name="Defender"))

    names = [r["policyName"] for r in rules.rules_for(intune())]

    assert names == ["Defender", "Encryption", "Windows baseline"]


def test_failing_status_with_neither_device_id_nor_name_is_counted() -> None:
    rules = FailedRulesByDevice()
    rules.add(status(id="17", deviceDisplayName=None))

    assert rules.unplaced_count == 1
    assert rules.rules_for(intune()) == ()
