"""edr-polling: every tenant's Microsoft Defender, Intune and Graph security data into PostgreSQL.

Scheduled every 15 minutes without parameters, a run polls the active tenants; `tenant_ids`
polls exactly those tenants (active or not), for a manual run. Each tenant is one task run named
after the tenant, up to EDR_TENANT_CONCURRENCY at once, under a Redis lock of its own: a tenant
another run is polling is skipped and reported, never waited for.

Inside a tenant task every dataset is a task of its own (avian_workers.edr.sync does the work):
Defender devices, the compliance policies' failing statuses, Intune devices with compliance,
alerts since the watermark, vulnerabilities (on their own cadence), the posture score and Secure
Score (daily). Vulnerabilities and Secure Score are fetched once per period: a tenant whose last
complete fetch (its sync state in PostgreSQL) falls in the current period is reported 'cached',
and Prefect also caches the task per tenant and period in EDR_RESULT_STORAGE_BLOCK (local
storage when unset); that cached value is a report of counts, never a client or a token.
Nothing else is cached or persisted: a tenant's credentials and tokens live only in its own
task, for its own run.

A 403 is a warning on that dataset; an unreadable secret, a token Entra ID refuses to issue, a
spent retry budget or an unreachable database fails the tenant; any other error fails that
dataset and the tenant, and the remaining datasets still run. An API answering 401 even to a
fresh token (Graph or Defender) fails the dataset that met it and the tenant; that API's later
datasets are not requested ('not run'), the other API's datasets still run. The run is Completed
when at least one tenant succeeded (or there was none to poll) and Failed when every tenant
failed, and it always leaves a table artifact with one row per tenant.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from uuid import UUID

import redis
import sqlalchemy.exc
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.context import TaskRunContext
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import Task
from sqlalchemy import Engine

from avian_workers.db.engine import make_engine
from avian_workers.edr.merge import FailedRulesByDevice
from avian_workers.edr.normalize import RecordError
from avian_workers.edr.store import (
    SECURE_SCORE,
    VULNERABILITIES,
    TenantRow,
    TenantStore,
    tenants_to_poll,
)
from avian_workers.edr.sync import (
    DatasetReport,
    FailedRules,
    TenantReport,
    flag_shared_azure_tenants,
    microsoft_config,
    posture_unscored_reason,
    sync_alerts,
    sync_compliance_rules,
    sync_defender_devices,
    sync_intune_devices,
    sync_posture,
    sync_secure_score,
    sync_vulnerabilities,
    tenant_outcome,
)
from avian_workers.locks import hold
from avian_workers.logs import bind, get_logger
from avian_workers.microsoft import (
    Api,
    HttpPolicy,
    MicrosoftEndpoints,
    MicrosoftError,
    RetryBudgetExceededError,
    TenantAuthError,
    TenantClients,
    TokenRejectedError,
    open_tenant,
)
from avian_workers.redis_store import RedisKeys, connect
from avian_workers.secrets_manager import TenantSecretError
from avian_workers.settings import Settings, WorkerType
from blocks.resolve import TenantCredentialsProvider, tenant_credentials_provider
from flows._common import (
    IO_RETRIES,
    RUN_METRICS_HOOKS,
    STORE_ERRORS,
    RetryOn,
    publish_summary,
    start_run,
)

LOCK_SCOPE: Final = "edr-tenant"

# Errors after which the tenant's other datasets cannot succeed either. A TokenRejectedError is
# not one: it concerns the API that answered 401 alone (see _Datasets).
_TENANT_FATAL: tuple[type[BaseException], ...] = (
    TenantAuthError,
    RetryBudgetExceededError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
)


# Retry a dataset only when PostgreSQL or Redis failed to answer; Microsoft errors were already
# retried request by request, within the tenant's budget.
retry_on_store_error = RetryOn(STORE_ERRORS)


@dataclass(frozen=True)
class PollingContext:
    """What every tenant task of a run shares. Holds no credential: those are read per tenant."""

    settings: Settings
    engine: Engine
    redis: redis.Redis
    keys: RedisKeys
    credentials: TenantCredentialsProvider
    endpoints: MicrosoftEndpoints
    policy: HttpPolicy


class TenantPollError(Exception):
    """A tenant failed; carries its report so the run summary keeps what it did achieve."""

    def __init__(self, report: TenantReport) -> None:
        super().__init__(f"tenant {report.tenant_name} failed: {report.error}")
        self.report = report

    def __reduce__(self) -> tuple[type[TenantPollError], tuple[TenantReport]]:
        return (type(self), (self.report,))


def describe_error(exc: BaseException) -> str:
    """A short, single-line account of an error (a database error without its statement)."""
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.orig is not None:
        text = f"{type(exc.orig).__name__}: {exc.orig}"
    elif isinstance(exc, TenantPollError | TenantSecretError | TenantAuthError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    first_line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first_line[:500]


# --- Dataset tasks (nested in the tenant's task; none caches or persists a client) -----------


@dataclass(frozen=True)
class TenantPoll:
    """One tenant's poll as its dataset tasks share it: clients, store, start."""

    tenant: TenantRow
    clients: TenantClients
    store: TenantStore
    now: datetime


