"""Fixtures of the Microsoft client tests: a virtual clock and clients on the simulator."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest

from avian_workers.microsoft import HttpPolicy, TenantClients, open_tenant
from avian_workers.simulator import SimulatedTenant
from tests.plugins.microsoft_simulator import MicrosoftSimulatorHandle

PATIENT = HttpPolicy(
    connect_timeout=5,
    read_timeout=10,
    max_attempts=5,
    backoff_base=0.5,
    backoff_max=8,
    retry_budget_seconds=600,
    defender_calls_per_minute=100,
)


class FakeClock:
    """A monotonic clock that only moves when code sleeps on it; remembers every sleep."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


Connect = Callable[..., AbstractContextManager[TenantClients]]


@pytest.fixture
def connect(microsoft_simulator: MicrosoftSimulatorHandle, clock: FakeClock) -> Connect:
    """Open clients for a simulated tenant; keyword arguments replace credential fields."""

    def _connect(
        tenant: SimulatedTenant, policy: HttpPolicy = PATIENT, **credentials: Any
    ) -> AbstractContextManager[TenantClients]:
        return open_tenant(
            microsoft_simulator.credentials(tenant, **credentials),
            microsoft_simulator.endpoints(),
            policy,
            ca_bundle=str(microsoft_simulator.ca_bundle),
            clock=clock,
            sleep=clock.sleep,
        )

    return _connect
