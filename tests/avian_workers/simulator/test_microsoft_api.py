"""The simulator's Graph and Defender endpoints: paging, $filter/$orderby and faults."""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from avian_workers.simulator import Faults, SimulatedTenant
from tests.avian_workers.simulator.conftest import DEFENDER_SCOPE, access_token, bearer
from tests.plugins.microsoft_simulator import MicrosoftSimulatorHandle

ALERTS = "/graph/v1.0/security/alerts_v2"
MACHINES = "/defender/api/machines"


Params = dict[str, str | int] | None


def graph(
    http: httpx.Client, tenant: SimulatedTenant, url: str, params: Params = None
) -> httpx.Response:
    return http.get(url, headers=bearer(access_token(http, tenant)), params=params)


def defender(
    http: httpx.Client, tenant: SimulatedTenant, url: str, params: Params = None
) -> httpx.Response:
    return http.get(url, headers=bearer(access_token(http, tenant, DEFENDER_SCOPE)), params=params)


def test_machines_honour_top_and_skip_and_send_no_next_link(
    microsoft_simulator: MicrosoftSimulatorHandle, http: httpx.Client
) -> None:
    tenant = microsoft_simulator.add_tenant(devices=30)

    body = defender(http, tenant, MACHINES, params={"$top": 5, "$skip": 10}).json()

    assert [m["id"] for m in body["value"]] == [m["id"] for m in tenant.machines()[10:15]]
    assert "@odata.nextLink" not in body


def test_machines_top_above_ten_thousand_is_a_bad_request(
    microsoft_simulator: MicrosoftSimulatorHandle, http: httpx.Client
) -> None:
    tenant = microsoft_simulator.add_tenant()

    response = defender(http, tenant, MACHINES, params={"$top": 10_001})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadRequest"


def test_graph_pages_follow_opaque_next_links_to_the_end(
    microsoft_simulator: MicrosoftSimulatorHandle, http: httpx.Client
) -> None:
    tenant = microsoft_simulator.add_tenant(devices=25, graph_page_size=10)
    token = access_token(http, tenant)
    url: str | None = "/graph/v1.0/deviceManagement/managedDevices"
    received: list[str] = []
    while url:
        body = http.get(url, headers=bearer(token)).json()
        received += [d["id"] for d in body["value"]]
        url = body.get("@odata.nextLink")
        if url:
            assert url.startswith(microsoft_simulator.graph_base_url)
            assert "$skiptoken=" in url

    assert received == [d["id"] for d in tenant.managed_devices()]


def test_vulnerability_export_pages_with_page_size_and_next_link(
    microsoft_simulator: MicrosoftSimulatorHandle, http: httpx.Client
) -> None:
    tenant = microsoft_simulator.add_tenant(devices=10, cves=5, cves_per_device=2)

    body = defender(
        http,
        tenant,
        "/defender/api/machines/SoftwareVulnerabilitiesByMachine",
        params={"pageSize": 4},
    ).json()

    query = parse_qs(urlsplit(body["@odata.nextLink"]).query)
    assert len(body["value"]) == 4
    assert query["pageSize"] == ["4"]
    assert query["$skiptoken"]


def test_alert_filter_ge_includes_the_boundary_and_orders_ascending(
    microsoft_simulator: MicrosoftSimulatorHandle, http: httpx.Client
) -> None:
    tenant = microsoft_simulator.add_tenant(alerts=24)
    alerts = tenant.alerts()
    boundary = alerts[10]["lastUpdateDateTime"]

    body = graph(
        http,
        tenant,
        ALERTS,
        params={
            "$filter": f"lastUpdateDateTime ge {boundary}",
            "$orderby": "lastUpdateDateTime asc",
        },
    ).json()

    expected = [a["id"] for a in alerts if a["lastUpdateDateTime"] >= boundary]
    assert [a["id"] for a in body["value"]] == expected
    assert alerts[10]["id"] in expected


