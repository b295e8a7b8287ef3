"""EDR writes and reads against a real PostgreSQL: merges, links, idempotence, tenant isolation."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text

from avian_workers.db.models import (
    Base,
    EdrAlert,
    EdrCompliance,
    EdrDevice,
    EdrDeviceVulnerability,
    EdrPostureScore,
    EdrSecureScore,
    EdrVulnerability,
)
from avian_workers.edr.merge import FailedRulesByDevice
from avian_workers.edr.normalize import (
    VulnerabilityFinding,
    alert_record,
    compliance_record,
    defender_device,
    intune_device,
    policy_device_status,
    vulnerability_finding,
)
from avian_workers.edr.posture import PostureInputs, posture_score
from avian_workers.edr.secure_score import SecureScoreRecord
from avian_workers.edr.store import ALERTS, TenantStore, tenants_to_poll
from tests.avian_workers.edr.payloads import (
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
    vulnerability_row,
)
from tests.avian_workers.edr.tenants import add_tenant_row

NOW = datetime(2024, 12, 9, 10, 0, tzinfo=UTC)


@pytest.fixture
def tenant_id(db: Engine) -> uuid.UUID:
    return add_tenant_row(db)


@pytest.fixture
def store(db: Engine, tenant_id: uuid.UUID) -> TenantStore:
    return TenantStore(db, tenant_id)


def write_defender(store: TenantStore, *machines: dict[str, Any]) -> int:
    return store.write_defender_devices([defender_device(m) for m in machines])


def write_intune(
    store: TenantStore,
    *devices: dict[str, Any],
    failed_rules: FailedRulesByDevice | None = None,
    rules_known: bool = True,
) -> int:
    records = [intune_device(d) for d in devices]
    rules = failed_rules or FailedRulesByDevice()
    return store.write_intune_devices(
        records,
        compliance=[compliance_record(r, rules.rules_for(r), checked_at=NOW) for r in records],
        failed_rules_known=rules_known,
    )


def device_rows(engine: Engine, tenant_id: uuid.UUID) -> dict[str, Any]:
    with engine.connect() as conn:
        rows = conn.execute(select(EdrDevice).where(EdrDevice.tenant_id == tenant_id)).all()
    return {row.microsoft_device_id: row for row in rows}


def table_count(engine: Engine, model: type[Base]) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


# --- Devices -------------------------------------------------------------------------------


def test_defender_and_intune_records_of_one_device_make_one_row_with_each_sources_columns(
    db: Engine, store: TenantStore, tenant_id: uuid.UUID
) -> None:
    write_defender(store, defender_machine())
    write_intune(store, managed_device())

    (row,) = device_rows(db, tenant_id).values()
    assert row.microsoft_device_id == MACHINE_ID
    assert (row.device_name, row.operating_system, row.risk_score) == (
        "pc01.contoso.local",
        "Windows11",
        60,
    )
    assert (row.primary_user, row.intune_compliance_state, row.intune_enrollment_status) == (
        "ada@contoso.com",
        "noncompliant",
        "managed",
    )
    assert row.last_seen_at == datetime(2024, 12, 9, 9, 58, 11, 713036, tzinfo=UTC)


def test_intune_fills_only_the_defender_columns_defender_left_empty(
    db: Engine, store: TenantStore, tenant_id: uuid.UUID
) -> None:
    write_defender(store, defender_machine(osVersion=None, version=None))
    write_intune(store, managed_device(osVersion="10.0.22631.9999"))

    (row,) = device_rows(db, tenant_id).values()
    assert row.os_version == "10.0.22631.9999"
    assert row.operating_system == "Windows11"  # not Intune's 'Windows'
    assert row.device_name == "pc01.contoso.local"  # not Intune's 'PC01'


def test_a_device_stored_from_intune_keeps_its_key_when_defender_finds_it(
    db: Engine, store: TenantStore, tenant_id: uuid.UUID
) -> None:
    write_intune(store, managed_device())
    assert set(device_rows(db, tenant_id)) == {INTUNE_ID}

    write_defender(store, defender_machine())
    write_intune(store, managed_device())

    (row,) = device_rows(db, tenant_id).values()
    assert row.microsoft_device_id == INTUNE_ID
    assert (row.device_name, row.operating_system) == ("pc01.contoso.local", "Windows11")


def test_a_device_only_intune_knows_takes_every_change_from_intune(
    db: Engine, store: TenantStore, tenant_id: uuid.UUID
) -> None:
    write_intune(store, managed_device(aadDeviceId=None))
    write_intune(store, managed_device(deviceName="PC01-RENAMED", osVersion="11"))

    (row,) = device_rows(db, tenant_id).values()
    assert (row.device_name, row.os_version) == ("PC01-RENAMED", "11")


def test_last_seen_at_never_moves_back(
    db: Engine, store: TenantStore, tenant_id: uuid.UUID
) -> None:
    write_defender(store, defender_machine(lastSeen="2024-12-09T09:00:00Z"))
    write_intune(store, managed_device(lastSyncDateTime="2024-12-09T09:30:00Z"))
    write_defender(store, defender_machine(lastSeen="2024-12-08T09:00:00Z"))

    (row,) = device_rows(db, tenant_id).values()
    assert row.last_seen_at == datetime(2024, 12, 9, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize("stale_first", [True, False], ids=["stale first", "stale last"])
def test_two_machines_of_one_device_in_a_page_leave_the_newest_ones_columns(
    db: Engine, store: TenantStore, tenant_id: uuid.UUID, stale_first: bool
) -> None:
    current = defender_machine(riskScore="High", healthStatus="Active")
    stale = defender_machine(
        id=OTHER_MACHINE_ID,
        lastSeen="2024-06-01T08:00:00Z",
        riskScore="Low",
        healthStatus="Inactive",
    )

    write_defender(store, *((stale, current) if stale_first else (current, stale)))

    (row,) = device_rows(db, tenant_id).values()
    assert (row.defender_health_status, row.risk_score) == ("Active", 90)
    assert row.last_seen_at == datetime(2024, 12, 9, 9, 58, 11, 713036, tzinfo=UTC)


@pytest.mark.parametrize("stale_first", [True, False], ids=["stale first", "stale last"])
def test_two_enrolments_of_one_device_in_a_page_leave_the_newest_ones_compliance(
    db: Engine, store: TenantStore, tenant_id: uuid.UUID, stale_first: bool
) -> None:
    current = managed_device(complianceState="compliant")
    stale = managed_device(
        id=OTHER_INTUNE_ID,
        lastSyncDateTime="2024-06-01T08:00:00Z",
        complianceState="noncompliant",
        managementState="retirePending",
    )

    write_intune(store, *((stale, current) if stale_first else (current, stale)))

    (row,) = device_rows(db, tenant_id).values()
    (compliance,) = compliance_rows(db)
    assert (row.intune_compliance_state, compliance.compliance_state) == ("compliant", "compliant")
    assert row.last_seen_at == datetime(2024, 12, 9, 9, 30, tzinfo=UTC)


def stale_machine(**overrides: Any) -> dict[str, Any]:
    """The old record Defender keeps of a re-onboarded PC: same Azure AD id, other machine id."""
    machine: dict[str, Any] = {
        "id": OTHER_MACHINE_ID,
        "lastSeen": "2024-06-01T08:00:00Z",
        "riskScore": "Low",
        "healthStatus": "Inactive",
        "exposureLevel": "High",
    }
    return defender_machine(**(machine | overrides))


@pytest.mark.parametrize("stale_later", [True, False], ids=["stale later", "stale earlier"])
def test_two_machines_of_one_device_on_different_pages_leave_the_newest_ones_columns(
    db: Engine, store: TenantStore, tenant_id: uuid.UUID, stale_later: bool
) -> None:
    current = defender_machine(riskScore="High", healthStatus="Active", exposureLevel="Low")

    for page in ([current], [stale_machine()]) if stale_later else ([stale_machine()], [current]):
        write_defender(store, *page)

    (row,) = device_rows(db, tenant_id).values()
    assert (row.defender_health_status, row.risk_score, row.exposure_level) == (
        "Active",
        90,
        "Low",
    )
    assert row.last_seen_at == datetime(2024, 12, 9, 9, 58, 11, 713036, tzinfo=UTC)


def test_a_stale_machine_listed_first_in_a_later_poll_changes_nothing_stored(
    db: Engine, store: TenantStore, tenant_id: uuid.UUID
) -> None:
    current = defender_machine(riskScore="High")
    write_defender(store, current)
    write_defender(store, stale_machine())
    write_intune(store, managed_device())
    with db.connect() as conn:
        before = conn.execute(text("SELECT * FROM edr_devices")).all()
    (row,) = device_rows(db, tenant_id).values()
    assert (row.defender_health_status, row.risk_score) == ("Active", 90)  # the current machine

    write_defender(store, stale_machine())  # the next poll's first page
    with db.connect() as conn:
        assert conn.execute(text("SELECT * FROM edr_devices")).all() == before
    write_defender(store, current)
    with db.connect() as conn:
        assert conn.execute(text("SELECT * FROM edr_devices")).all() == before


def test_the_newest_machine_updates_its_device_though_intune_saw_the_device_later(
    db: Engine, store: TenantStore, tenant_id: uuid.UUID
) -> None:
    write_defender(store, defender_machine(lastSeen="2024-12-09T09:00:00Z", riskScore="Medium"))
    write_defender(store, stale_machine())
    write_intune(store, managed_device(lastSyncDateTime="2024-12-09T09:30:00Z"))

    write_defender(store, defender_machine(lastSeen="2024-12-09T09:10:00Z", riskScore="High"))

    (row,) = device_rows(db, tenant_id).values()
    assert row.risk_score == 90
    assert row.last_seen_at == datetime(2024, 12, 9, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize("unseen_later", [True, False], ids=["unseen later", "unseen earlier"])
def test_a_machine_never_seen_does_not_overwrite_one_that_was(
    db: Engine, store: TenantStore, tenant_id: uuid.UUID, unseen_later: bool
) -> None:
    seen, unseen = defender_machine(riskScore="High"), stale_machine(lastSeen=None)

    for page in ([seen], [unseen]) if unseen_later else ([unseen], [seen]):
        write_defender(store, *page)

    (row,) = device_rows(db, tenant_id).values()
    assert (row.defender_health_status, row.risk_score) == ("Active", 90)


def test_machines_of_one_device_seen_at_the_same_moment_leave_the_same_columns_in_any_order(
    db: Engine,
) -> None:
    first = defender_machine(riskScore="High")
    second = stale_machine(lastSeen=first["lastSeen"])
    columns = []
    for pages in (([first], [second]), ([second], [first]), ([first, second],)):
        tenant = add_tenant_row(db)
        for page in pages:
            write_defender(TenantStore(db, tenant), *page)
        (row,) = device_rows(db, tenant).values()
        columns.append((row.defender_health_status, row.risk_score, row.exposure_level))

    assert len(set(columns)) == 1


@pytest.mark.parametrize("defender_known", [True, False], ids=["with defender", "intune only"])
@pytest.mark.parametrize("stale_later", [True, False], ids=["stale later", "stale earlier"])
def test_two_enrolments_of_one_device_on_different_pages_leave_the_newest_ones_columns(
    db: Engine, store: TenantStore, tenant_id: uuid.UUID, stale_later: bool, defender_known: bool
) -> None:
    current = managed_device(complianceState="compliant")
    stale = managed_device(
        id=OTHER_INTUNE_ID,
        deviceName="PC01-OLD",
        lastSyncDateTime="2024-06-01T08:00:00Z",
        complianceState="noncompliant",
        managementState="retirePending",
        userPrincipalName="grace@contoso.com",
    )
    if defender_known:
        write_defender(store, defender_machine())

    for page in ([current], [stale]) if stale_later else ([stale], [current]):
        write_intune(store, *page)

    (row,) = device_rows(db, tenant_id).values()
    (compliance,) = compliance_rows(db)
    assert (row.intune_compliance_state, row.intune_enrollment_status, row.primary_user) == (
        "compliant",
        "managed",
        "ada@contoso.com",
    )
    assert row.device_name == ("pc01.contoso.local" if defender_known else "PC01")
    assert compliance.compliance_state == "compliant"


def test_writing_the_same_pages_again_changes_no_row(
    db: Engine, store: TenantStore, tenant_id: uuid.UUID
) -> None:
    def poll() -> None:
        write_defender(
            store,
            defender_machine(),
            defender_machine(id=OTHER_MACHINE_ID, aadDeviceId=OTHER_AAD_ID, computerDnsName="pc02"),
        )
        write_intune(store, managed_device())
        store.write_alerts([alert_record(graph_alert())])

    poll()
    with db.connect() as conn:
        before = conn.execute(text("SELECT * FROM edr_devices ORDER BY id")).all()
        alerts_before = conn.execute(text("SELECT * FROM edr_alerts ORDER BY id")).all()
        compliance_before = conn.execute(text("SELECT * FROM edr_compliance ORDER BY id")).all()
    poll()
    with db.connect() as conn:
        assert conn.execute(text("SELECT * FROM edr_devices ORDER BY id")).all() == before
        assert conn.execute(text("SELECT * FROM edr_alerts ORDER BY id")).all() == alerts_before
        assert (
            conn.execute(text("SELECT * FROM edr_compliance ORDER BY id")).all()
            == compliance_before
        )
    assert len(before) == 2


# --- Alerts --------------------------------------------------------------------------------


def test_an_alert_is_linked_to_the_device_its_evidence_names(
    db: Engine, store: TenantStore, tenant_id: uuid.UUID
) -> None:
    write_defender(
        store,
        defender_machine(),
        defender_machine(
            id=OTHER_MACHINE_ID, aadDeviceId=OTHER_AAD_ID, computerDnsName="pc02.contoso.local"
        ),
    )
    about_pc02 = graph_alert(
        id="alert-pc02", evidence=[device_evidence(mdeDeviceId=OTHER_MACHINE_ID)]
    )
    about_nobody = graph_alert(id="alert-user", evidence=[])
    store.write_alerts([alert_record(about_pc02), alert_record(about_nobody)])

    devices = device_rows(db, tenant_id)
    with db.connect() as conn:
        links = dict(conn.execute(select(EdrAlert.microsoft_alert_id, EdrAlert.device_id)).all())
    assert links == {"alert-pc02": devices[OTHER_MACHINE_ID].id, "alert-user": None}


def test_a_later_page_finds_a_stored_device_by_its_ids_and_host_name_in_any_case(
    db: Engine, store: TenantStore, tenant_id: uuid.UUID
) -> None:
    write_defender(store, defender_machine())
    by_machine = device_evidence(
        mdeDeviceId=MACHINE_ID.upper(), azureAdDeviceId=None, deviceDnsName=None
    )
    by_name = device_evidence(mdeDeviceId=None, azureAdDeviceId=None, deviceDnsName="PC01.")
    store.write_alerts(
        [
            alert_record(graph_alert(id="by-machine", evidence=[by_machine])),
            alert_record(graph_alert(id="by-name", evidence=[by_name])),
        ]
    )
    with store.vulnerability_sweep() as sweep:
        sweep.write_page(findings(vulnerability_row(deviceId=f" {MACHINE_ID.upper()} ")))
    write_intune(store, managed_device(azureADDeviceId=None, deviceName="PC01"))

    (device,) = device_rows(db, tenant_id).values()
    with db.connect() as conn:
        alerts = dict(conn.execute(select(EdrAlert.microsoft_alert_id, EdrAlert.device_id)).all())
        linked = conn.execute(select(EdrDeviceVulnerability.device_id)).scalars().all()
    assert alerts == {"by-machine": device.id, "by-name": device.id}
    assert linked == [device.id]
    assert device.intune_compliance_state == "noncompliant"


def test_an_alert_keeps_its_device_when_its_evidence_no_longer_resolves(
    db: Engine, store: TenantStore, tenant_id: uuid.UUID
) -> None:
    write_defender(store, defender_machine())
    store.write_alerts([alert_record(graph_alert())])
    store.write_alerts([alert_record(graph_alert(status="resolved", evidence=[]))])

    with db.connect() as conn:
        row = conn.execute(select(EdrAlert)).one()
    assert row.status == "resolved"
    assert row.device_id == device_rows(db, tenant_id)[MACHINE_ID].id


def test_informational_alerts_are_stored_as_low(db: Engine, store: TenantStore) -> None:
    store.write_alerts([alert_record(graph_alert(severity="informational"))])
    with db.connect() as conn:
        assert conn.execute(select(EdrAlert.severity)).scalar_one() == "low"


def test_two_tenants_sharing_microsoft_ids_never_share_or_touch_rows(db: Engine) -> None:
    first, second = TenantStore(db, add_tenant_row(db)), TenantStore(db, add_tenant_row(db))
    for store, name in ((first, "first.contoso.local"), (second, "second.fabrikam.local")):
        write_defender(store, defender_machine(computerDnsName=name))
        store.write_alerts([alert_record(graph_alert())])
        with store.vulnerability_sweep() as sweep:
            sweep.write_page(findings(vulnerability_row()))

    for store, name in ((first, "first.contoso.local"), (second, "second.fabrikam.local")):
        (device,) = device_rows(db, store.tenant_id).values()
        assert device.device_name == name
        with db.connect() as conn:
            alert = conn.execute(
                select(EdrAlert).where(EdrAlert.tenant_id == store.tenant_id)
            ).one()
            link = conn.execute(
                select(EdrDeviceVulnerability, EdrVulnerability.tenant_id)
                .join(EdrVulnerability)
                .where(EdrDeviceVulnerability.device_id == device.id)
            ).one()
        assert alert.device_id == device.id
        assert link.tenant_id == store.tenant_id
    assert table_count(db, EdrAlert) == 2
    assert table_count(db, EdrVulnerability) == 2


# --- Vulnerabilities -----------------------------------------------------------------------


def findings(*rows: dict[str, Any]) -> list[VulnerabilityFinding]:
    return [f for f in (vulnerability_finding(row) for row in rows) if f is not None]


def links(engine: Engine) -> dict[tuple[str, str], datetime | None]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                EdrDevice.microsoft_device_id,
                EdrVulnerability.cve_id,
                EdrDeviceVulnerability.detected_at,
            )
            .join(EdrDevice, EdrDevice.id == EdrDeviceVulnerability.device_id)
            .join(EdrVulnerability, EdrVulnerability.id == EdrDeviceVulnerability.vulnerability_id)
        ).all()
    return {(row[0], row[1]): row[2] for row in rows}


def test_vulnerability_pages_store_one_row_per_cve_and_the_earliest_detection_per_link(
    db: Engine, store: TenantStore
) -> None:
    write_defender(
        store,
        defender_machine(),
        defender_machine(id=OTHER_MACHINE_ID, aadDeviceId=OTHER_AAD_ID, computerDnsName="pc02"),
    )
    chrome = {"cveId": "CVE-2024-12053"}
    with store.vulnerability_sweep() as sweep:
        sweep.write_page(
            findings(
                vulnerability_row(**chrome, firstSeenTimestamp="2024-12-05 00:00:00"),
                vulnerability_row(**chrome, deviceId=OTHER_MACHINE_ID),
                vulnerability_row(cveId="CVE-2024-0001", cvssScore=5.0),
                vulnerability_row(cveId=None),  # inventoried software, no CVE
            )
        )
        sweep.write_page(
            findings(
                vulnerability_row(**chrome, firstSeenTimestamp="2024-12-01 00:00:00"),
                vulnerability_row(**chrome, firstSeenTimestamp="2024-12-07 00:00:00"),
            )
        )

    assert table_count(db, EdrVulnerability) == 2
    assert links(db) == {
        (MACHINE_ID, "CVE-2024-12053"): datetime(2024, 12, 1, tzinfo=UTC),
        (OTHER_MACHINE_ID, "CVE-2024-12053"): datetime(2024, 12, 4, 10, 13, 34, 847688, tzinfo=UTC),
        (MACHINE_ID, "CVE-2024-0001"): datetime(2024, 12, 4, 10, 13, 34, 847688, tzinfo=UTC),
    }


def test_two_machines_of_one_device_listing_a_cve_make_one_link(
    db: Engine, store: TenantStore
) -> None:
    # Two Defender machines of one Azure AD device (a reinstall) are one device row.
    write_defender(store, defender_machine(), defender_machine(id=OTHER_MACHINE_ID))
    with store.vulnerability_sweep() as sweep:
        sweep.write_page(
            findings(vulnerability_row(), vulnerability_row(deviceId=OTHER_MACHINE_ID))
        )
    assert list(links(db)) == [(MACHINE_ID, "CVE-2024-12053")]


def test_a_complete_sweep_removes_the_links_the_export_no_longer_lists(
    db: Engine, store: TenantStore
) -> None:
    write_defender(store, defender_machine())
    with store.vulnerability_sweep() as sweep:
        sweep.write_page(findings(vulnerability_row(), vulnerability_row(cveId="CVE-1")))
        assert sweep.remove_unseen_links() == 0
    with store.vulnerability_sweep() as sweep:
        sweep.write_page(findings(vulnerability_row()))
        assert sweep.remove_unseen_links() == 1

    assert list(links(db)) == [(MACHINE_ID, "CVE-2024-12053")]
    assert table_count(db, EdrVulnerability) == 2  # the CVE stays known to the tenant


def test_a_sweep_that_did_not_finish_removes_nothing(db: Engine, store: TenantStore) -> None:
    write_defender(store, defender_machine())
    with store.vulnerability_sweep() as sweep:
        sweep.write_page(findings(vulnerability_row(), vulnerability_row(cveId="CVE-1")))
    with store.vulnerability_sweep() as sweep:
        sweep.write_page(findings(vulnerability_row()))
    assert len(links(db)) == 2


def test_a_sweep_never_removes_another_tenants_links(db: Engine, store: TenantStore) -> None:
    other = TenantStore(db, add_tenant_row(db))
    for each in (store, other):
        write_defender(each, defender_machine())
        with each.vulnerability_sweep() as sweep:
            sweep.write_page(findings(vulnerability_row()))
    with store.vulnerability_sweep() as sweep:
        assert sweep.remove_unseen_links() == 1
    assert table_count(db, EdrDeviceVulnerability) == 1


# --- Compliance, posture, secure score -----------------------------------------------------


def compliance_rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(EdrCompliance)).all())


def test_compliance_is_one_row_per_device_with_its_failed_rules(
    db: Engine, store: TenantStore, tenant_id: uuid.UUID
) -> None:
    rules = FailedRulesByDevice()
    rules.add(
        policy_device_status(
            policy_device_status_item(), policy_id=POLICY_ID, policy_name="Windows baseline"
        )
    )
    write_intune(
        store,
        managed_device(),
        managed_device(
            id=OTHER_INTUNE_ID,
            deviceName="PC02",
            azureADDeviceId=OTHER_AAD_ID,
            complianceState="compliant",
        ),
        failed_rules=rules,
    )
    write_intune(store, managed_device(), failed_rules=rules)

    devices = device_rows(db, tenant_id)
    by_device = {row.device_id: row for row in compliance_rows(db)}
    assert len(by_device) == 2
    failing = by_device[devices[INTUNE_ID].id]
    assert failing.compliance_state == "noncompliant"
    assert failing.failed_rules == [
        {
            "policyId": POLICY_ID,
            "policyName": "Windows baseline",
            "status": "nonCompliant",
            "lastReported": "2024-12-09T09:30:00Z",
        }
    ]
    assert by_device[devices[OTHER_INTUNE_ID].id].failed_rules == []
    assert failing.checked_at == NOW


def test_unread_policy_statuses_store_failed_rules_as_unknown(
    db: Engine, store: TenantStore
) -> None:
    write_intune(store, managed_device(), rules_known=False)
    with db.connect() as conn:
        is_sql_null = conn.execute(select(EdrCompliance.failed_rules.is_(None))).scalar_one()
    assert is_sql_null  # SQL NULL (unknown), not the JSON value null


def test_posture_inputs_are_counted_from_the_tenants_stored_rows(
    db: Engine, store: TenantStore
) -> None:
    write_defender(
        store,
        defender_machine(riskScore="High"),
        defender_machine(
            id=OTHER_MACHINE_ID, aadDeviceId=OTHER_AAD_ID, computerDnsName="pc02", riskScore="Low"
        ),
    )
    write_intune(
        store,
        managed_device(),  # noncompliant, merges with the first machine
        managed_device(
            id=OTHER_INTUNE_ID,
            deviceName="PHONE1",
            azureADDeviceId="11111111-2222-4333-8444-555555555555",
            complianceState="compliant",
        ),
    )
    store.write_alerts(
        [
            alert_record(graph_alert(id="a1", severity="high", status="new")),
            alert_record(graph_alert(id="a2", severity="high", status="resolved")),
            alert_record(graph_alert(id="a3", severity="medium", status="inProgress")),
            alert_record(graph_alert(id="a4", severity="informational", status="new")),
        ]
    )
    with store.vulnerability_sweep() as sweep:
        sweep.write_page(
            findings(
                vulnerability_row(cveId="CVE-1", cvssScore=9.8),
                vulnerability_row(cveId="CVE-2", cvssScore=7.0, deviceId=OTHER_MACHINE_ID),
                vulnerability_row(cveId="CVE-1", cvssScore=9.8, deviceId=OTHER_MACHINE_ID),
                vulnerability_row(cveId="CVE-3", cvssScore=6.9),
            )
        )
    # Another tenant's rows never count.
    other = TenantStore(db, add_tenant_row(db))
    write_defender(other, defender_machine(riskScore="High"))
    other.write_alerts([alert_record(graph_alert(severity="high"))])

    inputs = store.posture_inputs()
    assert sorted(inputs.risk_scores, key=lambda s: -1 if s is None else s) == [None, 30, 90]
    assert inputs == PostureInputs(
        risk_scores=inputs.risk_scores,
        high_alert_count=1,
        medium_alert_count=1,
        low_alert_count=1,
        critical_vulnerability_count=2,
        compliant_count=1,
        total_compliance_count=2,
    )


def test_each_posture_score_is_kept_as_history(db: Engine, store: TenantStore) -> None:
    score = posture_score(PostureInputs(risk_scores=[90]))
    store.write_posture_score(score, calculated_at=NOW)
    store.write_posture_score(score, calculated_at=NOW + timedelta(minutes=15))
    with db.connect() as conn:
        rows = conn.execute(select(EdrPostureScore.score, EdrPostureScore.device_count)).all()
    assert rows == [(score.score, 1), (score.score, 1)]


def test_secure_score_is_one_row_per_tenant_and_day(db: Engine, store: TenantStore) -> None:
    def record(current: str) -> SecureScoreRecord:
        return SecureScoreRecord(date(2024, 12, 9), Decimal(current), Decimal(250), 40, 50, NOW)

    store.write_secure_score(record("101.50"))
    store.write_secure_score(record("120.25"))
    with db.connect() as conn:
        rows = conn.execute(select(EdrSecureScore.current_score)).scalars().all()
    assert rows == [Decimal("120.25")]


# --- Sync state and tenants ----------------------------------------------------------------


def test_a_watermark_never_moves_back_and_a_failure_keeps_it(store: TenantStore) -> None:
    store.record_success(ALERTS, at=NOW, watermark=NOW - timedelta(minutes=5))
    store.record_success(ALERTS, at=NOW, watermark=NOW - timedelta(minutes=30))
    store.record_failure(ALERTS, at=NOW + timedelta(minutes=15), error="206")

    state = store.sync_state(ALERTS)
    assert state is not None
    assert state.watermark == NOW - timedelta(minutes=5)
    assert state.last_success_at == NOW
    assert state.last_attempt_at == NOW + timedelta(minutes=15)
    assert state.last_error == "206"


def test_sync_state_is_per_tenant(db: Engine, store: TenantStore) -> None:
    store.record_success(ALERTS, at=NOW, watermark=NOW)
    assert TenantStore(db, add_tenant_row(db)).sync_state(ALERTS) is None


def test_tenants_to_poll_are_the_active_ones_or_exactly_those_named(db: Engine) -> None:
    active = add_tenant_row(db, "Active")
    inactive = add_tenant_row(db, "Inactive", active=False)

    assert [t.id for t in tenants_to_poll(db)] == [active]
    named: Sequence[uuid.UUID] = [inactive, uuid.uuid4()]
    assert [(t.id, t.name) for t in tenants_to_poll(db, named)] == [(inactive, "Inactive")]
