"""Clients for Microsoft Entra ID, Graph and Defender for Endpoint, one tenant at a time."""

from avian_workers.microsoft._config import (
    Api,
    AppRegistration,
    ClientCredentials,
    HttpPolicy,
    MicrosoftEndpoints,
)
from avian_workers.microsoft._errors import (
    MicrosoftError,
    PermissionMissingError,
    RetriesExhaustedError,
    RetryBudgetExceededError,
    TenantAuthError,
    TokenRejectedError,
    UnexpectedResponseError,
)
from avian_workers.microsoft._tenant import TenantClients, open_tenant
from avian_workers.microsoft.auth import TokenProvider
from avian_workers.microsoft.defender import DefenderClient
from avian_workers.microsoft.graph import AlertSweep, GraphClient
from avian_workers.microsoft.transport import ApiResponse, JsonObject, TenantHttp, TokenSource

__all__ = [
    "AlertSweep",
    "Api",
    "ApiResponse",
    "AppRegistration",
    "ClientCredentials",
    "DefenderClient",
    "GraphClient",
    "HttpPolicy",
    "JsonObject",
    "MicrosoftEndpoints",
    "MicrosoftError",
    "PermissionMissingError",
    "RetriesExhaustedError",
    "RetryBudgetExceededError",
    "TenantAuthError",
    "TenantClients",
    "TenantHttp",
    "TokenProvider",
    "TokenRejectedError",
    "TokenSource",
    "UnexpectedResponseError",
    "open_tenant",
]