def test_alert_filter_gt_excludes_the_boundary(
    microsoft_simulator: MicrosoftSimulatorHandle, http: httpx.Client
) -> None:
    tenant = microsoft_simulator.add_tenant(alerts=24)
    boundary = tenant.alerts()[10]["lastUpdateDateTime"]

    body = graph(
        http, tenant, ALERTS, params={"$filter": f"lastUpdateDateTime gt {boundary}"}
    ).json()

    assert all(a["lastUpdateDateTime"] > boundary for a in body["value"])


def test_alerts_come_newest_first_without_orderby(
    microsoft_simulator: MicrosoftSimulatorHandle, http: httpx.Client
) -> None:
    tenant = microsoft_simulator.add_tenant(alerts=12)

    body = graph(http, tenant, ALERTS).json()

    assert [a["id"] for a in body["value"]] == [a["id"] for a in reversed(tenant.alerts())]


@pytest.mark.parametrize(
    "clause", ["severity eq 'high'", "lastUpdateDateTime ge yesterday", "lastUpdateDateTime"]
)
def test_unsupported_alert_filter_is_a_graph_bad_request(
    microsoft_simulator: MicrosoftSimulatorHandle, http: httpx.Client, clause: str
) -> None:
    tenant = microsoft_simulator.add_tenant()

    response = graph(http, tenant, ALERTS, params={"$filter": clause})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadRequest"
    assert "innerError" in response.json()["error"]


def test_new_enum_members_are_hidden_unless_the_client_prefers_them(
    microsoft_simulator: MicrosoftSimulatorHandle, http: httpx.Client
) -> None:
    tenant = microsoft_simulator.add_tenant(alerts=30)
    token = access_token(http, tenant)

    plain = http.get(ALERTS, headers=bearer(token)).json()["value"]
    preferring = http.get(
        ALERTS, headers=bearer(token) | {"Prefer": "include-unknown-enum-members"}
    )

    assert "unknownFutureValue" in {a["serviceSource"] for a in plain}
    assert "microsoftDefenderForCloud" in {a["serviceSource"] for a in preferring.json()["value"]}
    assert preferring.headers["Preference-Applied"] == "include-unknown-enum-members"


@pytest.mark.parametrize("form", ["seconds", "http-date", "absent"])
def test_throttling_answers_429_with_the_configured_retry_after(
    microsoft_simulator: MicrosoftSimulatorHandle, http: httpx.Client, form: str
) -> None:
    faults = Faults(throttle_every=2, retry_after=form, retry_after_seconds=9)  # type: ignore[arg-type]
    tenant = microsoft_simulator.add_tenant(faults=faults)
    token = access_token(http, tenant, DEFENDER_SCOPE)

    statuses, last = [], None
    for _ in range(4):
        last = http.get(MACHINES, headers=bearer(token))
        statuses.append(last.status_code)

    assert statuses == [429, 200, 429, 200]
    throttled = http.get(MACHINES, headers=bearer(token))
    retry_after = throttled.headers.get("Retry-After")
    if form == "seconds":
        assert retry_after == "9"
    elif form == "http-date":
        assert retry_after is not None
        waited = parsedate_to_datetime(retry_after) - parsedate_to_datetime(
            throttled.headers["Date"]
        )
        assert waited.total_seconds() == 9
    else:
        assert retry_after is None


def test_outage_streaks_answer_503(
    microsoft_simulator: MicrosoftSimulatorHandle, http: httpx.Client
) -> None:
    tenant = microsoft_simulator.add_tenant(
        faults=Faults(unavailable_every=4, unavailable_streak=3)
    )
    token = access_token(http, tenant)

    statuses = [
        http.get("/graph/v1.0/security/secureScores", headers=bearer(token)).status_code
        for _ in range(8)
    ]

    assert statuses == [503, 503, 503, 200, 503, 503, 503, 200]


