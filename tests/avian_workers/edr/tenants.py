"""AVIAN tenants wired to simulated Microsoft tenants: a `tenants` row, its secret, its data."""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import boto3
from sqlalchemy import Engine, func, insert, select

from avian_workers.db.models import EdrAlert, EdrDevice, Tenant
from avian_workers.simulator import Faults, SimulatedTenant
from tests.plugins.microsoft_simulator import MicrosoftSimulatorHandle

# Small pages so that every dataset of a test tenant spans several pages.
GRAPH_PAGE_SIZE = 10
DEFENDER_PAGE_SIZE = 10


@dataclass(frozen=True)
class EdrTenant:
    """An AVIAN tenant and the simulated Microsoft tenant its secret points at."""

    id: uuid.UUID
    name: str
    simulated: SimulatedTenant

    @property
    def client_secret(self) -> str:
        return self.simulated.spec.client_secret


def add_tenant_row(engine: Engine, name: str | None = None, *, active: bool = True) -> uuid.UUID:
    """A row in the platform's `tenants` table."""
    name = name or f"Tenant {secrets.token_hex(3)}"
    with engine.begin() as conn:
        tenant_id: uuid.UUID = conn.execute(
            insert(Tenant)
            .values(name=name, domain=f"{secrets.token_hex(6)}.example.com", is_active=active)
            .returning(Tenant.id)
        ).scalar_one()
    return tenant_id


def put_secret(tenant_id: uuid.UUID, payload: dict[str, Any] | str) -> None:
    """The tenant's secret in (moto's) Secrets Manager, named as the contract says."""
    boto3.client("secretsmanager", region_name="ca-central-1").create_secret(
        Name=f"edr/tenant/{tenant_id}",
        SecretString=payload if isinstance(payload, str) else json.dumps(payload),
    )


def edr_tenant(
    engine: Engine,
    simulator: MicrosoftSimulatorHandle,
    *,
    name: str | None = None,
    faults: Faults | None = None,
    client_secret: str | None = None,
    active: bool = True,
    **spec: Any,
) -> EdrTenant:
    """A tenant row, a simulated tenant with several pages of everything, and the secret.

    `client_secret` replaces the secret stored for the tenant (a wrong one, to fail its token).
    """
    spec.setdefault("graph_page_size", GRAPH_PAGE_SIZE)
    spec.setdefault("devices", 50)
    spec.setdefault("alerts", 45)
    spec.setdefault("cves", 40)
    spec.setdefault("policies", 31)
    simulated = simulator.add_tenant(faults=faults, **spec)
    name = name or f"Tenant {simulated.spec.tenant_id[:8]}"
    tenant_id = add_tenant_row(engine, name, active=active)
    put_secret(
        tenant_id,
        {
            "clientId": simulated.spec.client_id,
            "clientSecret": client_secret or simulated.spec.client_secret,
            "tenantId": simulated.spec.tenant_id,
        },
    )
    return EdrTenant(tenant_id, name, simulated)


def count(engine: Engine, model: type[EdrDevice] | type[EdrAlert], tenant_id: uuid.UUID) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(model).where(model.tenant_id == tenant_id)
            ).scalar_one()
        )
