"""GraphClient against the simulator: Intune, compliance, alerts_v2 sweeps and Secure Score."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from avian_workers.microsoft import PermissionMissingError
from avian_workers.simulator import Faults
from tests.avian_workers.microsoft.conftest import Connect
from tests.plugins.microsoft_simulator import MicrosoftSimulatorHandle

WEEK_AGO = datetime.now(UTC) - timedelta(days=7)


def test_managed_devices_arrive_complete_over_more_than_three_pages(
    microsoft_simulator: MicrosoftSimulatorHandle, connect: Connect
) -> None:
    tenant = microsoft_simulator.add_tenant(devices=45, graph_page_size=10)

    with connect(tenant) as clients:
        pages = list(clients.graph.managed_devices())

    assert len(pages) > 3
    assert [d["id"] for page in pages for d in page] == [d["id"] for d in tenant.managed_devices()]


def test_compliance_policies_and_their_device_statuses_arrive_complete(
    microsoft_simulator: MicrosoftSimulatorHandle, connect: Connect
) -> None:
    tenant = microsoft_simulator.add_tenant(devices=60, policies=10, graph_page_size=3)

    with connect(tenant) as clients:
        policy_pages = list(clients.graph.compliance_policies())
        policies = [policy for page in policy_pages for policy in page]
        status_pages = {
            policy["id"]: list(clients.graph.policy_device_statuses(policy["id"]))
            for policy in policies
        }

    assert len(policy_pages) > 3
    assert [p["id"] for p in policies] == [p["id"] for p in tenant.compliance_policies()]
    windows = policies[0]["id"]
    assert len(status_pages[windows]) > 3
    for policy_id, pages in status_pages.items():
        received = [status["id"] for page in pages for status in page]
        assert received == [status["id"] for status in tenant.device_statuses(policy_id)]


def test_alert_sweep_returns_every_alert_since_oldest_first(
    microsoft_simulator: MicrosoftSimulatorHandle, connect: Connect
) -> None:
    tenant = microsoft_simulator.add_tenant(alerts=40, graph_page_size=7)

    with connect(tenant) as clients:
        sweep = clients.graph.alerts_updated_since(WEEK_AGO)
        pages = list(sweep.pages())

    alerts = [alert for page in pages for alert in page]
    assert len(pages) > 3
    assert sweep.complete
    assert [a["id"] for a in alerts] == [a["id"] for a in tenant.alerts()]
    updated = [a["lastUpdateDateTime"] for a in alerts]
    assert updated == sorted(updated)


def test_alert_sweep_includes_alerts_updated_exactly_at_since(
    microsoft_simulator: MicrosoftSimulatorHandle, connect: Connect
) -> None:
    tenant = microsoft_simulator.add_tenant(alerts=10)
    watermark = datetime.now(UTC).replace(microsecond=123456) - timedelta(hours=1)
    at_watermark = tenant.add_alert(watermark)
    just_before = tenant.add_alert(watermark - timedelta(microseconds=1))

    with connect(tenant) as clients:
        ids = [
            a["id"] for page in clients.graph.alerts_updated_since(watermark).pages() for a in page
        ]

    assert at_watermark["id"] in ids
    assert just_before["id"] not in ids


def test_late_alert_is_found_by_the_next_sweep_thanks_to_the_overlap(
    microsoft_simulator: MicrosoftSimulatorHandle, connect: Connect
) -> None:
    tenant = microsoft_simulator.add_tenant(alerts=12)
    overlap = timedelta(minutes=10)
    with connect(tenant) as clients:
        first = [a for page in clients.graph.alerts_updated_since(WEEK_AGO).pages() for a in page]
        watermark = datetime.fromisoformat(first[-1]["lastUpdateDateTime"][:26] + "+00:00")
        late = tenant.add_alert(watermark - timedelta(minutes=3))  # indexed after the sweep

        second = [
            a["id"]
            for page in clients.graph.alerts_updated_since(watermark - overlap).pages()
            for a in page
        ]

    assert late["id"] not in {a["id"] for a in first}
    assert late["id"] in second


def test_alert_sweep_with_a_partial_page_is_not_complete(
    microsoft_simulator: MicrosoftSimulatorHandle, connect: Connect
) -> None:
    tenant = microsoft_simulator.add_tenant(
        alerts=30, graph_page_size=10, faults=Faults(partial_alert_pages=frozenset({1}))
    )

    with connect(tenant) as clients:
        sweep = clients.graph.alerts_updated_since(WEEK_AGO)
        received = sum(len(page) for page in sweep.pages())

    assert not sweep.complete
    assert received < len(tenant.alerts())


def test_alert_sweep_is_not_complete_before_its_last_page(
    microsoft_simulator: MicrosoftSimulatorHandle, connect: Connect
) -> None:
    tenant = microsoft_simulator.add_tenant(alerts=30, graph_page_size=10)

    with connect(tenant) as clients:
        sweep = clients.graph.alerts_updated_since(WEEK_AGO)
        next(sweep.pages())

        assert not sweep.complete


def test_alerts_carry_enum_members_newer_than_v1(
    microsoft_simulator: MicrosoftSimulatorHandle, connect: Connect
) -> None:
    tenant = microsoft_simulator.add_tenant(alerts=30)

    with connect(tenant) as clients:
        sources = {
            alert["serviceSource"]
            for page in clients.graph.alerts_updated_since(WEEK_AGO).pages()
            for alert in page
        }

    assert "microsoftDefenderForCloud" in sources
    assert "unknownFutureValue" not in sources


def test_alert_sweep_needs_an_aware_since(
    microsoft_simulator: MicrosoftSimulatorHandle, connect: Connect
) -> None:
    tenant = microsoft_simulator.add_tenant()

    with connect(tenant) as clients, pytest.raises(ValueError, match="timezone-aware"):
        clients.graph.alerts_updated_since(datetime(2024, 1, 1))  # noqa: DTZ001


def test_latest_secure_score_is_the_newest(
    microsoft_simulator: MicrosoftSimulatorHandle, connect: Connect
) -> None:
    tenant = microsoft_simulator.add_tenant(secure_scores=5)

    with connect(tenant) as clients:
        score = clients.graph.latest_secure_score()

    assert score == tenant.secure_scores()[0]


def test_tenant_without_a_secure_score_yet_gives_none(
    microsoft_simulator: MicrosoftSimulatorHandle, connect: Connect
) -> None:
    tenant = microsoft_simulator.add_tenant(secure_scores=0)

    with connect(tenant) as clients:
        assert clients.graph.latest_secure_score() is None


def test_secure_score_without_permission_is_permission_missing(
    microsoft_simulator: MicrosoftSimulatorHandle, connect: Connect
) -> None:
    tenant = microsoft_simulator.add_tenant(faults=Faults(forbidden=frozenset({"secureScores"})))

    with connect(tenant) as clients, pytest.raises(PermissionMissingError) as caught:
        clients.graph.latest_secure_score()

    assert caught.value.path == "/graph/v1.0/security/secureScores"
