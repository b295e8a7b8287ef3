"""DefenderClient against the simulator: every machine and vulnerability row, page by page."""

from __future__ import annotations

import pytest

from avian_workers.microsoft import PermissionMissingError
from avian_workers.simulator import Faults
from tests.avian_workers.microsoft.conftest import Connect
from tests.plugins.microsoft_simulator import MicrosoftSimulatorHandle


def test_machines_arrive_complete_over_more_than_three_pages(
    microsoft_simulator: MicrosoftSimulatorHandle, connect: Connect
) -> None:
    tenant = microsoft_simulator.add_tenant(devices=45)  # 41 machines: four of 45 are phones

    with connect(tenant) as clients:
        pages = list(clients.defender.machines(page_size=10))

    received = [machine["id"] for page in pages for machine in page]
    assert [len(page) for page in pages] == [10, 10, 10, 10, 1]
    assert received == [machine["id"] for machine in tenant.machines()]


def test_machines_filling_the_last_page_exactly_end_without_an_empty_page(
    microsoft_simulator: MicrosoftSimulatorHandle, connect: Connect
) -> None:
    tenant = microsoft_simulator.add_tenant(devices=44)  # 40 machines

    with connect(tenant) as clients:
        pages = list(clients.defender.machines(page_size=10))

    assert [len(page) for page in pages] == [10, 10, 10, 10]


def test_machines_of_a_tenant_without_any_are_no_pages(
    microsoft_simulator: MicrosoftSimulatorHandle, connect: Connect
) -> None:
    tenant = microsoft_simulator.add_tenant(devices=0, alerts=0)

    with connect(tenant) as clients:
        assert list(clients.defender.machines()) == []


def test_vulnerabilities_arrive_complete_over_more_than_three_pages(
    microsoft_simulator: MicrosoftSimulatorHandle, connect: Connect
) -> None:
    tenant = microsoft_simulator.add_tenant(devices=30, cves=12, cves_per_device=3)

    with connect(tenant) as clients:
        pages = list(clients.defender.vulnerabilities_by_machine(page_size=20))

    def key(row: dict[str, object]) -> tuple[object, ...]:
        return row["deviceId"], row["softwareName"], row["cveId"]

    assert len(pages) > 3
    assert [key(row) for page in pages for row in page] == [
        key(row) for row in tenant.vulnerability_rows()
    ]


def test_missing_vulnerability_permission_is_permission_missing(
    microsoft_simulator: MicrosoftSimulatorHandle, connect: Connect
) -> None:
    tenant = microsoft_simulator.add_tenant(faults=Faults(forbidden=frozenset({"vulnerabilities"})))

    with (
        connect(tenant) as clients,
        pytest.raises(PermissionMissingError, match=r"Vulnerability\.Read\.All"),
    ):
        list(clients.defender.vulnerabilities_by_machine())


@pytest.mark.parametrize("page_size", [0, 10_001])
def test_machines_page_size_is_checked(
    microsoft_simulator: MicrosoftSimulatorHandle, connect: Connect, page_size: int
) -> None:
    tenant = microsoft_simulator.add_tenant()

    with connect(tenant) as clients, pytest.raises(ValueError, match="page_size"):
        list(clients.defender.machines(page_size=page_size))
