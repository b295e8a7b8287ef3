"""Whole tenants read through the simulator's faults: throttling, outages, expiring tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from avian_workers.microsoft import (
    HttpPolicy,
    RetryBudgetExceededError,
    TenantClients,
    TokenRejectedError,
)
from avian_workers.simulator import Faults, SimulatedTenant
from tests.avian_workers.microsoft.conftest import PATIENT, Connect, FakeClock
from tests.plugins.microsoft_simulator import MicrosoftSimulatorHandle

WEEK_AGO = datetime.now(UTC) - timedelta(days=7)


def read_everything(clients: TenantClients) -> dict[str, list[str]]:
    """Ids of every dataset of a tenant, read page by page in small pages."""
    graph, defender = clients.graph, clients.defender
    policies = [p for page in graph.compliance_policies() for p in page]
    return {
        "machines": [m["id"] for page in defender.machines(page_size=7) for m in page],
        "vulnerabilities": [
            f"{row['deviceId']}/{row['cveId']}"
            for page in defender.vulnerabilities_by_machine(page_size=25)
            for row in page
        ],
        "managedDevices": [d["id"] for page in graph.managed_devices() for d in page],
        "alerts": [a["id"] for page in graph.alerts_updated_since(WEEK_AGO).pages() for a in page],
        "policies": [p["id"] for p in policies],
        "statuses": [
            s["id"]
            for p in policies
            for page in graph.policy_device_statuses(p["id"])
            for s in page
        ],
    }


def expected(tenant: SimulatedTenant) -> dict[str, list[str]]:
    policies = tenant.compliance_policies()
    return {
        "machines": [m["id"] for m in tenant.machines()],
        "vulnerabilities": [f"{r['deviceId']}/{r['cveId']}" for r in tenant.vulnerability_rows()],
        "managedDevices": [d["id"] for d in tenant.managed_devices()],
        "alerts": [a["id"] for a in tenant.alerts()],
        "policies": [p["id"] for p in policies],
        "statuses": [s["id"] for p in policies for s in tenant.device_statuses(p["id"])],
    }


SIZES = {"devices": 30, "alerts": 25, "cves": 10, "graph_page_size": 8}


@pytest.mark.parametrize("retry_after", ["seconds", "http-date"])
def test_429_storm_with_retry_after_is_survived_with_complete_data(
    microsoft_simulator: MicrosoftSimulatorHandle,
    connect: Connect,
    clock: FakeClock,
    retry_after: str,
) -> None:
    faults = Faults(
        throttle_every=3, throttle_streak=2, retry_after=retry_after, retry_after_seconds=4
    )  # type: ignore[arg-type]
    tenant = microsoft_simulator.add_tenant(faults=faults, **SIZES)

    with connect(tenant) as clients:
        data = read_everything(clients)

    assert data == expected(tenant)
    assert len(clock.sleeps) > 10
    assert set(clock.sleeps) == {4.0}


def test_429_storm_without_retry_after_backs_off_and_completes(
    microsoft_simulator: MicrosoftSimulatorHandle, connect: Connect, clock: FakeClock
) -> None:
    faults = Faults(throttle_every=4, throttle_streak=3, retry_after="absent")
    tenant = microsoft_simulator.add_tenant(faults=faults, **SIZES)

    with connect(tenant) as clients:
        data = read_everything(clients)

    assert data == expected(tenant)
    assert clock.sleeps
    assert max(clock.sleeps) <= PATIENT.backoff_max


def test_503_storm_is_survived_with_complete_data(
    microsoft_simulator: MicrosoftSimulatorHandle, connect: Connect, clock: FakeClock
) -> None:
    tenant = microsoft_simulator.add_tenant(
        faults=Faults(unavailable_every=5, unavailable_streak=4), **SIZES
    )

    with connect(tenant) as clients:
        data = read_everything(clients)

    assert data == expected(tenant)
    statuses = [r.status for r in microsoft_simulator.simulator.requests(tenant.spec.tenant_id)]
    assert statuses.count(503) > 20


def test_401_mid_paging_gets_a_fresh_token_and_resumes_the_same_page(
    microsoft_simulator: MicrosoftSimulatorHandle, connect: Connect
) -> None:
    tenant = microsoft_simulator.add_tenant(faults=Faults(token_max_uses=3), **SIZES)

    with connect(tenant) as clients:
        data = read_everything(clients)

    assert data == expected(tenant)
    log = [
        r
        for r in microsoft_simulator.simulator.requests(tenant.spec.tenant_id)
        if r.api != "identity"
    ]
    refused = [i for i, r in enumerate(log) if r.status == 401]
    assert len(refused) > 5
    for i in refused:
        retried = log[i + 1]
        assert (retried.path, retried.query, retried.status) == (log[i].path, log[i].query, 200)


def test_an_api_rejecting_fresh_tokens_is_token_rejected_naming_it_and_the_other_api_reads(
    microsoft_simulator: MicrosoftSimulatorHandle, connect: Connect
) -> None:
    tenant = microsoft_simulator.add_tenant(
        faults=Faults(tokens_rejected_by=frozenset({"defender"})), **SIZES
    )

    with connect(tenant) as clients:
        with pytest.raises(TokenRejectedError, match="answered 401 to a fresh token") as caught:
            list(clients.defender.machines())
        alerts = [
            a["id"] for page in clients.graph.alerts_updated_since(WEEK_AGO).pages() for a in page
        ]

    assert caught.value.api == "defender"
    assert alerts == expected(tenant)["alerts"]
    defender_calls = [
        r
        for r in microsoft_simulator.simulator.requests(tenant.spec.tenant_id)
        if r.api == "defender"
    ]
    assert [r.status for r in defender_calls] == [401, 401]  # the token, then a fresh one


def test_tenant_that_never_recovers_stops_at_its_retry_budget(
    microsoft_simulator: MicrosoftSimulatorHandle, connect: Connect, clock: FakeClock
) -> None:
    policy = HttpPolicy(max_attempts=20, retry_budget_seconds=100)
    tenant = microsoft_simulator.add_tenant(faults=Faults(throttle_every=1, retry_after_seconds=30))

    with connect(tenant, policy) as clients, pytest.raises(RetryBudgetExceededError):
        list(clients.defender.machines())

    assert sum(clock.sleeps) == 90.0


def test_tenants_sharing_ids_each_see_only_their_own_data(
    microsoft_simulator: MicrosoftSimulatorHandle, connect: Connect
) -> None:
    shared = "shared-namespace-for-isolation"
    first = microsoft_simulator.add_tenant(id_namespace=shared, seed=1, **SIZES)
    second = microsoft_simulator.add_tenant(id_namespace=shared, seed=2, **SIZES)

    seen = {}
    for tenant in (first, second):
        with connect(tenant) as clients:
            machines = [m for page in clients.defender.machines() for m in page]
            alerts = [
                a for page in clients.graph.alerts_updated_since(WEEK_AGO).pages() for a in page
            ]
        seen[tenant.spec.tenant_id] = (machines, alerts)

    (machines_1, alerts_1), (machines_2, alerts_2) = seen.values()
    assert {m["id"] for m in machines_1} == {m["id"] for m in machines_2}
    assert {a["id"] for a in alerts_1} == {a["id"] for a in alerts_2}
    assert not {m["computerDnsName"] for m in machines_1} & {
        m["computerDnsName"] for m in machines_2
    }
    assert {a["tenantId"] for a in alerts_1} == {first.spec.tenant_id}
    assert {a["tenantId"] for a in alerts_2} == {second.spec.tenant_id}
