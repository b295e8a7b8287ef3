"""PostgreSQL writes and reads of EDR polling, one AVIAN tenant at a time.

Every statement is scoped by `tenant_id`: Microsoft ids are unique only within one Microsoft
tenant, so two AVIAN tenants that share device or alert ids never touch each other's rows.
Writes are bulk upserts on the contract's keys, one transaction per page, so what a page
brought is stored as soon as it arrives and a rerun leaves the tables as they were.

Device identities are resolved page by page against `avian_workers.edr_device_identities`: one
query loads the stored identities of every device a page's ids and host names can name, and
edr.merge resolves the page against those, so memory follows the page, not the tenant.

Devices are written in two halves (merge.DEFENDER_FIELDS / merge.INTUNE_FIELDS): a Defender
page sets the Defender columns; an Intune page sets the Intune columns and, on a row Defender
also knows, fills the Defender columns only where they are empty. `last_seen_at` only moves
forward.

A device can have several records of one source: Defender keeps the old machine of a
re-onboarded PC, Intune an old enrolment. A row's columns of a source come from that source's
record seen last (`lastSeen` / `lastSyncDateTime`; a record never seen loses to one that was,
equal times go to the greater id), whether the other record comes in the same page, a later
page or a later poll: each identity keeps its record's own last-seen time, and a page writes a
device only from a record newer than every other record of its source (`_newest_per_device`).
Limits: a record Microsoft no longer lists still counts with the time it was last seen, so the
row keeps its columns until another record of the device is seen later (it was the device's
latest word). Identities stored before their last-seen time was kept count as never seen until
their record is listed again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, Self

from sqlalchemy import Connection, Engine, func, insert, select, text
from sqlalchemy.sql.elements import ColumnElement

from avian_workers.db.models import (
    EdrAlert,
    EdrCompliance,
    EdrDevice,
    EdrDeviceIdentity,
    EdrDeviceVulnerability,
    EdrPostureScore,
    EdrSecureScore,
    EdrSyncState,
    EdrVulnerability,
    Tenant,
)
from avian_workers.db.upsert import Merge, rows_json, upsert
from avian_workers.edr.merge import (
    DEFENDER_FIELDS,
    INTUNE_FIELDS,
    DeviceIdentityIndex,
    DeviceSource,
    IdentityLookup,
    SourceIdentity,
    device_for_alert,
    device_for_vulnerability,
    folded_id,
    host_label,
    unique_links,
    unique_vulnerabilities,
)
from avian_workers.edr.normalize import (
    AlertRecord,
    ComplianceRecord,
    DeviceRecord,
    VulnerabilityFinding,
)
from avian_workers.edr.posture import CRITICAL_CVSS, PostureInputs, PostureScore
from avian_workers.edr.secure_score import SecureScoreRecord

__all__ = [
    "ALERTS",
    "SECURE_SCORE",
    "VULNERABILITIES",
    "SyncState",
    "TenantRow",
    "TenantStore",
    "VulnerabilitySweep",
    "tenants_to_poll",
]

# Datasets whose progress `avian_workers.edr_sync_state` keeps per tenant.
ALERTS: Final = "alerts"
VULNERABILITIES: Final = "vulnerabilities"
SECURE_SCORE: Final = "secure_score"

_DEVICE_KEY = ("tenant_id", "microsoft_device_id")
_DEVICE_COLUMNS = (
    "device_name",
    "operating_system",
    "os_version",
    "primary_user",
    "defender_health_status",
    "risk_score",
    "exposure_level",
    "intune_compliance_state",
    "intune_enrollment_status",
    "last_seen_at",
)


_NEVER_SEEN: Final = datetime.min.replace(tzinfo=UTC)

# A stored identity: the key of its device and when its source last saw it.
type _StoredRecord = tuple[str, datetime | None]


# When a source last saw a record, then its compared id: the greater is the newer record.
type _Recency = tuple[datetime, str]


def _recency(last_seen_at: datetime | None, source_key: str) -> _Recency:
    return (last_seen_at or _NEVER_SEEN, source_key)


def _newest_per_device(
    records: Sequence[DeviceRecord], stored: Mapping[tuple[DeviceSource, str], _StoredRecord]
) -> list[DeviceRecord]:
    """Of a page's keyed records, those newer than every other record of their device and source.

    Two records of one source can name one device (a stale duplicate machine, a re-enrolment),
    in one page or in different pages and polls. Upserting each page as it comes would let
    whichever came last overwrite the other's columns, while `last_seen_at` (GREATEST) kept the
    newer time: a row mixing two machines. So a record is written only when it beats the other
    records of its source in the page and those stored before (`stored`, by source and compared
    id, with their device key); a record that loses changes no column, only its identity.
    """
    identities = [SourceIdentity.of(record) for record in records]
    in_page = {(identity.source, identity.source_key) for identity in identities}
    newest: dict[tuple[str, DeviceSource], tuple[_Recency, DeviceRecord | None]] = {}
    for (source, source_key), (key, last_seen_at) in stored.items():
        if (source, source_key) in in_page:
            continue  # the page's record replaces what is stored of itself
        recency = _recency(last_seen_at, source_key)
        kept = newest.get((key, source))
        if kept is None or recency > kept[0]:
            newest[key, source] = (recency, None)
    for record, identity in zip(records, identities, strict=True):
        recency = _recency(record.last_seen_at, identity.source_key)
        kept = newest.get((record.microsoft_device_id, identity.source))
        if kept is None or recency > kept[0]:
            newest[record.microsoft_device_id, identity.source] = (recency, record)
    return [record for _, record in newest.values() if record is not None]


def _newer(stored: ColumnElement[Any], incoming: ColumnElement[Any]) -> ColumnElement[Any]:
    return func.greatest(stored, incoming)  # GREATEST skips NULLs


def _earlier(stored: ColumnElement[Any], incoming: ColumnElement[Any]) -> ColumnElement[Any]:
    return func.least(stored, incoming)  # LEAST skips NULLs


def _incoming_else_stored(
    stored: ColumnElement[Any], incoming: ColumnElement[Any]
) -> ColumnElement[Any]:
    return func.coalesce(incoming, stored)


def _stored_else_incoming(
    stored: ColumnElement[Any], incoming: ColumnElement[Any]
) -> ColumnElement[Any]:
    return func.coalesce(stored, incoming)


# A Defender page: Defender's values win, Intune's stay where Defender has none.
_DEFENDER_PAGE_MERGE: Final[Mapping[str, Merge]] = {
    **dict.fromkeys(DEFENDER_FIELDS, _incoming_else_stored),
    "last_seen_at": _newer,
}
# An Intune page on a row Defender knows: Intune columns are Intune's, the rest only fill gaps.
_INTUNE_PAGE_MERGE: Final[Mapping[str, Merge]] = {
    **dict.fromkeys(DEFENDER_FIELDS, _stored_else_incoming),
    "last_seen_at": _newer,
}


# Every stored identity of each device that one of a page's identifiers names (IdentityLookup),
# Defender first: an Azure AD id shared by two stored rows resolves to the Defender row, as it
# did when the rows were assigned.
_PAGE_IDENTITIES: Final = text(
    """
    WITH named AS (
        SELECT microsoft_device_id FROM avian_workers.edr_device_identities
        WHERE tenant_id = :tenant_id AND source = 'defender'
          AND source_key = ANY(CAST(:defender_ids AS text[]))
        UNION
        SELECT microsoft_device_id FROM avian_workers.edr_device_identities
        WHERE tenant_id = :tenant_id AND source = 'intune'
          AND source_key = ANY(CAST(:intune_ids AS text[]))
        UNION
        SELECT microsoft_device_id FROM avian_workers.edr_device_identities
        WHERE tenant_id = :tenant_id AND aad_key = ANY(CAST(:aad_ids AS text[]))
        UNION
        SELECT microsoft_device_id FROM avian_workers.edr_device_identities
        WHERE tenant_id = :tenant_id AND host_label = ANY(CAST(:host_labels AS text[]))
    )
    SELECT microsoft_device_id, source, source_id, aad_device_id, hostname, source_key,
           last_seen_at
    FROM avian_workers.edr_device_identities
    WHERE tenant_id = :tenant_id AND microsoft_device_id IN (SELECT microsoft_device_id FROM named)
    ORDER BY source, source_id
    """
)


_DEVICE_IDS: Final = text(
    "SELECT microsoft_device_id, id FROM edr_devices "
    "WHERE tenant_id = :tenant_id AND microsoft_device_id = ANY(CAST(:keys AS text[]))"
)


@dataclass(frozen=True, slots=True)
class TenantRow:
    """An AVIAN tenant to poll."""

    id: uuid.UUID
    name: str


def tenants_to_poll(
    engine: Engine, tenant_ids: Sequence[uuid.UUID] | None = None
) -> list[TenantRow]:
    """The active tenants by name, or exactly the tenants `tenant_ids` names (active or not)."""
    query = select(Tenant.id, Tenant.name).order_by(Tenant.name, Tenant.id)
    if tenant_ids is None:
        query = query.where(Tenant.is_active.is_(True))
    else:
        query = query.where(Tenant.id.in_(list(tenant_ids)))
    with engine.connect() as conn:
        return [TenantRow(id=row.id, name=row.name) for row in conn.execute(query)]


@dataclass(frozen=True, slots=True)
class SyncState:
    """Where a dataset of one tenant stands."""

    watermark: datetime | None
    last_success_at: datetime | None
    last_attempt_at: datetime | None
    last_error: str | None


class TenantStore:
    """The EDR tables as one tenant sees them."""

    def __init__(self, engine: Engine, tenant_id: uuid.UUID) -> None:
        self.engine = engine
        self.tenant_id = tenant_id

    # -- device identity -------------------------------------------------------------------

    def page_index(self, conn: Connection, lookup: IdentityLookup) -> DeviceIdentityIndex:
        """An index of the stored identities of every device `lookup` can name (one query)."""
        return self._page_identities(conn, lookup)[0]

    def _page_identities(
        self, conn: Connection, lookup: IdentityLookup
    ) -> tuple[DeviceIdentityIndex, dict[tuple[DeviceSource, str], _StoredRecord]]:
        """`page_index`, and each identity's device key and last-seen time by source and key."""
        index = DeviceIdentityIndex()
        stored: dict[tuple[DeviceSource, str], _StoredRecord] = {}
        if not lookup:
            return index, stored
        params = {
            "tenant_id": self.tenant_id,
            "defender_ids": sorted(lookup.defender_ids),
            "intune_ids": sorted(lookup.intune_ids),
            "aad_ids": sorted(lookup.aad_ids),
            "host_labels": sorted(lookup.host_labels),
        }
        for row in conn.execute(_PAGE_IDENTITIES, params):
            key = row.microsoft_device_id
            index.remember(
                key, SourceIdentity(row.source, row.source_id, row.aad_device_id, row.hostname)
            )
            stored[row.source, row.source_key] = (key, row.last_seen_at)
        return index, stored

    # -- devices ---------------------------------------------------------------------------

    def write_defender_devices(self, records: Sequence[DeviceRecord]) -> int:
        """Key one page of Defender machines (merge.DeviceIdentityIndex), upsert; returns rows."""
        with self.engine.begin() as conn:
            index, stored = self._page_identities(conn, IdentityLookup.of_devices(records))
            records = [index.assign(record) for record in records]
            rows = [self._device_row(record) for record in _newest_per_device(records, stored)]
            upsert(
                conn,
                EdrDevice,
                rows,
                key=_DEVICE_KEY,
                update=(*DEFENDER_FIELDS, "last_seen_at"),
                merge=_DEFENDER_PAGE_MERGE,
            )
            self._write_identities(conn, records)
        return len({record.microsoft_device_id for record in records})

    def write_intune_devices(
        self,
        records: Sequence[DeviceRecord],
        *,
        compliance: Sequence[ComplianceRecord] = (),
        failed_rules_known: bool = True,
    ) -> int:
        """Key one page of Intune devices, upsert them and their compliance rows; returns rows.

        Write after the Defender devices. On a row a Defender machine is stored under, Intune
        only fills empty Defender columns; a device only Intune knows takes every column from
        Intune. `failed_rules_known` False (the policy statuses could not be read) stores NULL
        rules.
        """
        with self.engine.begin() as conn:
            index, stored = self._page_identities(conn, IdentityLookup.of_devices(records))
            records = [index.assign(record) for record in records]
            newest = _newest_per_device(records, stored)
            defender_keys = index.keys_known_to("defender")
            merged = [self._device_row(r) for r in newest if r.microsoft_device_id in defender_keys]
            intune_only = [
                self._device_row(r) for r in newest if r.microsoft_device_id not in defender_keys
            ]
            upsert(
                conn,
                EdrDevice,
                merged,
                key=_DEVICE_KEY,
                update=(*INTUNE_FIELDS, *DEFENDER_FIELDS, "last_seen_at"),
                merge=_INTUNE_PAGE_MERGE,
            )
            upsert(
                conn,
                EdrDevice,
                intune_only,
                key=_DEVICE_KEY,
                update=_DEVICE_COLUMNS,
                merge={"last_seen_at": _newer},
            )
            self._write_identities(conn, records)
            if compliance:
                # Only the newest enrolment of a device speaks for its compliance.
                self._write_compliance(conn, newest, compliance, failed_rules_known)
        return len({record.microsoft_device_id for record in records})

    def _device_row(self, record: DeviceRecord) -> dict[str, Any]:
        row = {name: getattr(record, name) for name in _DEVICE_COLUMNS}
        row["tenant_id"] = self.tenant_id
        row["microsoft_device_id"] = record.microsoft_device_id
        return row

    def _write_identities(self, conn: Connection, records: Iterable[DeviceRecord]) -> None:
        rows = []
        for record in records:
            identity = SourceIdentity.of(record)
            rows.append(
                {
                    "tenant_id": self.tenant_id,
                    "source": identity.source,
                    "source_id": identity.source_id,
                    "microsoft_device_id": record.microsoft_device_id,
                    "aad_device_id": identity.aad_device_id,
                    "hostname": identity.hostname,
                    "source_key": identity.source_key,
                    "aad_key": folded_id(identity.aad_device_id),
                    "host_label": host_label(identity.hostname),
                    "last_seen_at": record.last_seen_at,
                }
            )
        upsert(conn, EdrDeviceIdentity, rows, key=("tenant_id", "source", "source_id"))

    def _write_compliance(
        self,
        conn: Connection,
        records: Sequence[DeviceRecord],
        compliance: Sequence[ComplianceRecord],
        failed_rules_known: bool,
    ) -> None:
        # `records` are one per device (`_newest_per_device`): an older enrolment's entry has no
        # key here and is left out.
        keys = {r.intune_device_id: r.microsoft_device_id for r in records if r.intune_device_id}
        device_ids = _device_ids(conn, self.tenant_id, keys.values())
        rows = []
        for entry in compliance:
            device_id = device_ids.get(keys.get(entry.intune_device_id, ""))
            if device_id is None:
                continue
            row: dict[str, Any] = {
                "tenant_id": self.tenant_id,
                "device_id": device_id,
                "compliance_state": entry.compliance_state,
                "checked_at": entry.checked_at,
            }
            # Left out, the column takes SQL NULL (unknown); a Python None would be JSON null.
            if failed_rules_known:
                row["failed_rules"] = list(entry.failed_rules)
            rows.append(row)
        upsert(
            conn,
            EdrCompliance,
            rows,
            key=("tenant_id", "device_id"),
            update=("compliance_state", "failed_rules", "checked_at"),
        )

    # -- alerts ----------------------------------------------------------------------------

    def write_alerts(self, records: Sequence[AlertRecord]) -> int:
        """Upsert one page of alerts, each linked to its device (merge.device_for_alert)."""
        with self.engine.begin() as conn:
            index = self.page_index(conn, IdentityLookup.of_alerts(records))
            keys = {
                record.microsoft_alert_id: device_for_alert(record, index) for record in records
            }
            device_ids = _device_ids(conn, self.tenant_id, (k for k in keys.values() if k))
            rows = [
                {
                    "tenant_id": self.tenant_id,
                    "microsoft_alert_id": record.microsoft_alert_id,
                    "device_id": device_ids.get(keys[record.microsoft_alert_id] or ""),
                    "severity": record.severity,
                    "threat_type": record.threat_type,
                    "threat_name": record.threat_name,
                    "status": record.status,
                    "description": record.description,
                    "detected_at": record.detected_at,
                }
                for record in records
            ]
            # An alert whose evidence no longer resolves keeps the device it was linked to.
            upsert(
                conn,
                EdrAlert,
                rows,
                key=("tenant_id", "microsoft_alert_id"),
                merge={"device_id": _incoming_else_stored},
            )
        return len(keys)

    # -- vulnerabilities -------------------------------------------------------------------

    def vulnerability_sweep(self) -> VulnerabilitySweep:
        """A full pass over the vulnerability export (a context manager)."""
        return VulnerabilitySweep(self)

    # -- compliance and posture ------------------------------------------------------------

    def posture_inputs(self) -> PostureInputs:
        """What the posture score needs, counted by PostgreSQL over this tenant's stored rows."""
        tenant = {"tenant_id": self.tenant_id}
        with self.engine.connect() as conn:
            risk_scores: list[int | None] = []
            for score, devices in conn.execute(
                text(
                    "SELECT risk_score, count(*) FROM edr_devices WHERE tenant_id = :tenant_id "
                    "GROUP BY risk_score"
                ),
                tenant,
            ):
                risk_scores.extend([score] * devices)
            alerts: dict[str, int] = dict(
                conn.execute(
                    text(
                        "SELECT severity, count(*) FROM edr_alerts WHERE tenant_id = :tenant_id "
                        "AND (status IS NULL OR lower(btrim(status)) <> 'resolved') "
                        "GROUP BY severity"
                    ),
                    tenant,
                ).all()
            )
            critical_vulnerabilities = conn.execute(
                text(
                    "SELECT count(DISTINCT v.id) FROM edr_vulnerabilities v "
                    "JOIN edr_device_vulnerabilities dv ON dv.vulnerability_id = v.id "
                    "JOIN edr_devices d ON d.id = dv.device_id "
                    "WHERE v.tenant_id = :tenant_id AND d.tenant_id = :tenant_id "
                    "AND v.cvss_score >= :critical"
                ),
                {**tenant, "critical": CRITICAL_CVSS},
            ).scalar_one()
            total, compliant = conn.execute(
                text(
                    "SELECT count(*), count(*) FILTER "
                    "(WHERE lower(btrim(compliance_state)) = 'compliant') "
                    "FROM edr_compliance WHERE tenant_id = :tenant_id"
                ),
                tenant,
            ).one()
        return PostureInputs(
            risk_scores=risk_scores,
            critical_alert_count=alerts.get("critical", 0),
            high_alert_count=alerts.get("high", 0),
            medium_alert_count=alerts.get("medium", 0),
            low_alert_count=alerts.get("low", 0),
            critical_vulnerability_count=critical_vulnerabilities,
            compliant_count=compliant,
            total_compliance_count=total,
        )

    def write_posture_score(self, score: PostureScore, *, calculated_at: datetime) -> None:
        """Append this poll's score to the tenant's history."""
        with self.engine.begin() as conn:
            conn.execute(
                insert(EdrPostureScore).values(
                    tenant_id=self.tenant_id,
                    score=score.score,
                    device_count=score.device_count,
                    high_risk_device_count=score.high_risk_device_count,
                    active_alert_count=score.active_alert_count,
                    critical_vulnerability_count=score.critical_vulnerability_count,
                    non_compliant_device_count=score.non_compliant_device_count,
                    calculated_at=calculated_at,
                )
            )

    def write_secure_score(self, record: SecureScoreRecord) -> None:
        """Keep the tenant's Secure Score of that day (one row per tenant and day)."""
        row = {
            "tenant_id": self.tenant_id,
            "score_date": record.score_date,
            "current_score": record.current_score,
            "max_score": record.max_score,
            "active_user_count": record.active_user_count,
            "licensed_user_count": record.licensed_user_count,
            "created_at": record.created_at,
        }
        with self.engine.begin() as conn:
            upsert(conn, EdrSecureScore, [row], key=("tenant_id", "score_date"), touch=None)

    # -- sync state ------------------------------------------------------------------------

    def sync_state(self, dataset: str) -> SyncState | None:
        """Where `dataset` stands for this tenant, or None before its first attempt."""
        query = select(
            EdrSyncState.watermark,
            EdrSyncState.last_success_at,
            EdrSyncState.last_attempt_at,
            EdrSyncState.last_error,
        ).where(EdrSyncState.tenant_id == self.tenant_id, EdrSyncState.dataset == dataset)
        with self.engine.connect() as conn:
            row = conn.execute(query).one_or_none()
        if row is None:
            return None
        return SyncState(row.watermark, row.last_success_at, row.last_attempt_at, row.last_error)

    def record_success(
        self, dataset: str, *, at: datetime, watermark: datetime | None = None
    ) -> None:
        """A complete sync of `dataset`; a watermark never moves back."""
        row = {
            "tenant_id": self.tenant_id,
            "dataset": dataset,
            "watermark": watermark,
            "last_success_at": at,
            "last_attempt_at": at,
            "last_error": None,
        }
        with self.engine.begin() as conn:
            upsert(
                conn,
                EdrSyncState,
                [row],
                key=("tenant_id", "dataset"),
                merge={"watermark": _newer},
                touch=None,
            )

    def record_failure(self, dataset: str, *, at: datetime, error: str) -> None:
        """An incomplete or failed sync: watermark and last success stay as they were."""
        row = {
            "tenant_id": self.tenant_id,
            "dataset": dataset,
            "last_attempt_at": at,
            "last_error": error,
        }
        with self.engine.begin() as conn:
            upsert(conn, EdrSyncState, [row], key=("tenant_id", "dataset"), touch=None)


