"""One tenant's Microsoft datasets, page by page, from the Graph and Defender clients into the store.

Each `sync_*` function walks one dataset: every page is normalised, keyed by the store against
the device identities stored so far (merge.DeviceIdentityIndex, per page) and written before the
next page is asked for, so memory follows the page size, not the tenant. A record Microsoft sends in a shape we cannot store is logged with its id
and the reason and counted as rejected; the rest of its page is stored.

Order matters (merge.DeviceIdentityIndex): Defender devices, then the compliance policies'
failing statuses, then Intune devices (which also write compliance), then alerts and
vulnerabilities, which link to the devices; the posture score comes last, from what is stored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Literal

import structlog

from avian_workers.edr.merge import FailedRulesByDevice
from avian_workers.edr.normalize import (
    AlertRecord,
    RecordError,
    VulnerabilityFinding,
    alert_record,
    compliance_record,
    defender_device,
    intune_device,
    parse_timestamp,
    policy_device_status,
    vulnerability_finding,
)
from avian_workers.edr.posture import posture_score
from avian_workers.edr.secure_score import secure_score_record
from avian_workers.edr.store import ALERTS, SECURE_SCORE, VULNERABILITIES, TenantStore
from avian_workers.microsoft import (
    DefenderClient,
    GraphClient,
    HttpPolicy,
    MicrosoftEndpoints,
    PermissionMissingError,
)
from avian_workers.settings import Settings

__all__ = [
    "DATASETS",
    "DatasetReport",
    "DatasetStatus",
    "FailedRules",
    "TenantOutcome",
    "TenantReport",
    "flag_shared_azure_tenants",
    "microsoft_config",
    "sync_alerts",
    "sync_compliance_rules",
    "sync_defender_devices",
    "sync_intune_devices",
    "sync_posture",
    "sync_secure_score",
    "sync_vulnerabilities",
]

_log = structlog.get_logger(__name__)

DatasetStatus = Literal["ok", "partial", "forbidden", "cached", "failed", "not run"]
TenantOutcome = Literal["succeeded", "warning", "failed", "locked"]

# Datasets in the order a tenant is polled, as the run summary names them.
DATASETS: tuple[str, ...] = (
    "defender devices",
    "compliance rules",
    "intune devices",
    "compliance",
    "alerts",
    "vulnerabilities",
    "posture",
    "secure score",
)
_WARNING_STATUSES = frozenset({"partial", "forbidden"})

POSTURE_INPUTS: tuple[str, ...] = (
    "defender devices",
    "intune devices",
    "compliance",
    "alerts",
    "vulnerabilities",
)
"""Datasets whose stored rows the posture score is computed from."""
_UNREAD_STATUSES = frozenset({"failed", "forbidden", "not run"})


def microsoft_config(settings: Settings) -> tuple[MicrosoftEndpoints, HttpPolicy]:
    """Where the Microsoft APIs are and how patiently to call them, from Settings."""
    endpoints = MicrosoftEndpoints(
        authority_host=settings.ms_authority_host,
        graph_base_url=settings.ms_graph_base_url,
        defender_base_url=settings.ms_defender_base_url,
        graph_scope=settings.ms_graph_scope,
        defender_scope=settings.ms_defender_scope,
    )
    policy = HttpPolicy(
        connect_timeout=settings.http_connect_timeout_seconds,
        read_timeout=settings.http_read_timeout_seconds,
        max_attempts=settings.http_max_attempts,
        backoff_base=settings.http_backoff_base_seconds,
        backoff_max=settings.http_backoff_max_seconds,
        retry_budget_seconds=settings.tenant_retry_budget_seconds,
        defender_calls_per_minute=settings.defender_calls_per_minute,
    )
    return endpoints, policy


# --- Reports -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DatasetReport:
    """What one dataset of one tenant did in this run."""

    dataset: str
    status: DatasetStatus
    rows: int = 0
    pages: int = 0
    rejected: int = 0
    detail: str | None = None

    @property
    def is_warning(self) -> bool:
        return self.status in _WARNING_STATUSES or self.rejected > 0


@dataclass(frozen=True, slots=True)
class TenantReport:
    """One tenant's run: its outcome, every dataset's report, how long it took, what failed."""

    tenant_id: str
    tenant_name: str
    outcome: TenantOutcome
    datasets: tuple[DatasetReport, ...] = ()
    duration_seconds: float = 0.0
    error: str | None = None
    azure_tenant_id: str | None = None
    """The Azure AD tenant the tenant's secret names (an id, not a secret); None if unread."""
    shares_azure_tenant_with: tuple[str, ...] = ()
    """Other AVIAN tenants of the run whose secrets name the same Azure AD tenant."""

    def table_row(self) -> dict[str, Any]:
        """The tenant's row of the run's table artifact: rows per dataset, or its status."""
        reports = {report.dataset: report for report in self.datasets}
        row: dict[str, Any] = {"tenant": self.tenant_name, "outcome": self.outcome}
        for dataset in DATASETS:
            report = reports.get(dataset)
            row[dataset] = _cell(report)
        row["duration (s)"] = round(self.duration_seconds, 1)
        problems = (
            [self.error]
            if self.error
            else [f"{r.dataset}: {r.detail}" for r in self.datasets if r.is_warning and r.detail]
        )
        if self.shares_azure_tenant_with:
            problems.append(
                f"Azure AD tenant {self.azure_tenant_id} is also polled for "
                f"{', '.join(self.shares_azure_tenant_with)}: each is shown the others' data"
            )
        row["error"] = "; ".join(problems)
        return row


