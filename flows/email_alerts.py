"""email-alerts: every SonicWall alert email becomes exactly one alert or one review record.

A run takes the mailbox's Redis lock (a run that finds it held skips the mailbox and says so),
loads the firewall directory, drains the inbox (avian_workers.mail.processing) and leaves a
table artifact with the messages per outcome. Both tasks do I/O and retry on connection errors
with backoff. Retrying the drain is safe: every committed message is in the ledger, so a retry
only files what the failed attempt committed and carries on with what is still unread.

IMAP settings are IMAP_* (contract names), or the `avian-mailbox` block where one exists.
XOAUTH2 (Microsoft 365) logs in with an app-only token that MSAL gets for IMAP_OAUTH_SCOPE.

For operators: mail kept for review is in `avian_workers.mail_review` (open items have no
`resolved_at`; the reason says why, the raw message is kept) and in the review folder. To have
a message processed again, e.g. after adding its firewall or a host alias, delete its row in
`avian_workers.mail_ledger` (the review item goes with it), then move the message back to the
inbox unread.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from functools import partial
from typing import Any, Literal

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import Engine

from avian_workers.db.engine import make_engine
from avian_workers.locks import hold
from avian_workers.mail import store
from avian_workers.mail.mailbox import (
    Mailbox,
    MailboxConfig,
    MailboxConnectionError,
    TokenProvider,
)
from avian_workers.mail.match import DeviceDirectory
from avian_workers.mail.processing import MailboxReport, mailbox_name, process_mailbox
from avian_workers.microsoft import ClientCredentials, MicrosoftEndpoints
from avian_workers.microsoft.auth import TokenProvider as MsalTokenProvider
from avian_workers.observability.progress import NO_PROGRESS, StepProgress
from avian_workers.redis_store import RedisKeys, connect
from avian_workers.settings import ConfigError, Settings, WorkerType
from flows._common import (
    IO_RETRIES,
    RUN_METRICS_HOOKS,
    STORE_ERRORS,
    RetryOn,
    publish_summary,
    start_run,
)

LOCK_SCOPE = "mailbox"

# Retry only when the mailbox or a store failed to answer, never for a refusal or a bug.
retry_on_io_error = RetryOn((*STORE_ERRORS, MailboxConnectionError, ConnectionError, TimeoutError))


def mailbox_config(settings: Settings) -> MailboxConfig:
    """The IMAP_* settings as the mailbox's configuration."""
    return MailboxConfig(
        host=settings.imap_host or "",
        port=settings.imap_port,
        username=settings.imap_user or "",
        password=settings.imap_password,
        tls_mode=settings.imap_tls,
        ca_bundle=settings.ca_bundle,
        connect_timeout=settings.imap_connect_timeout_seconds,
        read_timeout=settings.imap_read_timeout_seconds,
        inbox_folder=settings.imap_inbox_folder,
        processed_folder=settings.imap_processed_folder,
        review_folder=settings.imap_review_folder,
        fetch_batch_size=settings.imap_fetch_batch_size,
        auth=settings.imap_auth,
    )


def imap_token_client(settings: Settings) -> MsalTokenProvider | None:
    """For IMAP_AUTH=xoauth2: an MSAL client-credentials app of the configured Entra tenant."""
    if settings.imap_auth != "xoauth2":
        return None
    if not (
        settings.imap_oauth_tenant_id
        and settings.imap_oauth_client_id
        and settings.imap_oauth_client_secret
    ):
        raise ConfigError(
            "IMAP_AUTH=xoauth2 needs IMAP_OAUTH_TENANT_ID, IMAP_OAUTH_CLIENT_ID "
            "and IMAP_OAUTH_CLIENT_SECRET"
        )
    return MsalTokenProvider(
        ClientCredentials(
            client_id=settings.imap_oauth_client_id,
            client_secret=settings.imap_oauth_client_secret,
            azure_tenant_id=settings.imap_oauth_tenant_id,
        ),
        MicrosoftEndpoints(authority_host=settings.ms_authority_host),
        ca_bundle=settings.ca_bundle,
        timeout=(settings.http_connect_timeout_seconds, settings.http_read_timeout_seconds),
    )


@dataclass(frozen=True)
class MailboxJob:
    """Everything the drain task needs: where the mail is, where outcomes go."""

    config: MailboxConfig
    token_provider: TokenProvider | None
    engine: Engine
    directory: DeviceDirectory
    storm_window: timedelta
    max_messages: int | None


@dataclass(frozen=True)
class EmailAlertsSummary:
    """The run's result: the mailbox's report, or why the mailbox was skipped."""

    mailbox: str
    status: Literal["processed", "locked"]
    report: MailboxReport | None = None
    retention: MailRetention | None = None

    def processed_items(self) -> dict[str, int]:
        """Counts for the run's CloudWatch metrics."""
        if self.report is None:
            return {}
        return {
            "messages": self.report.recorded,
            "alerts_created": self.report.alert_rows,
            "occurrences_added": self.report.occurrences_added,
            "review": self.report.outcomes.get("review", 0),
            "already_handled": self.report.already_handled,
        }

    def error_count(self) -> int:
        """Messages kept for review because they could not be parsed or stored."""
        if self.report is None:
            return 0
        reasons = self.report.review_reasons
        return sum(reasons.get(r, 0) for r in ("unparseable", "processing_error", "store_failed"))

    def totals(self) -> dict[str, Any]:
        if self.report is None:
            return {"mailbox": self.mailbox, "status": self.status}
        retention = vars(self.retention) if self.retention is not None else {}
        return {"status": self.status, **self.report.totals(), **retention}


