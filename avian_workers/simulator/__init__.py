"""Simulators of the third-party services the workers talk to."""

# From the private modules, not from `microsoft`, so `python -m avian_workers.simulator.microsoft`
# does not find its own module already imported.
from avian_workers.simulator._microsoft_app import (
    IMAP_ROLE,
    INTROSPECTION_PATH,
    OUTLOOK_AUDIENCES,
    MicrosoftSimulator,
)
from avian_workers.simulator._microsoft_data import TenantSpec
from avian_workers.simulator._microsoft_serve import SimulatorServer, generated_tenants
from avian_workers.simulator._microsoft_state import Faults, RecordedRequest, SimulatedTenant

__all__ = [
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
]