def _cell(report: DatasetReport | None) -> str | int:
    if report is None:
        return "not run"
    if report.status == "ok" and not report.rejected:
        return report.rows
    rejected = f", {report.rejected} rejected" if report.rejected else ""
    return f"{report.rows} ({report.status}{rejected})"


def flag_shared_azure_tenants(reports: Iterable[TenantReport]) -> tuple[TenantReport, ...]:
    """The reports, with the AVIAN tenants whose secrets name one Azure AD tenant flagged.

    Such tenants are polled as usual, so each of them stores, and its customer is shown, the
    same devices, alerts and scores: one customer's data under another's name, unless the two
    are one customer. Almost always a secret copied to the wrong tenant, so a tenant that would
    have succeeded becomes a warning naming the others; the operator decides.
    """
    listed = list(reports)
    by_azure: dict[str, list[TenantReport]] = {}
    for report in listed:
        if report.azure_tenant_id:
            by_azure.setdefault(report.azure_tenant_id.lower(), []).append(report)
    flagged = []
    for report in listed:
        peers = by_azure.get((report.azure_tenant_id or "").lower(), [])
        others = tuple(sorted(p.tenant_name for p in peers if p.tenant_id != report.tenant_id))
        if not others:
            flagged.append(report)
            continue
        outcome: TenantOutcome = "warning" if report.outcome == "succeeded" else report.outcome
        flagged.append(replace(report, outcome=outcome, shares_azure_tenant_with=others))
    return tuple(flagged)


def tenant_outcome(datasets: Iterable[DatasetReport], error: str | None) -> TenantOutcome:
    """Failed on any error; a warning when a dataset was forbidden, partial or rejected records."""
    reports = list(datasets)
    if error is not None or any(r.status == "failed" for r in reports):
        return "failed"
    return "warning" if any(r.is_warning for r in reports) else "succeeded"


# --- Page accounting ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Tally:
    dataset: str
    pages: int = 0
    rows: int = 0
    rejected: int = 0
    details: list[str] = field(default_factory=list)

    def normalise[T](
        self, items: Iterable[Mapping[str, Any]], build: Callable[[Any], T]
    ) -> list[T]:
        """`build` every item of a page; items that cannot be stored are logged and counted."""
        built: list[T] = []
        for item in items:
            try:
                built.append(build(item))
            except RecordError as exc:
                self.rejected += 1
                _log.warning("Microsoft record rejected", dataset=self.dataset, error=str(exc))
        return built

    def report(self, status: DatasetStatus = "ok", detail: str | None = None) -> DatasetReport:
        if detail is None and self.rejected:
            detail = f"{self.rejected} records rejected (see log)"
        return DatasetReport(
            self.dataset, status, self.rows, self.pages, self.rejected, detail or None
        )


def _forbidden(dataset: str, exc: PermissionMissingError, tally: _Tally) -> DatasetReport:
    _log.warning(
        "Dataset skipped: the app registration lacks the permission",
        dataset=dataset,
        error=str(exc),
    )
    return tally.report("forbidden", exc.summary)


# --- Devices and compliance --------------------------------------------------------------------


def sync_defender_devices(
    defender: DefenderClient, store: TenantStore, *, page_size: int
) -> DatasetReport:
    """Defender machines (`$top`/`$skip` pages) into `edr_devices`, keyed by the store."""
    tally = _Tally("defender devices")
    try:
        for page in defender.machines(page_size=page_size):
            tally.pages += 1
            tally.rows += store.write_defender_devices(tally.normalise(page, defender_device))
    except PermissionMissingError as exc:
        return _forbidden(tally.dataset, exc, tally)
    return tally.report()


