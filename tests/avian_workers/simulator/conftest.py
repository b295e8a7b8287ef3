"""Raw HTTP access to the simulator, to check its answers without our clients in between."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import httpx
import pytest

from avian_workers.simulator import SimulatedTenant
from tests.plugins.microsoft_simulator import MicrosoftSimulatorHandle

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
DEFENDER_SCOPE = "https://api.securitycenter.microsoft.com/.default"


@pytest.fixture
def http(microsoft_simulator: MicrosoftSimulatorHandle) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=microsoft_simulator.ca_bundle)
    with httpx.Client(verify=context, base_url=microsoft_simulator.authority_host) as client:
        yield client


def token_request(http: httpx.Client, tenant_id: str, **form: str) -> httpx.Response:
    return http.post(f"/{tenant_id}/oauth2/v2.0/token", data=form)


def access_token(http: httpx.Client, tenant: SimulatedTenant, scope: str = GRAPH_SCOPE) -> str:
    response = token_request(
        http,
        tenant.spec.tenant_id,
        grant_type="client_credentials",
        client_id=tenant.spec.client_id,
        client_secret=tenant.spec.client_secret,
        scope=scope,
    )
    token: str = response.json()["access_token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