def test_forbidden_dataset_answers_403_naming_the_role(
    microsoft_simulator: MicrosoftSimulatorHandle, http: httpx.Client
) -> None:
    tenant = microsoft_simulator.add_tenant(faults=Faults(forbidden=frozenset({"alerts"})))

    response = graph(http, tenant, ALERTS)

    assert response.status_code == 403
    assert "SecurityAlert.Read.All" in response.json()["error"]["message"]


def test_an_api_rejecting_tokens_answers_401_to_fresh_ones_while_the_other_api_accepts(
    microsoft_simulator: MicrosoftSimulatorHandle, http: httpx.Client
) -> None:
    tenant = microsoft_simulator.add_tenant(
        faults=Faults(tokens_rejected_by=frozenset({"defender"}))
    )

    refusals = [defender(http, tenant, MACHINES) for _ in range(2)]  # each with a fresh token

    assert [r.status_code for r in refusals] == [401, 401]
    assert refusals[0].json()["error"]["code"] == "Unauthorized"
    assert graph(http, tenant, ALERTS).status_code == 200


def test_only_graph_and_defender_can_reject_tokens() -> None:
    with pytest.raises(ValueError, match="unknown APIs"):
        Faults(tokens_rejected_by=frozenset({"identity"}))


def test_partial_alert_page_answers_206_and_misses_an_alert(
    microsoft_simulator: MicrosoftSimulatorHandle, http: httpx.Client
) -> None:
    tenant = microsoft_simulator.add_tenant(
        alerts=20, graph_page_size=5, faults=Faults(partial_alert_pages=frozenset({0}))
    )

    response = graph(http, tenant, ALERTS)

    assert response.status_code == 206
    assert len(response.json()["value"]) == 4


def test_server_side_defender_limit_answers_429_beyond_the_rate(
    microsoft_simulator: MicrosoftSimulatorHandle, http: httpx.Client
) -> None:
    tenant = microsoft_simulator.add_tenant(faults=Faults(defender_calls_per_minute=3))
    token = access_token(http, tenant, DEFENDER_SCOPE)

    statuses = [http.get(MACHINES, headers=bearer(token)).status_code for _ in range(4)]

    assert statuses == [200, 200, 200, 429]


def test_requests_are_recorded_per_tenant(
    microsoft_simulator: MicrosoftSimulatorHandle, http: httpx.Client
) -> None:
    tenant = microsoft_simulator.add_tenant()
    defender(http, tenant, MACHINES, params={"$top": 3})

    recorded = microsoft_simulator.simulator.requests(tenant.spec.tenant_id)

    assert [(r.api, r.path, r.status) for r in recorded] == [
        ("identity", f"/{tenant.spec.tenant_id}/oauth2/v2.0/token", 200),
        ("defender", MACHINES, 200),
    ]


def test_admin_api_changes_a_tenants_faults(
    microsoft_simulator: MicrosoftSimulatorHandle, http: httpx.Client
) -> None:
    tenant = microsoft_simulator.add_tenant()

    changed = http.put(
        f"/_simulator/tenants/{tenant.spec.tenant_id}/faults",
        json={"latency": 0.01, "forbidden": ["secureScores"], "tokens_rejected_by": ["graph"]},
    )
    refused = http.put(f"/_simulator/tenants/{tenant.spec.tenant_id}/faults", json={"typo": 1})

    assert changed.status_code == 200
    assert tenant.faults == Faults(
        latency=0.01,
        forbidden=frozenset({"secureScores"}),
        tokens_rejected_by=frozenset({"graph"}),
    )
    assert changed.json()["tokens_rejected_by"] == ["graph"]
    assert refused.status_code == 400
    assert "typo" in refused.json()["error"]


def test_unknown_paths_are_404(http: httpx.Client) -> None:
    response = http.get("/graph/v1.0/users")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "ResourceNotFound"