@dataclass(frozen=True, slots=True)
class FailedRules:
    """The compliance policies' failing statuses, or None where they could not be read."""

    by_device: FailedRulesByDevice | None
    report: DatasetReport


def sync_compliance_rules(graph: GraphClient) -> FailedRules:
    """Every compliance policy's per-device statuses, kept only where a policy fails.

    One request per policy page and status page, none per device; memory follows the number
    of failures.
    """
    tally = _Tally("compliance rules")
    failures = FailedRulesByDevice()
    try:
        for policies in graph.compliance_policies():
            tally.pages += 1
            for policy in policies:
                policy_id = policy.get("id")
                if not isinstance(policy_id, str) or not policy_id:
                    tally.rejected += 1
                    _log.warning("Compliance policy without an id rejected", policy=policy)
                    continue
                name = policy.get("displayName")
                policy_name = name if isinstance(name, str) else None
                for statuses in graph.policy_device_statuses(policy_id):
                    tally.pages += 1
                    read = partial(
                        policy_device_status, policy_id=policy_id, policy_name=policy_name
                    )
                    for status in tally.normalise(statuses, read):
                        tally.rows += 1
                        failures.add(status)
    except PermissionMissingError as exc:
        return FailedRules(None, _forbidden(tally.dataset, exc, tally))
    return FailedRules(failures, tally.report())


def sync_intune_devices(
    graph: GraphClient,
    store: TenantStore,
    failed_rules: FailedRulesByDevice | None,
    *,
    checked_at: datetime,
) -> tuple[DatasetReport, DatasetReport]:
    """Intune managed devices into `edr_devices`, and each one's compliance into `edr_compliance`.

    Call after the Defender devices: a device Defender knows keeps Defender's columns. Returns
    the reports of the devices and of compliance.
    """
    devices, compliance = _Tally("intune devices"), _Tally("compliance")
    try:
        for page in graph.managed_devices():
            devices.pages += 1
            compliance.pages += 1
            records = devices.normalise(page, intune_device)
            entries = [
                compliance_record(
                    record,
                    failed_rules.rules_for(record) if failed_rules is not None else (),
                    checked_at=checked_at,
                )
                for record in records
            ]
            devices.rows += store.write_intune_devices(
                records,
                compliance=entries,
                failed_rules_known=failed_rules is not None,
            )
            compliance.rows += len(entries)
    except PermissionMissingError as exc:
        return (
            _forbidden(devices.dataset, exc, devices),
            compliance.report("forbidden", "no Intune devices to take compliance from"),
        )
    rules_detail = None if failed_rules is not None else "failed rules unknown (policies unread)"
    return devices.report(), compliance.report("partial" if rules_detail else "ok", rules_detail)


# --- Alerts ------------------------------------------------------------------------------------


def alert_window_start(
    watermark: datetime | None, *, now: datetime, backfill: timedelta, overlap: timedelta
) -> datetime:
    """Where an alert sweep starts: the watermark minus the overlap, or the backfill window."""
    if watermark is None:
        return now - backfill
    return watermark - overlap


def sync_alerts(
    graph: GraphClient,
    store: TenantStore,
    *,
    now: datetime,
    backfill: timedelta,
    overlap: timedelta,
) -> DatasetReport:
    """Alerts updated since the watermark (minus an overlap), every page, linked to devices.

    The watermark becomes the newest `lastUpdateDateTime` stored, and only when every page was
    a whole (200) answer. It never passes an alert that was rejected, so that alert is read
    again by the next run rather than lost.
    """
    tally = _Tally("alerts")
    state = store.sync_state(ALERTS)
    since = alert_window_start(
        state.watermark if state else None, now=now, backfill=backfill, overlap=overlap
    )
    sweep = graph.alerts_updated_since(since)
    newest: datetime | None = None
    earliest_rejected: datetime | None = None
    try:
        for page in sweep.pages():
            tally.pages += 1
            rejected_before = tally.rejected
            records: list[AlertRecord] = tally.normalise(page, alert_record)
            if tally.rejected > rejected_before:
                earliest_rejected = _earliest(earliest_rejected, _rejected_updates(page, records))
            if records:
                tally.rows += store.write_alerts(records)
                page_newest = max(r.last_updated_at for r in records)
                newest = page_newest if newest is None else max(newest, page_newest)
    except PermissionMissingError as exc:
        store.record_failure(ALERTS, at=now, error=str(exc))
        return _forbidden(tally.dataset, exc, tally)
    if not sweep.complete:
        store.record_failure(ALERTS, at=now, error="a page was partial (206); watermark kept")
        return tally.report("partial", "a page was partial (206): watermark not advanced")
    watermark = newest
    if earliest_rejected is not None and (watermark is None or earliest_rejected < watermark):
        watermark = earliest_rejected
    if watermark is not None and watermark > now:
        # A future-dated alert (clock skew) must not carry the watermark, which never moves
        # back, past every real update to come; it is simply read again until its time passes.
        watermark = now
    store.record_success(ALERTS, at=now, watermark=watermark)
    return tally.report()