_DATASET = {
    "cache_policy": NO_CACHE,
    "persist_result": False,
    "retry_condition_fn": retry_on_store_error,
    **IO_RETRIES,
}


@task(name="defender-devices", task_run_name="{poll.tenant.name}: defender devices", **_DATASET)
def defender_devices(poll: TenantPoll, page_size: int) -> DatasetReport:
    return sync_defender_devices(poll.clients.defender, poll.store, page_size=page_size)


@task(name="compliance-rules", task_run_name="{poll.tenant.name}: compliance rules", **_DATASET)
def compliance_rules(poll: TenantPoll) -> FailedRules:
    return sync_compliance_rules(poll.clients.graph)


@task(name="intune-devices", task_run_name="{poll.tenant.name}: intune devices", **_DATASET)
def intune_devices(
    poll: TenantPoll, failed_rules: FailedRulesByDevice | None
) -> tuple[DatasetReport, DatasetReport]:
    return sync_intune_devices(poll.clients.graph, poll.store, failed_rules, checked_at=poll.now)


@task(name="alerts", task_run_name="{poll.tenant.name}: alerts", **_DATASET)
def alerts(poll: TenantPoll, backfill: timedelta, overlap: timedelta) -> DatasetReport:
    return sync_alerts(
        poll.clients.graph,
        poll.store,
        now=poll.now,
        backfill=backfill,
        overlap=overlap,
    )


@task(name="posture", task_run_name="{poll.tenant.name}: posture", **_DATASET)
def posture(poll: TenantPoll) -> DatasetReport:
    return sync_posture(poll.store, now=poll.now)


def cadence_period(at: datetime, refresh_hours: float) -> tuple[int, int]:
    """(length in seconds, number) of the period of `refresh_hours` that `at` falls in.

    Periods are counted from the Unix epoch, so every run and every container agrees on them.
    """
    seconds = max(round(timedelta(hours=refresh_hours).total_seconds()), 1)
    return seconds, int(at.timestamp()) // seconds


def fetched_this_period(last_success: datetime | None, now: datetime, refresh_hours: float) -> bool:
    """True when the last complete fetch fell in the period `now` falls in."""
    return last_success is not None and cadence_period(
        last_success, refresh_hours
    ) == cadence_period(now, refresh_hours)


def cadence_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """One key per task, tenant and period of `refresh_hours`: fetched once per period.

    Only the tenant id, the period and the period `now` falls in make the key; the clients and
    the store among the parameters are never hashed or stored.
    """
    poll: TenantPoll = parameters["poll"]
    seconds, period = cadence_period(poll.now, parameters["refresh_hours"])
    return f"edr-{context.task.name}-{poll.tenant.id}-{seconds}s-{period}"


_CADENCED = {
    "cache_key_fn": cadence_cache_key,
    "persist_result": True,  # the cached value is a DatasetReport of counts, nothing else
    "retry_condition_fn": retry_on_store_error,
    **IO_RETRIES,
}


class DatasetError(Exception):
    """A cadenced dataset failed with an error that is not ours to store (see `storable_errors`)."""


@contextmanager
def storable_errors() -> Iterator[None]:
    """Let only errors made of plain values leave a cadenced task.

    Prefect writes a persisting task's failure, exception and all, to result storage. Our own
    errors hold text and numbers; a third-party one may hold much more (an HTTP error keeps
    its request, Authorization header included), so it leaves as its description only.
    """
    try:
        yield
    except (MicrosoftError, RecordError, sqlalchemy.exc.SQLAlchemyError, redis.RedisError):
        raise
    except Exception as exc:
        raise DatasetError(describe_error(exc)) from None


