"""The Microsoft simulator over TLS on a free loopback port, trusted through a test CA.

`microsoft_simulator` (session) yields a handle with the base URLs, a CA bundle (the system
CAs plus the test CA) and the simulator itself, whose tenants and faults tests configure.
Tests add their own tenants (`handle.add_tenant(...)`), so sharing one server is safe.
The handle also carries the credentials an IMAP server uses on the introspection endpoint
(Outlook tokens for XOAUTH2, see tests/plugins/dovecot.py).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from pydantic import SecretStr

from avian_workers.microsoft import ClientCredentials, MicrosoftEndpoints
from avian_workers.simulator import (
    Faults,
    MicrosoftSimulator,
    SimulatedTenant,
    SimulatorServer,
    TenantSpec,
)

SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
OUTLOOK_SCOPE = "https://outlook.office365.com/.default"


@dataclass(frozen=True)
class MicrosoftSimulatorHandle:
    """A running simulator and what a client needs to reach and trust it."""

    simulator: MicrosoftSimulator
    authority_host: str
    graph_base_url: str
    defender_base_url: str
    ca_bundle: Path
    ca_cert: Path
    """The test CA alone (for a server that takes one CA file, like Dovecot)."""
    introspection_url: str
    introspection_client_id: str
    introspection_client_secret: str

    def endpoints(self) -> MicrosoftEndpoints:
        """Production scopes, simulator URLs: what Settings map to in a test run."""
        return MicrosoftEndpoints(
            authority_host=self.authority_host,
            graph_base_url=self.graph_base_url,
            defender_base_url=self.defender_base_url,
        )

    def add_tenant(self, *, faults: Faults | None = None, **spec: Any) -> SimulatedTenant:
        """A new tenant with fresh ids and secret unless given; other fields as TenantSpec."""
        spec.setdefault("tenant_id", str(uuid.uuid4()))
        spec.setdefault("client_id", str(uuid.uuid4()))
        spec.setdefault("client_secret", f"{secrets.token_hex(3)}~{secrets.token_urlsafe(30)}")
        return self.simulator.add_tenant(TenantSpec(**spec), faults)

    def credentials(
        self,
        tenant: SimulatedTenant,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        azure_tenant_id: str | None = None,
    ) -> ClientCredentials:
        """The tenant's app registration, with any field replaced (a wrong secret ...)."""
        return ClientCredentials(
            client_id=client_id or tenant.spec.client_id,
            client_secret=SecretStr(client_secret or tenant.spec.client_secret),
            azure_tenant_id=azure_tenant_id or tenant.spec.tenant_id,
        )


@pytest.fixture(scope="session")
def microsoft_simulator(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[MicrosoftSimulatorHandle]:
    """The simulator for the whole session, served over TLS by a certificate of a test CA."""
    directory = tmp_path_factory.mktemp("microsoft-simulator")
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = directory / "server.pem", directory / "server.key"
    certificate.private_key_pem.write_to_path(keyfile)
    for index, pem in enumerate(certificate.cert_chain_pems):
        pem.write_to_path(certfile, append=index > 0)
    bundle = directory / "ca-bundle.pem"
    bundle.write_bytes(SYSTEM_CA_BUNDLE.read_bytes() + b"\n" + authority.cert_pem.bytes())
    ca_cert = directory / "test-ca.pem"
    authority.cert_pem.write_to_path(ca_cert)
    introspection_client = (f"imap-{uuid.uuid4()}", secrets.token_urlsafe(24))
    simulator = MicrosoftSimulator(
        admin_api=True, introspection_clients=dict([introspection_client])
    )
    with SimulatorServer(simulator, certfile=certfile, keyfile=keyfile) as server:
        yield MicrosoftSimulatorHandle(
            simulator=simulator,
            authority_host=server.authority_host,
            graph_base_url=server.graph_base_url,
            defender_base_url=server.defender_base_url,
            ca_bundle=bundle,
            ca_cert=ca_cert,
            introspection_url=server.introspection_url,
            introspection_client_id=introspection_client[0],
            introspection_client_secret=introspection_client[1],
        )


@pytest.fixture
def microsoft_simulator_env(
    microsoft_simulator: MicrosoftSimulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> MicrosoftSimulatorHandle:
    """The simulator, with REQUESTS_CA_BUNDLE and SSL_CERT_FILE trusting it for this test."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(microsoft_simulator.ca_bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(microsoft_simulator.ca_bundle))
    return microsoft_simulator
