"""Prefect flows, one per worker; `python -m flows` runs the one named by WORKER_TYPE."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from avian_workers.settings import WorkerType

if TYPE_CHECKING:
    from prefect import Flow

# Prefect is imported only when a flow is loaded: `python -m flows` checks its configuration and
# stores before paying for Prefect's import (several seconds on a small container).

ENTRYPOINTS: dict[WorkerType, str] = {
    WorkerType.EDR_POLLING: "flows.edr_polling:edr_polling",
    WorkerType.METRICS_AGGREGATION: "flows.metrics_aggregation:metrics_aggregation",
    WorkerType.EMAIL_ALERTS: "flows.email_alerts:email_alerts",
}


def load_flow(worker: WorkerType) -> Flow[..., Any]:
    """Import the flow object of one worker (imports stay lazy so one worker loads one module)."""
    from prefect import Flow

    module_name, attribute = ENTRYPOINTS[worker].split(":")
    flow = getattr(importlib.import_module(module_name), attribute)
    assert isinstance(flow, Flow)
    return flow
