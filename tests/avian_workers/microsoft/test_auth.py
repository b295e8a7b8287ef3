"""TokenProvider: MSAL client-credentials tokens per tenant, and AADSTS errors that explain."""

from __future__ import annotations

import ssl
import uuid

import httpx
import pytest
from pydantic import SecretStr

from avian_workers.microsoft import (
    ClientCredentials,
    MicrosoftEndpoints,
    TenantAuthError,
    TokenProvider,
)
from tests.plugins.microsoft_simulator import SYSTEM_CA_BUNDLE, MicrosoftSimulatorHandle
from tests.plugins.services import free_port


def provider_for(handle: MicrosoftSimulatorHandle, credentials: ClientCredentials) -> TokenProvider:
    return TokenProvider(credentials, handle.endpoints(), ca_bundle=str(handle.ca_bundle))


def test_token_is_accepted_by_graph(microsoft_simulator: MicrosoftSimulatorHandle) -> None:
    tenant = microsoft_simulator.add_tenant()
    endpoints = microsoft_simulator.endpoints()
    token = provider_for(microsoft_simulator, microsoft_simulator.credentials(tenant)).token(
        endpoints.graph_scope
    )

    response = httpx.get(
        f"{endpoints.graph_base_url}/v1.0/security/secureScores",
        headers={"Authorization": f"Bearer {token}"},
        verify=ssl.create_default_context(cafile=microsoft_simulator.ca_bundle),
    )

    assert response.status_code == 200


def test_token_is_reused_until_a_refresh_is_forced(
    microsoft_simulator: MicrosoftSimulatorHandle,
) -> None:
    tenant = microsoft_simulator.add_tenant()
    provider = provider_for(microsoft_simulator, microsoft_simulator.credentials(tenant))
    scope = microsoft_simulator.endpoints().graph_scope

    first = provider.token(scope)
    again = provider.token(scope)
    refreshed = provider.token(scope, force_refresh=True)

    assert again == first
    assert refreshed != first
    assert tenant.tokens_issued == 2


def test_graph_and_defender_scopes_get_separate_tokens(
    microsoft_simulator: MicrosoftSimulatorHandle,
) -> None:
    tenant = microsoft_simulator.add_tenant()
    provider = provider_for(microsoft_simulator, microsoft_simulator.credentials(tenant))
    endpoints = microsoft_simulator.endpoints()

    graph = provider.token(endpoints.graph_scope)
    defender = provider.token(endpoints.defender_scope)

    assert graph != defender
    assert provider.token(endpoints.graph_scope) == graph
    assert tenant.tokens_issued == 2


def test_given_ca_bundle_wins_over_requests_ca_bundle(
    microsoft_simulator: MicrosoftSimulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(SYSTEM_CA_BUNDLE))  # lacks the test CA
    tenant = microsoft_simulator.add_tenant()
    provider = provider_for(microsoft_simulator, microsoft_simulator.credentials(tenant))

    assert provider.token(microsoft_simulator.endpoints().graph_scope)


def test_server_outside_the_trusted_cas_is_refused(
    microsoft_simulator: MicrosoftSimulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(SYSTEM_CA_BUNDLE))
    tenant = microsoft_simulator.add_tenant()
    provider = TokenProvider(
        microsoft_simulator.credentials(tenant), microsoft_simulator.endpoints(), http_retries=0
    )

    with pytest.raises(TenantAuthError, match="unreachable") as caught:
        provider.token(microsoft_simulator.endpoints().graph_scope)

    assert caught.value.aadsts_code is None


@pytest.mark.parametrize(
    ("wrong", "code", "explanation"),
    [
        ("client_secret", 7000215, "the client secret is wrong"),
        ("client_id", 700016, "is not registered in tenant"),
        ("azure_tenant_id", 90002, "does not exist"),
    ],
)
def test_aadsts_error_is_typed_and_says_what_is_wrong(
    microsoft_simulator: MicrosoftSimulatorHandle, wrong: str, code: int, explanation: str
) -> None:
    tenant = microsoft_simulator.add_tenant()
    replacement = {
        "client_secret": "a-wrong-secret-value-of-some-length",
        "client_id": str(uuid.uuid4()),
        "azure_tenant_id": str(uuid.uuid4()),
    }[wrong]
    credentials = microsoft_simulator.credentials(tenant, **{wrong: replacement})
    provider = provider_for(microsoft_simulator, credentials)

    with pytest.raises(TenantAuthError) as caught:
        provider.token(microsoft_simulator.endpoints().graph_scope)

    assert caught.value.aadsts_code == code
    assert str(caught.value).startswith(f"AADSTS{code}: ")
    assert explanation in str(caught.value)


def test_auth_errors_and_reprs_never_show_a_secret(
    microsoft_simulator: MicrosoftSimulatorHandle,
) -> None:
    tenant = microsoft_simulator.add_tenant()
    wrong_secret = "a-wrong-secret-value-of-some-length"
    credentials = microsoft_simulator.credentials(tenant, client_secret=wrong_secret)
    provider = provider_for(microsoft_simulator, credentials)

    with pytest.raises(TenantAuthError) as caught:
        provider.token(microsoft_simulator.endpoints().graph_scope)

    shown = " ".join([str(caught.value), repr(caught.value), repr(provider), repr(credentials)])
    assert wrong_secret not in shown
    assert tenant.spec.client_secret not in shown


def test_secret_pasted_into_the_client_id_is_masked_in_the_error(
    microsoft_simulator: MicrosoftSimulatorHandle,
) -> None:
    tenant = microsoft_simulator.add_tenant()
    secret = tenant.spec.client_secret
    swapped = ClientCredentials(
        client_id=secret, client_secret=SecretStr(secret), azure_tenant_id=tenant.spec.tenant_id
    )

    with pytest.raises(TenantAuthError) as caught:
        provider_for(microsoft_simulator, swapped).token(
            microsoft_simulator.endpoints().graph_scope
        )

    assert caught.value.aadsts_code == 700016
    assert secret not in str(caught.value)
    assert "[REDACTED]" in str(caught.value)


def test_malformed_tenant_id_fails_without_a_request(
    microsoft_simulator: MicrosoftSimulatorHandle,
) -> None:
    tenant = microsoft_simulator.add_tenant()
    credentials = microsoft_simulator.credentials(tenant, azure_tenant_id="../common")
    before = len(microsoft_simulator.simulator.requests())

    with pytest.raises(TenantAuthError, match="malformed"):
        provider_for(microsoft_simulator, credentials).token(
            microsoft_simulator.endpoints().graph_scope
        )

    assert len(microsoft_simulator.simulator.requests()) == before


def test_unreachable_identity_endpoint_is_a_tenant_auth_error_without_code() -> None:
    endpoints = MicrosoftEndpoints(authority_host=f"https://127.0.0.1:{free_port()}")
    credentials = ClientCredentials("app", SecretStr("some-secret-value"), str(uuid.uuid4()))

    with pytest.raises(TenantAuthError, match="unreachable") as caught:
        TokenProvider(credentials, endpoints, http_retries=0).token(endpoints.graph_scope)

    assert caught.value.aadsts_code is None
    assert "some-secret-value" not in str(caught.value)
