"""Everything needed to read one tenant, opened and closed together."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from avian_workers.microsoft._config import AppRegistration, HttpPolicy, MicrosoftEndpoints
from avian_workers.microsoft._pacing import Clock, Sleep
from avian_workers.microsoft.auth import TokenProvider
from avian_workers.microsoft.defender import DefenderClient
from avian_workers.microsoft.graph import GraphClient
from avian_workers.microsoft.transport import TenantHttp


@dataclass(frozen=True, slots=True)
class TenantClients:
    """A tenant's Graph and Defender clients sharing one HTTP client, limiter and budget."""

    graph: GraphClient
    defender: DefenderClient
    http: TenantHttp


@contextmanager
def open_tenant(
    credentials: AppRegistration,
    endpoints: MicrosoftEndpoints,
    policy: HttpPolicy,
    *,
    ca_bundle: str | None = None,
    transport: httpx.BaseTransport | None = None,
    clock: Clock = time.monotonic,
    sleep: Sleep = time.sleep,
) -> Iterator[TenantClients]:
    """Clients for one tenant run; tokens and connections are dropped when it ends."""
    tokens = TokenProvider(
        credentials,
        endpoints,
        ca_bundle=ca_bundle,
        timeout=(policy.connect_timeout, policy.read_timeout),
    )
    try:
        with TenantHttp(
            tokens,
            endpoints,
            policy,
            ca_bundle=ca_bundle,
            transport=transport,
            clock=clock,
            sleep=sleep,
        ) as http:
            yield TenantClients(graph=GraphClient(http), defender=DefenderClient(http), http=http)
    finally:
        tokens.close()