@task(name="vulnerabilities", task_run_name="{poll.tenant.name}: vulnerabilities", **_CADENCED)
def vulnerabilities(poll: TenantPoll, page_size: int, refresh_hours: float) -> DatasetReport:
    with storable_errors():
        return sync_vulnerabilities(
            poll.clients.defender, poll.store, now=poll.now, page_size=page_size
        )


@task(name="secure-score", task_run_name="{poll.tenant.name}: secure score", **_CADENCED)
def secure_score(poll: TenantPoll, refresh_hours: float) -> DatasetReport:
    with storable_errors():
        return sync_secure_score(poll.clients.graph, poll.store, now=poll.now)


def on_cadence(
    cadenced: Task[..., DatasetReport],
    *,
    dataset: str,
    state_key: str,
    refresh_hours: float,
    result_storage: str | None,
    poll: TenantPoll,
    **parameters: Any,
) -> DatasetReport:
    """Run a cadenced task unless it was fetched earlier in this period: then 'cached'.

    The tenant's sync state in PostgreSQL decides first: each ECS run is a fresh container, so
    without a shared EDR_RESULT_STORAGE_BLOCK Prefect's cache would never hit there. The task's
    own cache still serves where the state cannot, e.g. a fetch that ended in a 403 report.
    """
    cached = DatasetReport(dataset, "cached", detail=f"fetched within {refresh_hours:g} h")
    synced = poll.store.sync_state(state_key)
    if synced is not None and fetched_this_period(synced.last_success_at, poll.now, refresh_hours):
        return cached
    options: dict[str, Any] = {"cache_expiration": timedelta(hours=refresh_hours)}
    if result_storage:
        options["result_storage"] = result_storage
    state: State[DatasetReport] = cadenced.with_options(**options)(
        **parameters, poll=poll, refresh_hours=refresh_hours, return_state=True
    )
    report: DatasetReport = state.result()
    # A cached 403 is reported as the 403 it was: the permission is still missing as far as this
    # run knows, and posture must not count the dataset as read.
    return cached if state.name == "Cached" and report.status != "forbidden" else report


# --- One tenant --------------------------------------------------------------------------------


@task(
    name="poll-tenant",
    task_run_name="{tenant.name}",
    cache_policy=NO_CACHE,
    persist_result=False,
)
def poll_tenant(tenant: TenantRow, context: PollingContext) -> TenantReport:
    """Every dataset of one tenant under its lock; raises TenantPollError when the tenant failed."""
    started = time.monotonic()
    bind(tenantId=str(tenant.id), tenant=tenant.name)
    log = get_logger()
    lock_key = context.keys.lock(LOCK_SCOPE, tenant.id)
    with hold(context.redis, lock_key, lease_seconds=context.settings.lock_lease_seconds) as lease:
        if lease is None:
            log.warning("Tenant skipped: another run is polling it", lock=lock_key)
            return TenantReport(
                str(tenant.id), tenant.name, "locked", error="locked by another run"
            )
        datasets, error, azure_tenant_id = _poll_datasets(tenant, context)
    if lease.lost:
        log.warning("Tenant's lock expired while it was polled; its rows are still correct")
    report = TenantReport(
        str(tenant.id),
        tenant.name,
        tenant_outcome(datasets, error),
        tuple(datasets),
        time.monotonic() - started,
        error or _first_dataset_failure(datasets),
        azure_tenant_id=azure_tenant_id,
    )
    (log.error if report.outcome == "failed" else log.info)(
        "Tenant failed" if report.outcome == "failed" else "Tenant polled",
        outcome=report.outcome,
        durationMs=round(report.duration_seconds * 1000),
        rows={d.dataset: d.rows for d in datasets},
        error=report.error,
    )
    if report.outcome == "failed":
        raise TenantPollError(report)
    return report


# The API each dataset is read from.
_DATASET_APIS: Final[dict[str, Api]] = {
    "defender devices": "defender",
    "compliance rules": "graph",
    "intune devices": "graph",
    "alerts": "graph",
    "vulnerabilities": "defender",
    "secure score": "graph",
}


