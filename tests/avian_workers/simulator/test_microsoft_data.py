"""Generated tenant data: deterministic, shaped like Microsoft's, and consistent across APIs."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest

from avian_workers.simulator import TenantSpec
from avian_workers.simulator._microsoft_data import TenantData
from avian_workers.simulator._microsoft_values import (
    datetime_ticks,
    format_ticks,
    parse_datetime_ticks,
)

CREATED = datetime_ticks(datetime(2024, 12, 9, 10, 0, tzinfo=UTC))


def tenant_data(**fields: object) -> TenantData:
    spec = {"tenant_id": "tenant-a", "client_id": "app", "client_secret": "secret"} | fields
    return TenantData(TenantSpec(**spec), created_ticks=CREATED)  # type: ignore[arg-type]


def everything(data: TenantData) -> list[object]:
    return [
        [data.machine(j) for j in range(data.machine_count)],
        [data.managed_device(j) for j in range(data.managed_device_count)],
        [data.vulnerability_row(r) for r in range(data.vulnerability_row_count)],
        [list(data.device_statuses(p)) for p in range(data.spec.policies)],
        [a.body for a in data.alerts()],
        data.secure_score(0),
    ]


def test_the_same_spec_generates_the_same_data() -> None:
    assert everything(tenant_data(devices=50)) == everything(tenant_data(devices=50))


def test_tenants_sharing_an_id_namespace_share_ids_but_not_names() -> None:
    first = tenant_data(tenant_id="a", id_namespace="shared", seed=1, devices=30)
    second = tenant_data(tenant_id="b", id_namespace="shared", seed=2, devices=30)

    def ids(data: TenantData) -> set[str]:
        return {data.machine(j)["id"] for j in range(data.machine_count)}

    def names(data: TenantData) -> set[str]:
        return {data.machine(j)["computerDnsName"] for j in range(data.machine_count)}

    assert ids(first) == ids(second)
    assert {a.body["id"] for a in first.alerts()} == {a.body["id"] for a in second.alerts()}
    assert not names(first) & names(second)


def test_devices_fall_in_the_documented_merge_categories() -> None:
    data = tenant_data(devices=100)
    machines = [data.machine(j) for j in range(data.machine_count)]
    managed = [data.managed_device(j) for j in range(data.managed_device_count)]
    intune_by_aad = {d["azureADDeviceId"]: d for d in managed}
    intune_hosts = {d["deviceName"].lower() for d in managed}

    by_aad = [m for m in machines if m["aadDeviceId"] in intune_by_aad]
    by_name_only = [
        m
        for m in machines
        if m["aadDeviceId"] is None and m["computerDnsName"].split(".")[0] in intune_hosts
    ]
    defender_only = len(machines) - len(by_aad) - len(by_name_only)

    assert (len(machines), len(managed)) == (90, 90)
    assert (len(by_aad), len(by_name_only), defender_only) == (70, 10, 10)
    for machine in by_aad:
        twin = intune_by_aad[machine["aadDeviceId"]]
        assert twin["deviceName"].lower() == machine["computerDnsName"].split(".")[0]


def test_machine_fields_use_defenders_enumerations() -> None:
    data = tenant_data(devices=200)
    machines = [data.machine(j) for j in range(data.machine_count)]

    assert {m["riskScore"] for m in machines} <= {"None", "Informational", "Low", "Medium", "High"}
    assert {m["exposureLevel"] for m in machines} <= {"None", "Low", "Medium", "High"}
    assert {m["healthStatus"] for m in machines} <= {
        "Active",
        "Inactive",
        "ImpairedCommunication",
        "NoSensorData",
    }
    assert len({m["id"] for m in machines}) == len(machines)


def test_alert_timestamps_have_seven_fractional_digits_and_some_tie() -> None:
    data = tenant_data(alerts=30)
    stamps = [a.body["lastUpdateDateTime"] for a in data.alerts()]

    assert all(len(stamp.split(".")[1]) == len("1234567Z") for stamp in stamps)
    assert max(Counter(stamps).values()) > 1
    assert stamps == sorted(stamps)


def test_alert_device_evidence_points_at_existing_machines() -> None:
    data = tenant_data(devices=40, alerts=40)
    machines = {data.machine(j)["id"]: data.machine(j) for j in range(data.machine_count)}
    evidence = [
        e
        for alert in data.alerts()
        for e in alert.body["evidence"]
        if e["@odata.type"] == "#microsoft.graph.security.deviceEvidence"
    ]

    assert evidence
    for item in evidence:
        machine = machines[item["mdeDeviceId"]]
        assert item["azureAdDeviceId"] == machine["aadDeviceId"]
        assert item["deviceDnsName"] == machine["computerDnsName"]


def test_some_alerts_have_no_device() -> None:
    data = tenant_data(alerts=30)

    without_device = [
        a for a in data.alerts() if not any("mdeDeviceId" in e for e in a.body["evidence"])
    ]

    assert without_device


def test_vulnerability_rows_point_at_machines_and_some_have_no_cve() -> None:
    data = tenant_data(devices=40, cves=10, cves_per_device=3)
    machines = {data.machine(j)["id"] for j in range(data.machine_count)}
    rows = [data.vulnerability_row(r) for r in range(data.vulnerability_row_count)]

    assert {row["deviceId"] for row in rows} == machines
    assert any(row["cveId"] is None for row in rows)
    for row in rows:
        if row["cveId"] is None:
            continue
        assert row["cveId"].startswith("CVE-")
        assert row["vulnerabilitySeverityLevel"] in {"Low", "Medium", "High", "Critical"}
        assert row["cvssScore"] is None or 0 <= row["cvssScore"] <= 10


def test_every_enrolled_device_has_a_status_on_its_platforms_policies() -> None:
    data = tenant_data(devices=60, policies=6)
    managed = [data.managed_device(j) for j in range(data.managed_device_count)]
    statuses = [list(data.device_statuses(p)) for p in range(6)]

    named = Counter(s["deviceDisplayName"] for policy in statuses for s in policy)

    assert set(named) == {d["deviceName"] for d in managed}
    assert set(named.values()) == {2}  # two policies per platform
    failing = {
        s["deviceDisplayName"]
        for policy in statuses
        for s in policy
        if s["status"] == "nonCompliant"
    }
    assert failing == {
        d["deviceName"]
        for d in managed
        if d["complianceState"] in {"noncompliant", "inGracePeriod"}
    }


def test_ticks_round_trip_through_microsofts_format() -> None:
    stamp = "2021-05-02T14:19:01.3266667Z"

    assert format_ticks(parse_datetime_ticks(stamp)) == stamp
    assert parse_datetime_ticks("2021-05-02T16:19:01.3266667+02:00") == parse_datetime_ticks(stamp)
    assert parse_datetime_ticks("2021-05-02T14:19:01Z") == parse_datetime_ticks(
        "2021-05-02T14:19:01.0000000Z"
    )


def test_late_alert_keeps_its_old_timestamp_and_sorts_into_place() -> None:
    data = tenant_data(alerts=10)
    oldest = data.alerts()[0].ticks

    late = data.add_alert(oldest - 1)

    assert data.alerts()[0].body["id"] == late["id"]
    assert late["lastUpdateDateTime"] == format_ticks(oldest - 1)


@pytest.mark.parametrize(
    "fields",
    [{"devices": -1}, {"cves": 2, "cves_per_device": 3}, {"graph_page_size": 0}],
)
def test_impossible_sizes_are_refused(fields: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=r"must|cannot"):
        TenantSpec("t", "c", "s", **fields)  # type: ignore[arg-type]


def test_updated_alert_moves_to_its_new_time() -> None:
    data = tenant_data(alerts=10)
    oldest = data.alerts()[0]
    newest_ticks = data.alerts()[-1].ticks

    updated = data.update_alert(oldest.body["id"], newest_ticks + 1, status="resolved")

    assert data.alerts()[-1].body == updated
    assert (updated["status"], updated["severity"]) == ("resolved", oldest.body["severity"])
    assert len(data.alerts()) == 10