@dataclass(frozen=True)
class MailRetention:
    """What the run's retention pass deleted from the ledger and the review records."""

    ledger_rows_deleted: int
    review_rows_deleted: int


@task(
    name="load-firewall-directory",
    cache_policy=NO_CACHE,
    retry_condition_fn=retry_on_io_error,
    **IO_RETRIES,
)
def load_firewall_directory(engine: Engine) -> DeviceDirectory:
    """Every firewall and host alias, to match alerts against."""
    return store.load_device_directory(engine)


@task(
    name="drain-mailbox", cache_policy=NO_CACHE, retry_condition_fn=retry_on_io_error, **IO_RETRIES
)
def drain_mailbox(job: MailboxJob, progress: StepProgress = NO_PROGRESS) -> MailboxReport:
    """Connect, file what an earlier run left unfiled, then handle every unseen message."""
    with Mailbox(job.config, token_provider=job.token_provider) as mailbox:
        return process_mailbox(
            mailbox,
            job.engine,
            job.directory,
            name=mailbox_name(job.config),
            storm_window=job.storm_window,
            max_messages=job.max_messages,
            progress=progress,
        )


@task(
    name="prune-storm-windows",
    cache_policy=NO_CACHE,
    retry_condition_fn=retry_on_io_error,
    **IO_RETRIES,
)
def prune_storm_windows(engine: Engine, storm_window: timedelta) -> int:
    """Forget storm windows closed long ago, so the table stays the size of the open ones."""
    return store.prune_storms(engine, storm_window)


@task(
    name="apply-mail-retention",
    cache_policy=NO_CACHE,
    retry_condition_fn=retry_on_io_error,
    **IO_RETRIES,
)
def apply_mail_retention(
    engine: Engine, *, ledger_days: int, review_days: int, batch_size: int
) -> MailRetention:
    """Delete review records and filed ledger rows past their retention, in bounded batches."""
    reviews = store.prune_reviews(engine, review_days, batch_size=batch_size)
    ledger = store.prune_ledger(engine, ledger_days, batch_size=batch_size)
    return MailRetention(ledger_rows_deleted=ledger, review_rows_deleted=reviews)


@flow(name="email-alerts", validate_parameters=True, persist_result=False, **RUN_METRICS_HOOKS)
def email_alerts(max_messages: int | None = None) -> EmailAlertsSummary:
    """Turn the alert mailbox's unseen mail into alerts or review records (at most `max_messages`)."""
    if max_messages is not None and max_messages < 1:
        raise ValueError("max_messages must be at least 1 when given")
    run = start_run(WorkerType.EMAIL_ALERTS)
    settings, log = run.settings, run.log
    config = mailbox_config(settings)
    name = mailbox_name(config)
    tokens = imap_token_client(settings)
    engine = make_engine(settings, pool_size=2)
    client = connect(settings)
    lock_key = RedisKeys.from_settings(settings).lock(LOCK_SCOPE, name)
    storm_window = timedelta(minutes=settings.alert_storm_window_minutes)
    try:
        with hold(client, lock_key, lease_seconds=settings.lock_lease_seconds) as lease:
            if lease is None:
                log.warning("Mailbox skipped: another run is processing it", mailbox=name)
                summary = EmailAlertsSummary(mailbox=name, status="locked")
            else:
                job = MailboxJob(
                    config=config,
                    token_provider=partial(tokens.token, settings.imap_oauth_scope)
                    if tokens
                    else None,
                    engine=engine,
                    directory=load_firewall_directory(engine),
                    storm_window=storm_window,
                    max_messages=max_messages,
                )
                with run.progress("messages processed") as progress:  # total: the unseen count
                    report = drain_mailbox(job, progress)
                summary = EmailAlertsSummary(name, "processed", report)
                try:
                    prune_storm_windows(engine, storm_window)
                except Exception as exc:  # housekeeping; the mail is already handled
                    log.warning("Old storm windows could not be pruned", error=str(exc))
                try:
                    retention = apply_mail_retention(
                        engine,
                        ledger_days=settings.email_ledger_retention_days,
                        review_days=settings.email_review_retention_days,
                        batch_size=settings.email_retention_batch_size,
                    )
                    summary = replace(summary, retention=retention)
                except Exception as exc:  # housekeeping, as above; the next run deletes them
                    log.warning("Old ledger and review rows could not be deleted", error=str(exc))
        if lease is not None and lease.lost:
            log.warning("Mailbox lock expired during the run; the ledger kept outcomes single")
    finally:
        client.close()
        engine.dispose()
        if tokens is not None:
            tokens.close()

    publish_summary(
        key="email-alerts",
        title="Email alerts",
        rows=summary.report.table_rows() if summary.report else [],
        totals=summary.totals(),
    )
    log.info("Email alerts finished", **summary.totals())
    return summary
