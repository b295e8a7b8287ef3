"""What every worker flow does the same way: start-up, I/O retry policy, run summaries."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, Protocol, runtime_checkable

import psycopg
import redis
import sqlalchemy.exc
import structlog
from prefect import Flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.schemas.objects import FlowRun, State, TaskRun
from prefect.context import FlowRunContext
from prefect.tasks import Task, exponential_backoff

from avian_workers.logs import configure_logging, get_logger
from avian_workers.observability.emf import record_run
from avian_workers.observability.progress import ProgressReporter, prefect_progress_artifact
from avian_workers.preflight import ServiceUnavailableError, check_services
from avian_workers.settings import (
    ConfigError,
    Settings,
    WorkerType,
    load_settings,
    register_configured_secrets,
)
from blocks.resolve import settings_with_blocks

# Retries belong on tasks that do I/O: exponential backoff (2, 4, 8 s ...) with jitter so that
# tasks failing together do not retry together.
IO_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
}

STORE_ERRORS: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    psycopg.OperationalError,  # from psycopg used directly: server-side cursors, COPY
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)
"""PostgreSQL or Redis did not answer: worth another try, unlike a refused query or a bug."""


@dataclass(frozen=True)
class RetryOn:
    """A task's `retry_condition_fn`: retry only when the task failed with one of `errors`."""

    errors: tuple[type[BaseException], ...]

    def __call__(self, task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
        return isinstance(state.data, self.errors)

    def __repr__(self) -> str:  # Prefect logs the condition it checks
        return f"RetryOn({', '.join(error.__name__ for error in self.errors)})"


@dataclass(frozen=True)
class WorkerRun:
    """Settings and logger of one flow run."""

    worker: WorkerType
    settings: Settings
    log: structlog.typing.FilteringBoundLogger

    def progress(self, label: str, total: int | None = None) -> ProgressReporter:
        """A reporter of this run's long step: artifact `<worker>-progress`, bar or log lines."""
        return ProgressReporter(
            label,
            total,
            artifact=prefect_progress_artifact(f"{self.worker.value}-progress"),
            artifact_seconds=self.settings.progress_artifact_seconds,
            log_seconds=self.settings.progress_log_seconds,
            finish_seconds=self.settings.progress_finish_seconds,
        )


@cache
def freeze_startup_objects() -> None:
    """Leave what is alive when the process's first run starts out of full garbage collections.

    Modules and Prefect's and SQLAlchemy's state live as long as the process, yet the cyclic
    collector's full collections walk them all again whenever enough new containers survive,
    which bulk work (records of a page, samples of each device-day) makes frequent: it cost the
    edr-polling and metrics workers about a fifth of their Python time. Once per process, after
    a collection, so the garbage of that moment is still freed. What the first run has set up
    by then (its context, its settings) is frozen with the rest: a cycle among those objects is
    never freed, a bounded cost, since a deployment runs one flow run per process.
    """
    gc.collect()
    gc.freeze()


def start_run(worker: WorkerType, *, preflight: bool = True) -> WorkerRun:
    """Load and check settings, set up logging, and check PostgreSQL and Redis answer."""
    freeze_startup_objects()
    context = FlowRunContext.get()
    run_context: dict[str, Any] = {
        "workerType": worker.value,
        **({"flowRunId": str(context.flow_run.id)} if context and context.flow_run else {}),
    }
    try:
        # Blocks (when a Prefect API is configured) win over the variables they replace.
        settings = settings_with_blocks(load_settings(), worker)
    except ConfigError as exc:
        # No settings, so no level yet: the contract's JSON line still says why, then the run fails.
        configure_logging("info", context=run_context)
        get_logger().error(f"Invalid configuration: {exc}", error=str(exc))
        raise
    register_configured_secrets(settings)
    configure_logging(settings.log_level, context={**run_context, "nodeEnv": settings.node_env})
    log = get_logger()
    try:
        settings.require_for(worker)
        if preflight:
            check_services(settings)
    except (ConfigError, ServiceUnavailableError) as exc:
        log.error(f"Worker cannot start: {exc}", error=str(exc))
        raise
    return WorkerRun(worker=worker, settings=settings, log=log)


def publish_summary(
    *,
    key: str,
    title: str,
    rows: Sequence[Mapping[str, Any]],
    totals: Mapping[str, Any],
) -> None:
    """A table artifact of `rows` and a markdown digest of `totals`, attached to the flow run."""
    publish_table(key=key, rows=rows, description=f"{title}: one row per unit")
    lines = [f"# {title}", "", "| | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in totals.items()]
    _publish(
        f"{key}-summary",
        lambda: create_markdown_artifact(
            key=f"{key}-summary", markdown="\n".join(lines), description=title
        ),
    )


def publish_table(*, key: str, rows: Sequence[Mapping[str, Any]], description: str) -> None:
    """A table artifact attached to the flow run (nothing outside one)."""
    _publish(
        key,
        lambda: create_table_artifact(
            key=key, table=[dict(row) for row in rows], description=description
        ),
    )


def _publish(key: str, create: Callable[[], object]) -> None:
    """Create an artifact of the flow run; one the API refuses is logged, never raised.

    A run's artifacts are written after its work is committed: a refused one must not turn a
    run that did its work into a failed run (its log lines carry the same numbers).
    """
    if FlowRunContext.get() is None:
        return
    try:
        create()
    except Exception as exc:
        get_logger().warning("Run artifact not published", artifact=key, error=str(exc))


@runtime_checkable
class CountsItems(Protocol):
    """A flow result that can say what it processed, for the run's CloudWatch metrics."""

    def processed_items(self) -> Mapping[str, int]: ...

    def error_count(self) -> int: ...


def emit_run_metrics(flow: Flow[..., Any], flow_run: FlowRun, state: State[Any]) -> None:
    """Flow state hook: one EMF line per finished run (duration, success, items, errors)."""
    items: Mapping[str, int] = {}
    errors = 0 if state.is_completed() else 1
    if state.is_completed():
        result = state.result(raise_on_failure=False)
        if isinstance(result, CountsItems):
            items, errors = result.processed_items(), result.error_count()
    started = flow_run.start_time or flow_run.expected_start_time
    duration = (datetime.now(UTC) - started).total_seconds() if started else 0.0
    try:
        record_run(
            flow.name,
            time.monotonic() - max(duration, 0.0),
            state.is_completed(),
            items,
            errors,
            environment=os.environ.get("NODE_ENV") or os.environ.get("AVIAN_ENV"),
        )
    except ValueError as exc:  # a metric is never worth failing a finished run
        get_logger().warning("Run metrics not emitted", error=str(exc))


RUN_METRICS_HOOKS: dict[str, Any] = {
    "on_completion": [emit_run_metrics],
    "on_failure": [emit_run_metrics],
    "on_crashed": [emit_run_metrics],
}