class VulnerabilitySweep:
    """One full pass over the vulnerability export of a tenant, page by page.

    Each page is its own transaction: CVEs (one row per CVE per tenant) and device links are
    upserted, and the links seen are noted in a temporary table on this sweep's connection.
    `remove_unseen_links()`, called once every page has arrived, deletes the tenant's links the
    export no longer lists (patched software), so the posture counts only open CVEs. The set of
    links seen stays in PostgreSQL, never in memory.
    """

    def __init__(self, store: TenantStore) -> None:
        self._store = store
        self._conn: Connection | None = None
        self.links_written = 0
        self.vulnerabilities_written = 0

    def __enter__(self) -> Self:
        conn = self._store.engine.connect()
        try:
            # A pooled connection may hold the table of a sweep that died mid-way.
            conn.execute(text("DROP TABLE IF EXISTS pg_temp.edr_links_seen"))
            conn.execute(
                text(
                    "CREATE TEMPORARY TABLE edr_links_seen "
                    "(device_id uuid NOT NULL, vulnerability_id uuid NOT NULL, "
                    "PRIMARY KEY (device_id, vulnerability_id))"
                )
            )
            conn.commit()
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        conn = self._connection()
        try:
            conn.rollback()
            conn.execute(text("DROP TABLE IF EXISTS pg_temp.edr_links_seen"))
            conn.commit()
        finally:
            conn.close()
            self._conn = None

    def _connection(self) -> Connection:
        if self._conn is None:
            raise RuntimeError("the vulnerability sweep is not open")
        return self._conn

    def write_page(self, findings: Sequence[VulnerabilityFinding]) -> int:
        """Upsert one page's CVEs and device links; returns the links the page names."""
        store, conn = self._store, self._connection()
        vulnerabilities = unique_vulnerabilities(f.vulnerability for f in findings)
        links = unique_links(f.link for f in findings)
        with conn.begin():
            upsert(
                conn,
                EdrVulnerability,
                [
                    {
                        "tenant_id": store.tenant_id,
                        "cve_id": v.cve_id,
                        "severity": v.severity,
                        "cvss_score": v.cvss_score,
                        "exploitability": v.exploitability,
                        "description": v.description,
                    }
                    for v in vulnerabilities
                ],
                key=("tenant_id", "cve_id"),
            )
            vulnerability_ids = self._vulnerability_ids(conn, [v.cve_id for v in vulnerabilities])
            index = store.page_index(
                conn, IdentityLookup.of_machines(link.machine_id for link in links)
            )
            device_keys = {link.machine_id: device_for_vulnerability(link, index) for link in links}
            device_ids = _device_ids(conn, store.tenant_id, (k for k in device_keys.values() if k))
            # Two machines of one device can list the same CVE: one link, earliest detection.
            earliest: dict[tuple[uuid.UUID, uuid.UUID], datetime | None] = {}
            for link in links:
                device_id = device_ids.get(device_keys[link.machine_id] or "")
                vulnerability_id = vulnerability_ids.get(link.cve_id)
                if device_id is None or vulnerability_id is None:
                    continue
                pair = (device_id, vulnerability_id)
                if pair not in earliest:
                    earliest[pair] = link.detected_at
                else:
                    earliest[pair] = _min_known(earliest[pair], link.detected_at)
            rows = [
                {"device_id": device_id, "vulnerability_id": vulnerability_id, "detected_at": at}
                for (device_id, vulnerability_id), at in earliest.items()
            ]
            upsert(
                conn,
                EdrDeviceVulnerability,
                rows,
                key=("device_id", "vulnerability_id"),
                merge={"detected_at": _earlier},
                touch=None,
            )
            if rows:
                conn.execute(
                    text(
                        "INSERT INTO pg_temp.edr_links_seen (device_id, vulnerability_id) "
                        "SELECT device_id, vulnerability_id FROM jsonb_to_recordset("
                        "CAST(:rows AS jsonb)) AS seen(device_id uuid, vulnerability_id uuid) "
                        "ON CONFLICT DO NOTHING"
                    ),
                    {"rows": rows_json(rows)},
                )
        self.vulnerabilities_written += len(vulnerabilities)
        self.links_written += len(rows)
        return len(rows)

    def remove_unseen_links(self) -> int:
        """Delete this tenant's links that no page of the sweep listed; returns how many."""
        conn = self._connection()
        with conn.begin():
            result = conn.execute(
                text(
                    "DELETE FROM edr_device_vulnerabilities dv USING edr_devices d "
                    "WHERE dv.device_id = d.id AND d.tenant_id = :tenant_id "
                    "AND NOT EXISTS (SELECT 1 FROM pg_temp.edr_links_seen s "
                    "WHERE s.device_id = dv.device_id "
                    "AND s.vulnerability_id = dv.vulnerability_id)"
                ),
                {"tenant_id": self._store.tenant_id},
            )
        return result.rowcount

    def _vulnerability_ids(self, conn: Connection, cve_ids: Sequence[str]) -> dict[str, uuid.UUID]:
        if not cve_ids:
            return {}
        query = select(EdrVulnerability.cve_id, EdrVulnerability.id).where(
            EdrVulnerability.tenant_id == self._store.tenant_id,
            EdrVulnerability.cve_id.in_(list(cve_ids)),
        )
        return {row.cve_id: row.id for row in conn.execute(query)}


def _device_ids(
    conn: Connection, tenant_id: uuid.UUID, keys: Iterable[str]
) -> dict[str, uuid.UUID]:
    """`edr_devices.id` of each stored device key of the tenant."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    rows = conn.execute(_DEVICE_IDS, {"tenant_id": tenant_id, "keys": wanted})
    return dict(rows.all())


def _min_known(first: datetime | None, second: datetime | None) -> datetime | None:
    known = [moment for moment in (first, second) if moment is not None]
    return min(known, default=None)