class _Datasets:
    """The reports of one tenant's datasets, in order; a dataset's own failure becomes its report.

    An API that answers 401 even to a fresh token fails the dataset that met it; its later
    datasets are not requested (reported 'not run'), while those of the other API, which has
    tokens of its own, still run.
    """

    def __init__(self) -> None:
        self.reports: list[DatasetReport] = []
        self.rejected_by: dict[Api, str] = {}
        """APIs that rejected the tenant's fresh token, each with the dataset that met the 401."""

    def run[**P, R](
        self, dataset: str, step: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> R | None:
        """`step`'s result, or None when it failed or was not run; later datasets still run."""
        api = _DATASET_APIS.get(dataset)
        if api is not None and api in self.rejected_by:
            get_logger().warning(
                "Dataset not requested: its API rejects the tenant's token",
                dataset=dataset,
                api=api,
            )
            detail = (
                f"not requested: {api} answered 401 to a fresh token in {self.rejected_by[api]}"
            )
            self.reports.append(DatasetReport(dataset, "not run", detail=detail))
            return None
        try:
            return step(*args, **kwargs)
        except _TENANT_FATAL:
            raise
        except TokenRejectedError as exc:
            self.rejected_by.setdefault(exc.api, dataset)
            self._failed(dataset, exc, api=exc.api)
            return None
        except Exception as exc:
            self._failed(dataset, exc)
            return None

    def _failed(self, dataset: str, exc: Exception, **context: str) -> None:
        get_logger().error("Dataset failed", dataset=dataset, error=describe_error(exc), **context)
        self.reports.append(DatasetReport(dataset, "failed", detail=describe_error(exc)))

    def add(self, *reports: DatasetReport | None) -> None:
        self.reports += [report for report in reports if report is not None]


def _poll_datasets(
    tenant: TenantRow, context: PollingContext
) -> tuple[list[DatasetReport], str | None, str | None]:
    """The tenant's datasets in order, the error that stopped them early (one no later dataset
    survives) and the Azure AD tenant its secret names."""
    settings = context.settings
    try:
        credentials = context.credentials(tenant.id)
    except TenantSecretError as exc:
        get_logger().error("Tenant has no usable credentials", error=str(exc))
        return [], str(exc), None
    azure_tenant_id = credentials.azure_tenant_id
    store = TenantStore(context.engine, tenant.id)
    storage = settings.edr_result_storage_block
    done = _Datasets()
    try:
        with open_tenant(
            credentials, context.endpoints, context.policy, ca_bundle=settings.ca_bundle
        ) as clients:
            poll = TenantPoll(tenant, clients, store, datetime.now(UTC))
            page_size = settings.edr_defender_page_size
            done.add(done.run("defender devices", defender_devices, poll, page_size))
            rules = done.run("compliance rules", compliance_rules, poll)
            done.add(rules.report if rules else None)
            devices = done.run(
                "intune devices", intune_devices, poll, rules.by_device if rules else None
            )
            # Compliance is read with the Intune devices: without them it was not read either.
            unread = DatasetReport("compliance", "not run", detail="intune devices not read")
            done.add(*(devices or (unread,)))
            backfill = timedelta(days=settings.edr_alert_backfill_days)
            overlap = timedelta(minutes=settings.edr_alert_overlap_minutes)
            done.add(done.run("alerts", alerts, poll, backfill, overlap))
            done.add(
                done.run(
                    "vulnerabilities",
                    on_cadence,
                    vulnerabilities,
                    dataset="vulnerabilities",
                    state_key=VULNERABILITIES,
                    refresh_hours=settings.edr_vulnerability_refresh_hours,
                    result_storage=storage,
                    poll=poll,
                    page_size=page_size,
                )
            )
            if unscored := posture_unscored_reason(done.reports):
                get_logger().warning("Posture not scored", reason=unscored)
                done.add(DatasetReport("posture", "not run", detail=unscored))
            else:
                done.add(done.run("posture", posture, poll))
            done.add(
                done.run(
                    "secure score",
                    on_cadence,
                    secure_score,
                    dataset="secure score",
                    state_key=SECURE_SCORE,
                    refresh_hours=settings.edr_secure_score_refresh_hours,
                    result_storage=storage,
                    poll=poll,
                )
            )
    except _TENANT_FATAL as exc:
        get_logger().error("Tenant stopped", error=describe_error(exc))
        return done.reports, describe_error(exc), azure_tenant_id
    return done.reports, None, azure_tenant_id


def _first_dataset_failure(datasets: list[DatasetReport]) -> str | None:
    failed = [f"{d.dataset}: {d.detail}" for d in datasets if d.status == "failed"]
    return "; ".join(failed) or None


# --- The run -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PollingSummary:
    """A run: one report per tenant."""

    tenants: tuple[TenantReport, ...]

    def count(self, *outcomes: str) -> int:
        return sum(1 for t in self.tenants if t.outcome in outcomes)

    def totals(self) -> dict[str, Any]:
        return {
            "tenants": len(self.tenants),
            "succeeded": self.count("succeeded"),
            "with warnings": self.count("warning"),
            "failed": self.count("failed"),
            "skipped (locked)": self.count("locked"),
        }

    def processed_items(self) -> dict[str, int]:
        """Counts for the run's CloudWatch metrics: tenants by outcome, rows per dataset."""
        items = {
            "tenants_succeeded": self.count("succeeded", "warning"),
            "tenants_failed": self.count("failed"),
        }
        for tenant in self.tenants:
            for report in tenant.datasets:
                key = "rows_" + report.dataset.replace(" ", "_")
                items[key] = items.get(key, 0) + report.rows
        return items

    def error_count(self) -> int:
        """Failed tenants."""
        return self.count("failed")

    @property
    def every_tenant_failed(self) -> bool:
        return bool(self.tenants) and self.count("failed") == len(self.tenants)


def _report_of(tenant: TenantRow, future: PrefectFuture[TenantReport]) -> TenantReport:
    try:
        report: TenantReport = future.result()
    except TenantPollError as exc:
        return exc.report
    except Exception as exc:  # a crash outside the tenant's own error handling
        return TenantReport(str(tenant.id), tenant.name, "failed", error=describe_error(exc))
    return report


@flow(name="edr-polling", validate_parameters=True, persist_result=False, **RUN_METRICS_HOOKS)
def edr_polling(tenant_ids: list[UUID] | None = None) -> PollingSummary:
    """Poll the active tenants (or exactly `tenant_ids`) into the platform's EDR tables."""
    # start_run also freezes what is alive at the process's first run out of the collector's
    # passes, which every page's burst of records triggers: they re-scanned it each time, about
    # a fifth of the flow's CPU per tenant (bench/README.md).
    run = start_run(WorkerType.EDR_POLLING)
    settings, log = run.settings, run.log
    concurrency = settings.edr_tenant_concurrency
    engine = make_engine(settings, pool_size=concurrency + 2)
    client = connect(settings)
    reports: list[TenantReport] = []
    try:
        tenants = tenants_to_poll(engine, tenant_ids)
        for unknown in sorted(set(tenant_ids or ()) - {t.id for t in tenants}, key=str):
            reports.append(
                TenantReport(str(unknown), str(unknown), "failed", error="no such tenant")
            )
        log.info(
            "Polling EDR tenants",
            tenants=len(tenants),
            concurrency=concurrency,
            selection="active" if tenant_ids is None else "given",
        )
        endpoints, policy = microsoft_config(settings)
        context = PollingContext(
            settings=settings,
            engine=engine,
            redis=client,
            keys=RedisKeys.from_settings(settings),
            credentials=tenant_credentials_provider(settings),
            endpoints=endpoints,
            policy=policy,
        )
        progress = run.progress("tenants polled", total=len(tenants))
        with progress, ThreadPoolTaskRunner[TenantReport](max_workers=concurrency) as runner:
            futures = [
                (tenant, runner.submit(poll_tenant, {"tenant": tenant, "context": context}))
                for tenant in tenants
            ]
            progress.count_done(future for _, future in futures)
            reports += [_report_of(tenant, future) for tenant, future in futures]
    finally:
        client.close()
        engine.dispose()

    summary = PollingSummary(flag_shared_azure_tenants(reports))
    for report in summary.tenants:
        if report.shares_azure_tenant_with:
            log.error(
                "Tenants share an Azure AD tenant: each is shown the others' devices and alerts",
                tenant=report.tenant_name,
                azureTenantId=report.azure_tenant_id,
                sharedWith=list(report.shares_azure_tenant_with),
            )
    publish_summary(
        key="edr-polling",
        title="EDR polling",
        rows=[report.table_row() for report in summary.tenants],
        totals=summary.totals(),
    )
    log.info("EDR polling finished", **summary.totals())
    if summary.every_tenant_failed:
        raise RuntimeError(
            "every tenant failed: "
            + "; ".join(f"{t.tenant_name}: {t.error}" for t in summary.tenants)
        )
    return summary
