"""The simulator's Entra ID: OIDC discovery, client-credentials tokens, AADSTS errors."""

from __future__ import annotations

import uuid

import httpx
import pytest

from avian_workers.simulator import Faults
from tests.avian_workers.simulator.conftest import (
    DEFENDER_SCOPE,
    GRAPH_SCOPE,
    access_token,
    bearer,
    token_request,
)
from tests.plugins.microsoft_simulator import MicrosoftSimulatorHandle


def test_discovery_names_the_tenants_token_endpoint(
    microsoft_simulator: MicrosoftSimulatorHandle, http: httpx.Client
) -> None:
    tenant_id = microsoft_simulator.add_tenant().spec.tenant_id

    document = http.get(f"/{tenant_id}/v2.0/.well-known/openid-configuration").json()

    base = microsoft_simulator.authority_host
    assert document["token_endpoint"] == f"{base}/{tenant_id}/oauth2/v2.0/token"
    assert document["authorization_endpoint"] == f"{base}/{tenant_id}/oauth2/v2.0/authorize"
    assert document["issuer"] == f"{base}/{tenant_id}/v2.0"


def test_discovery_of_an_unknown_tenant_is_aadsts_90002(http: httpx.Client) -> None:
    response = http.get(f"/{uuid.uuid4()}/v2.0/.well-known/openid-configuration")

    assert response.status_code == 400
    assert response.json()["error_codes"] == [90002]
    assert response.json()["error_description"].startswith("AADSTS90002: Tenant '")


def test_token_for_client_credentials(
    microsoft_simulator: MicrosoftSimulatorHandle, http: httpx.Client
) -> None:
    tenant = microsoft_simulator.add_tenant(faults=Faults(token_lifetime=600))

    response = token_request(
        http,
        tenant.spec.tenant_id,
        grant_type="client_credentials",
        client_id=tenant.spec.client_id,
        client_secret=tenant.spec.client_secret,
        scope=GRAPH_SCOPE,
    )

    body = response.json()
    assert response.status_code == 200
    assert (body["token_type"], body["expires_in"]) == ("Bearer", 600)
    assert body["access_token"].startswith("eyJ")
    assert response.headers["Cache-Control"] == "no-store, no-cache"


@pytest.mark.parametrize(
    ("change", "status", "error", "code"),
    [
        ({"client_secret": "not-the-secret"}, 401, "invalid_client", 7000215),
        ({"client_id": "00000000-0000-0000-0000-000000000001"}, 400, "unauthorized_client", 700016),
        ({"tenant": "00000000-0000-0000-0000-000000000002"}, 400, "invalid_request", 90002),
        ({"scope": "https://graph.microsoft.com/User.Read"}, 400, "invalid_scope", 1002012),
        ({"scope": "https://unknown.example/.default"}, 400, "invalid_resource", 500011),
        ({"grant_type": "password"}, 400, "unsupported_grant_type", 70003),
    ],
)
def test_token_errors_are_aadsts_shaped(
    microsoft_simulator: MicrosoftSimulatorHandle,
    http: httpx.Client,
    *,
    change: dict[str, str],
    status: int,
    error: str,
    code: int,
) -> None:
    tenant = microsoft_simulator.add_tenant()
    form = {
        "grant_type": "client_credentials",
        "client_id": tenant.spec.client_id,
        "client_secret": tenant.spec.client_secret,
        "scope": GRAPH_SCOPE,
    } | change
    tenant_id = form.pop("tenant", tenant.spec.tenant_id)

    response = token_request(http, tenant_id, **form)

    body = response.json()
    assert response.status_code == status
    assert (body["error"], body["error_codes"]) == (error, [code])
    assert body["error_description"].startswith(f"AADSTS{code}: ")
    assert tenant.spec.client_secret not in response.text


def test_graph_refuses_a_token_issued_for_defender(
    microsoft_simulator: MicrosoftSimulatorHandle, http: httpx.Client
) -> None:
    tenant = microsoft_simulator.add_tenant()
    token = access_token(http, tenant, DEFENDER_SCOPE)

    response = http.get("/graph/v1.0/security/secureScores", headers=bearer(token))

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "InvalidAuthenticationToken"


@pytest.mark.parametrize("authorization", ["", "Bearer", "Bearer eyJ.forged.token", "Basic abc"])
def test_apis_refuse_missing_or_forged_tokens(http: httpx.Client, authorization: str) -> None:
    response = http.get("/defender/api/machines", headers={"Authorization": authorization})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "Unauthorized"


def test_token_is_refused_after_its_allowed_uses(
    microsoft_simulator: MicrosoftSimulatorHandle, http: httpx.Client
) -> None:
    tenant = microsoft_simulator.add_tenant(faults=Faults(token_max_uses=2))
    token = access_token(http, tenant)

    statuses = [
        http.get("/graph/v1.0/security/secureScores", headers=bearer(token)).status_code
        for _ in range(3)
    ]

    assert statuses == [200, 200, 401]
    fresh = access_token(http, tenant)
    assert http.get("/graph/v1.0/security/secureScores", headers=bearer(fresh)).status_code == 200
