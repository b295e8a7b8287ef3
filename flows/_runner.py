"""Run one worker's flow in-process: the legacy WORKER_TYPE mode and `avian-workers run`."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from rich.console import Console
from structlog.typing import FilteringBoundLogger

from avian_workers.logs import configure_logging, get_logger
from avian_workers.observability.progress import terminal_progress
from avian_workers.preflight import ServiceUnavailableError, check_services
from avian_workers.settings import (
    WORKER_TYPES,
    ConfigError,
    Settings,
    WorkerType,
    load_settings,
    register_configured_secrets,
)

if TYPE_CHECKING:
    from prefect.client.schemas.objects import State

# Prefect, the blocks and the flows are imported only after the stores answered: importing them
# takes several seconds of CPU, and a worker whose database is down must say so within seconds.

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
    console: Console | None = None,
) -> int:
    """Validate config, check services, run the flow; return the process exit code.

    Long steps show a progress bar on `console` (default: stderr when it is a terminal).
    """
    with terminal_progress(console):
        return _run_worker(worker_name, parameters, settings)


def _run_worker(
    worker_name: str | None, parameters: Mapping[str, Any] | None, given: Settings | None
) -> int:
    started = time.monotonic()
    # No mirror to Prefect's run logs yet: it would import Prefect before the checks below.
    configure_logging("info", mirror_to_prefect=False)
    log = get_logger()
    try:
        worker = parse_worker_type(worker_name)
        settings = given or load_settings()
    except ConfigError as exc:
        log.error(f"Invalid configuration: {exc}", error=str(exc))
        return EXIT_FAILED
    register_configured_secrets(settings)
    configure_logging(
        settings.log_level,
        context={"workerType": worker.value, "nodeEnv": settings.node_env},
        mirror_to_prefect=False,
    )
    log = get_logger()
    log.info(f"Starting worker: {worker.value}")
    # Without PREFECT_API_URL (the legacy WORKER_TYPE mode) the environment is where the stores'
    # URLs come from, so they are checked before Prefect is imported. With an API, blocks may
    # replace them: check what the blocks say instead of a possibly stale environment.
    checked = given is not None or not os.environ.get("PREFECT_API_URL")
    if checked and not _stores_ready(settings, worker, log):
        return EXIT_FAILED
    if given is None:
        from blocks.resolve import settings_with_blocks

        try:
            with_blocks = settings_with_blocks(settings, worker)
        except ConfigError as exc:
            log.error(f"Invalid configuration: {exc}", error=str(exc))
            return EXIT_FAILED
        if with_blocks is not settings or not checked:
            register_configured_secrets(with_blocks)
            if not _stores_ready(with_blocks, worker, log):
                return EXIT_FAILED
        settings = with_blocks

    from flows import load_flow

    flow = load_flow(worker)
    try:
        state = cast("State[Any]", flow(**dict(parameters or {}), return_state=True))
    except BaseException as exc:
        # Parameter validation, anything raised before a state exists, and what Prefect re-raises
        # after marking the run Crashed (SystemExit, KeyboardInterrupt).
        log.error(
            "Worker failed",
            error=str(exc) or type(exc).__name__,
            durationMs=round((time.monotonic() - started) * 1000),
        )
        return EXIT_FAILED
    duration_ms = round((time.monotonic() - started) * 1000)
    if state.is_completed():
        log.info("Worker completed", durationMs=duration_ms, state=state.name)
        return EXIT_OK
    log.error("Worker failed", durationMs=duration_ms, state=state.name, error=state.message)
    return EXIT_FAILED


def _stores_ready(settings: Settings, worker: WorkerType, log: FilteringBoundLogger) -> bool:
    """True when the worker's configuration is complete and its stores answer; else logs why."""
    try:
        settings.require_for(worker)
        check_services(settings)
    except (ConfigError, ServiceUnavailableError) as exc:
        log.error(f"Worker cannot start: {exc}", error=str(exc))
        return False
    return True
