"""Run one worker's flow in-process: the legacy WORKER_TYPE mode and `avian-workers run`."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, cast

from prefect.client.schemas.objects import State

from avian_workers.logs import configure_logging, get_logger
from avian_workers.preflight import ServiceUnavailableError, check_services
from avian_workers.settings import (
    WORKER_TYPES,
    ConfigError,
    Settings,
    WorkerType,
    load_settings,
)
from blocks.resolve import settings_with_blocks
from flows._common import register_configured_secrets

EXIT_OK = 0
EXIT_FAILED = 1


def parse_worker_type(value: str | None) -> WorkerType:
    """The worker named by `value`, or ConfigError listing the valid names."""
    valid = ", ".join(WORKER_TYPES)
    if not value:
        raise ConfigError(f"WORKER_TYPE: not set (valid values: {valid})")
    try:
        return WorkerType(value.strip())
    except ValueError:
        raise ConfigError(
            f"WORKER_TYPE: unknown worker {value!r} (valid values: {valid})"
        ) from None


def run_worker(
    worker_name: str | None,
    parameters: Mapping[str, Any] | None = None,
    *,
    settings: Settings | None = None,
) -> int:
    """Validate config, check services, run the flow; return the process exit code."""
    started = time.monotonic()
    configure_logging("info")
    log = get_logger()
    try:
        worker = parse_worker_type(worker_name)
        settings = settings or settings_with_blocks(load_settings())
    except ConfigError as exc:
        log.error(f"Invalid configuration: {exc}", error=str(exc))
        return EXIT_FAILED
    register_configured_secrets(settings)
    configure_logging(
        settings.log_level, context={"workerType": worker.value, "nodeEnv": settings.node_env}
    )
    log = get_logger()
    log.info(f"Starting worker: {worker.value}")
    try:
        settings.require_for(worker)
        check_services(settings)
    except (ConfigError, ServiceUnavailableError) as exc:
        log.error(f"Worker cannot start: {exc}", error=str(exc))
        return EXIT_FAILED

    from flows import load_flow

    flow = load_flow(worker)
    try:
        state = cast("State[Any]", flow(**dict(parameters or {}), return_state=True))
    except Exception as exc:  # parameter validation and anything raised before a state exists
        log.error(
            "Worker failed", error=str(exc), durationMs=round((time.monotonic() - started) * 1000)
        )
        return EXIT_FAILED
    duration_ms = round((time.monotonic() - started) * 1000)
    if state.is_completed():
        log.info("Worker completed", durationMs=duration_ms, state=state.name)
        return EXIT_OK
    log.error("Worker failed", durationMs=duration_ms, state=state.name, error=state.message)
    return EXIT_FAILED
