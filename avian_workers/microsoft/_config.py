"""Where the Microsoft APIs live, how patiently to call them, and whose app registration to use."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from pydantic import SecretStr

Api = Literal["graph", "defender"]
"""The APIs a tenant's data is read from; each has its own base URL, scope and tokens."""


@dataclass(frozen=True, slots=True)
class MicrosoftEndpoints:
    """Base URLs and token scopes; production values by default, a simulator's in tests."""

    authority_host: str = "https://login.microsoftonline.com"
    graph_base_url: str = "https://graph.microsoft.com"
    defender_base_url: str = "https://api.securitycenter.microsoft.com"
    graph_scope: str = "https://graph.microsoft.com/.default"
    defender_scope: str = "https://api.securitycenter.microsoft.com/.default"


@dataclass(frozen=True, slots=True)
class HttpPolicy:
    """Timeouts, retries and pacing for one tenant's run."""

    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_attempts: int = 6
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    # Retry waits plus the time lost in failed attempts, per tenant run: one broken tenant
    # gives up instead of holding the run past its schedule.
    retry_budget_seconds: float = 300.0
    # Defender's documented budget is 100 calls per minute per tenant (machines API).
    defender_calls_per_minute: int = 100

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.defender_calls_per_minute < 1:
            raise ValueError("defender_calls_per_minute must be at least 1")
        if min(self.connect_timeout, self.read_timeout, self.backoff_base, self.backoff_max) <= 0:
            raise ValueError("timeouts and backoff must be positive")
        if self.retry_budget_seconds < 0:
            raise ValueError("retry_budget_seconds must not be negative")


class AppRegistration(Protocol):
    """A tenant's Entra ID app registration, as read from its secret."""

    @property
    def client_id(self) -> str: ...

    @property
    def client_secret(self) -> SecretStr: ...

    @property
    def azure_tenant_id(self) -> str: ...


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """A concrete `AppRegistration`; the secret never shows in repr."""

    client_id: str
    client_secret: SecretStr = field(repr=False)
    azure_tenant_id: str
