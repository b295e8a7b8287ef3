"""A Microsoft identity, Graph and Defender simulator for tests, the demo and benchmarks.

One ASGI app serves, per simulated tenant:
  /{tenant}/v2.0/.well-known/openid-configuration and /{tenant}/oauth2/v2.0/token (Entra ID)
  /graph/v1.0/...    managedDevices, deviceCompliancePolicies(/{id}/deviceStatuses),
                     security/alerts_v2, security/secureScores
  /defender/api/...  machines, machines/SoftwareVulnerabilitiesByMachine
  /outlook/introspect RFC 7662 check of Outlook tokens, for an IMAP server standing in for
                     Exchange Online (XOAUTH2 with app-only tokens)
Tokens are JWT-shaped and carry the tenant, so Graph and Defender know whose data to serve,
as they do in production. Faults (latency, 429, 503, token expiry, 206, 403) are set per
tenant and can change while the server runs.

Stand-alone: python -m avian_workers.simulator.microsoft --port 8443 --cert c.pem --key k.pem
"""

from avian_workers.simulator._microsoft_app import (
    IMAP_ROLE,
    INTROSPECTION_PATH,
    OUTLOOK_AUDIENCES,
    MicrosoftSimulator,
)
from avian_workers.simulator._microsoft_data import TenantSpec
from avian_workers.simulator._microsoft_serve import (
    SimulatorServer,
    generated_tenants,
    load_config,
    main,
)
from avian_workers.simulator._microsoft_state import (
    DATASETS,
    Faults,
    RecordedRequest,
    SimulatedTenant,
)

__all__ = [
    "DATASETS",
    "IMAP_ROLE",
    "INTROSPECTION_PATH",
    "OUTLOOK_AUDIENCES",
    "Faults",
    "MicrosoftSimulator",
    "RecordedRequest",
    "SimulatedTenant",
    "SimulatorServer",
    "TenantSpec",
    "generated_tenants",
    "load_config",
    "main",
]

if __name__ == "__main__":
    main()