def _rejected_updates(
    page: Iterable[Mapping[str, Any]], stored: Iterable[AlertRecord]
) -> datetime | None:
    """The earliest `lastUpdateDateTime` among a page's alerts that were not stored."""
    stored_ids = {record.microsoft_alert_id for record in stored}
    earliest: datetime | None = None
    for alert in page:
        if alert.get("id") in stored_ids:
            continue
        value = alert.get("lastUpdateDateTime")
        if not isinstance(value, str):
            continue
        try:
            moment = parse_timestamp(value)
        except (ValueError, OverflowError):  # as alert_record rejected it: unreadable, skipped
            continue
        earliest = _earliest(earliest, moment)
    return earliest


def _earliest(first: datetime | None, second: datetime | None) -> datetime | None:
    known = [moment for moment in (first, second) if moment is not None]
    return min(known, default=None)


# --- Vulnerabilities ---------------------------------------------------------------------------


def sync_vulnerabilities(
    defender: DefenderClient,
    store: TenantStore,
    *,
    now: datetime,
    page_size: int,
) -> DatasetReport:
    """The software-vulnerability export into CVEs and device links, replacing stale links.

    Links of the tenant that the export no longer lists are deleted once every page arrived
    and no row was rejected (a rejected row could be a link that still exists).
    """
    tally = _Tally("vulnerabilities")
    try:
        with store.vulnerability_sweep() as sweep:
            for page in defender.vulnerabilities_by_machine(page_size=page_size):
                tally.pages += 1
                findings: list[VulnerabilityFinding] = [
                    finding
                    for finding in tally.normalise(page, vulnerability_finding)
                    if finding is not None
                ]
                tally.rows += sweep.write_page(findings)
            removed = sweep.remove_unseen_links() if not tally.rejected else 0
    except PermissionMissingError as exc:
        store.record_failure(VULNERABILITIES, at=now, error=str(exc))
        return _forbidden(tally.dataset, exc, tally)
    store.record_success(VULNERABILITIES, at=now)
    detail = f"{removed} links no longer listed were removed" if removed else None
    return tally.report(detail=detail)


# --- Posture -----------------------------------------------------------------------------------


def posture_unscored_reason(reports: Iterable[DatasetReport]) -> str | None:
    """Why this run must not score the tenant's posture, or None when it may.

    The score counts a part without data as perfect (no alerts, no devices at risk), so it is
    only computed when every input dataset was read in this run or within its cadence. A tenant
    whose consent or licence does not cover one of them gets no score rather than a flattering
    one; the dataset's own report says what is missing.
    """
    statuses = {report.dataset: report.status for report in reports}
    unread = [
        f"{name} {statuses.get(name, 'not run')}"
        for name in POSTURE_INPUTS
        if statuses.get(name, "not run") in _UNREAD_STATUSES
    ]
    return "inputs not read: " + ", ".join(unread) if unread else None


def sync_posture(store: TenantStore, *, now: datetime) -> DatasetReport:
    """The platform's posture score from the tenant's stored rows, appended to its history."""
    score = posture_score(store.posture_inputs())
    store.write_posture_score(score, calculated_at=now)
    return DatasetReport("posture", "ok", rows=1, detail=f"score {score.score}")


def sync_secure_score(graph: GraphClient, store: TenantStore, *, now: datetime) -> DatasetReport:
    """The tenant's latest Microsoft Secure Score, where its app registration may read it."""
    tally = _Tally("secure score")
    try:
        latest = graph.latest_secure_score()
    except PermissionMissingError as exc:
        store.record_failure(SECURE_SCORE, at=now, error=str(exc))
        return _forbidden(tally.dataset, exc, tally)
    tally.pages = 1
    if latest is None:
        store.record_success(SECURE_SCORE, at=now)
        return tally.report(detail="the tenant has no Secure Score yet")
    for record in tally.normalise([latest], secure_score_record):
        store.write_secure_score(record)
        tally.rows += 1
    store.record_success(SECURE_SCORE, at=now)
    return tally.report()
