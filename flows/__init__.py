"""Prefect flows, one per worker; `python -m flows` runs the one named by WORKER_TYPE."""

from __future__ import annotations

import importlib
from typing import Any

from prefect import Flow

from avian_workers.settings import WorkerType

ENTRYPOINTS: dict[WorkerType, str] = {
    WorkerType.EDR_POLLING: "flows.edr_polling:edr_polling",
    WorkerType.METRICS_AGGREGATION: "flows.metrics_aggregation:metrics_aggregation",
    WorkerType.EMAIL_ALERTS: "flows.email_alerts:email_alerts",
}


def load_flow(worker: WorkerType) -> Flow[..., Any]:
    """Import the flow object of one worker (imports stay lazy so one worker loads one module)."""
    module_name, attribute = ENTRYPOINTS[worker].split(":")
    flow = getattr(importlib.import_module(module_name), attribute)
    assert isinstance(flow, Flow)
    return flow
