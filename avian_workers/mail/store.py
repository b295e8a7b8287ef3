"""PostgreSQL side of the email worker: the device directory, the mail ledger, alerts and review.

Crash safety rests on one rule: a message's ledger row and everything it produced (alert rows,
storm counts, review record) commit in one transaction, and the mailbox is touched only after
that commit. `record_outcomes` stores a whole fetch batch in one transaction: ledger rows are
claimed first (`INSERT ... ON CONFLICT DO NOTHING`), so a message another run recorded in the
meantime is never stored twice. If the batch hits a data or integrity error (a device deleted
since the directory was loaded, say), its messages are stored one by one, and a message that
still cannot be stored is kept for review as `store_failed` with its raw bytes and events.
`mark_filed` sets `marked_at` once the mailbox has been updated; `unfiled` finds what a crashed
run committed but never filed.

`firewall_alerts.created_at` keeps the platform's meaning, the time the row was inserted (its
default now(), UTC since sessions run with timezone=UTC). The event's own time is
`metadata.occurred_at` (ISO 8601 UTC), so a backlog processed late shows both when the portal
learned of each event and when it happened. Storm windows use the event time.

Storm suppression: a storm is one alert row and the repeats folded into it. An event repeats
a stored alert when it has the same fingerprint and happened within ALERT_STORM_WINDOW_MINUTES
of that alert's first occurrence (before or after it: mail arrives out of order); it then
raises `occurrences` on the storm and in the alert's metadata instead of inserting a row.
Anything else inserts a row and opens a window of its own. A window of 0 turns this off.
One fingerprint can have several open windows (a straggler from an hour ago next to today's
storm), so `alert_storms` keys each window by the SHA-256 of the fingerprint and the window's
slot (first occurrence // window): an event can only repeat windows of its own slot or the
two beside it. Writers serialise per window key with transaction-scoped advisory locks taken
in one sorted statement (so two writers cannot deadlock on them) and read storm rows FOR
UPDATE, so concurrent runs can neither fold into a row being deleted nor open two windows.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, cast, get_args

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    bindparam,
    delete,
    func,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DataError, IntegrityError

from avian_workers.db.models import (
    AlertStorm,
    FirewallAlert,
    FirewallDevice,
    FirewallHostAlias,
    MailLedgerEntry,
    MailReviewItem,
)
from avian_workers.logs import get_logger
from avian_workers.mail.match import DeviceDirectory, HostAlias, KnownDevice
from avian_workers.mail.triage import (
    DeviceAlert,
    MessageKey,
    Review,
    ReviewReason,
    TriagedMessage,
    parsed_alert_json,
)

__all__ = [
    "LedgerEntry",
    "Outcome",
    "Recorded",
    "find_handled",
    "load_device_directory",
    "mark_filed",
    "prune_ledger",
    "prune_reviews",
    "prune_storms",
    "record_outcomes",
    "unfiled",
]

Outcome = Literal["alert", "suppressed", "review"]
"""A message became at least one new alert row; only repeats folded into rows; or review only."""

ALERT_SOURCE = "email"
MAX_UNFILED_PER_RUN = 5_000
STORM_RETENTION = timedelta(days=1)
"""How long a storm row is kept after its window closed (late, out-of-order mail)."""

_MAILBOX_CHARS = 512
# Advisory lock namespace ("AVIA"), so storm locks never collide with other advisory locks.
_STORM_LOCK_NAMESPACE = 0x41564941

_log = get_logger(component="mail-store")


def _table(model: type[Any]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


LEDGER = _table(MailLedgerEntry)
REVIEW = _table(MailReviewItem)
ALERTS = _table(FirewallAlert)
STORMS = _table(AlertStorm)
DEVICES = _table(FirewallDevice)
ALIASES = _table(FirewallHostAlias)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """A message the ledger already holds."""

    ledger_id: int
    key: MessageKey
    outcome: Outcome
    uid: int | None
    marked_at: datetime | None


@dataclass(frozen=True, slots=True)
class Recorded:
    """What storing one message did; `stored_here` is False when another run had stored it."""

    key: MessageKey
    uid: int
    ledger_id: int
    outcome: Outcome
    alerts_created: int = 0
    occurrences_added: int = 0
    review_reason: ReviewReason | None = None
    stored_here: bool = True


def load_device_directory(engine: Engine) -> DeviceDirectory:
    """Every firewall and host alias, one query each."""
    with engine.connect() as conn:
        devices = conn.execute(
            select(
                DEVICES.c.id,
                DEVICES.c.tenant_id,
                DEVICES.c.serial_number,
                DEVICES.c.management_ip,
                DEVICES.c.status,
            )
        ).all()
        aliases = conn.execute(select(ALIASES.c.hostname, ALIASES.c.device_id)).all()
    return DeviceDirectory(
        (
            KnownDevice(
                device_id=row.id,
                tenant_id=row.tenant_id,
                serial_number=row.serial_number,
                management_ip=row.management_ip,
                status=row.status or "",
            )
            for row in devices
        ),
        (HostAlias(hostname=row.hostname, device_id=row.device_id) for row in aliases),
    )


def find_handled(engine: Engine, keys: Collection[MessageKey]) -> dict[MessageKey, LedgerEntry]:
    """The ledger entries of those of `keys` already handled, in one query."""
    if not keys:
        return {}
    with engine.connect() as conn:
        return {entry.key: entry for entry in _entries(conn, keys)}


def record_outcomes(
    engine: Engine,
    mailbox: str,
    messages: Sequence[TriagedMessage],
    *,
    storm_window: timedelta,
) -> list[Recorded]:
    """Store each message's ledger row with its alerts or review record; one result per message.

    The messages must have distinct keys (the caller files copies by the first one's outcome).
    """
    if len({message.key for message in messages}) != len(messages):
        raise ValueError("each message may be recorded only once per call")
    if not messages:
        return []
    try:
        with engine.begin() as conn:
            return _record(conn, mailbox, messages, storm_window)
    except (DataError, IntegrityError) as exc:
        if len(messages) > 1:
            _log.warning(
                "Mail batch could not be stored as a whole; storing its messages one by one",
                messages=len(messages),
                error=_database_error(exc),
            )
            return [
                recorded
                for message in messages
                for recorded in record_outcomes(
                    engine, mailbox, [message], storm_window=storm_window
                )
            ]
        (message,) = messages
        if message.review is not None and message.review.reason == "store_failed":
            raise
        fallback = _store_failure(message, exc)
        _log.error(
            "Message could not be stored as triaged; keeping it for review",
            messageKey=message.key.message_key,
            uid=message.identity.uid,
            error=fallback.review.detail if fallback.review else None,
        )
        with engine.begin() as conn:
            return _record(conn, mailbox, [fallback], storm_window)


def mark_filed(engine: Engine, ledger_ids: Iterable[int]) -> None:
    """Note that these messages are filed in the mailbox (the first filing time is kept)."""
    ids = sorted(set(ledger_ids))
    if not ids:
        return
    with engine.begin() as conn:
        conn.execute(
            update(LEDGER)
            .where(LEDGER.c.id.in_(ids))
            .values(marked_at=func.coalesce(LEDGER.c.marked_at, func.now()))
        )


def unfiled(
    engine: Engine, mailbox: str, uidvalidity: int, limit: int = MAX_UNFILED_PER_RUN
) -> list[LedgerEntry]:
    """Messages of this mailbox committed but never filed (a run died between the two)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(*_ENTRY_COLUMNS)
            .where(
                LEDGER.c.mailbox == _mailbox_text(mailbox),
                LEDGER.c.uidvalidity == uidvalidity,
                LEDGER.c.marked_at.is_(None),
                LEDGER.c.uid.is_not(None),
            )
            .order_by(LEDGER.c.id)
            .limit(limit)
        ).all()
    return [_entry(row) for row in rows]


def prune_storms(engine: Engine, storm_window: timedelta) -> int:
    """Delete storm rows whose window closed more than STORM_RETENTION ago; returns how many."""
    with engine.begin() as conn:
        result = conn.execute(
            delete(STORMS).where(
                STORMS.c.first_seen_at < func.now() - (storm_window + STORM_RETENTION)
            )
        )
    return result.rowcount


# Retention. A ledger row is what keeps a message from becoming a second alert, so it may only
# go once the message can no longer come back unread: rows are deleted by `marked_at` (filed,
# i.e. moved out of the inbox or flagged \Seen), never while `marked_at` is NULL (committed but
# not filed: the message may still sit unread in the inbox, and the next run must find the row
# to file it without storing it again). The retention must still exceed the longest time after
# which the same message can reappear unread: a copy redelivered with the same Message-ID and
# bytes, or a filed message that someone marks unread and moves back. Past it, such a message
# is handled as new mail (the documented way to have a message processed again).
# A review record goes with its ledger row (ON DELETE CASCADE) or earlier by its own retention.
MAX_RETENTION_BATCHES = 20
"""Batches per table and run; a larger backlog is finished by the next runs (lock lease bound)."""

_PRUNE_LEDGER = text("""
DELETE FROM avian_workers.mail_ledger
WHERE id IN (
    SELECT id FROM avian_workers.mail_ledger
    WHERE marked_at < now() - make_interval(days => :days)
    ORDER BY marked_at
    LIMIT :batch_size
)
""")
_PRUNE_REVIEWS = text("""
DELETE FROM avian_workers.mail_review
WHERE id IN (
    SELECT id FROM avian_workers.mail_review
    WHERE created_at < now() - make_interval(days => :days)
    ORDER BY created_at
    LIMIT :batch_size
)
""")


def prune_ledger(engine: Engine, retention_days: int, *, batch_size: int) -> int:
    """Delete ledger rows filed more than `retention_days` ago, in batches; returns how many."""
    return _delete_in_batches(engine, _PRUNE_LEDGER, retention_days, batch_size)


def prune_reviews(engine: Engine, retention_days: int, *, batch_size: int) -> int:
    """Delete review records created more than `retention_days` ago, in batches; how many."""
    return _delete_in_batches(engine, _PRUNE_REVIEWS, retention_days, batch_size)


def _delete_in_batches(engine: Engine, statement: Any, days: int, batch_size: int) -> int:
    if days < 1 or batch_size < 1:
        raise ValueError("retention days and batch size must be at least 1")
    deleted = 0
    for _ in range(MAX_RETENTION_BATCHES):
        with engine.begin() as conn:
            count = conn.execute(statement, {"days": days, "batch_size": batch_size}).rowcount
        deleted += count
        if count < batch_size:
            break
    return deleted


# --- one transaction --------------------------------------------------------------------------


def _record(
    conn: Connection, mailbox: str, messages: Sequence[TriagedMessage], storm_window: timedelta
) -> list[Recorded]:
    window_keys = sorted(
        {key for m in messages for alert in m.alerts for key in _window_keys(alert, storm_window)}
    )
    _lock_windows(conn, window_keys)
    ledger_ids = _claim(conn, mailbox, messages)
    results: dict[MessageKey, Recorded] = {}
    lost = [m for m in messages if m.key not in ledger_ids]
    if lost:
        existing = {entry.key: entry for entry in _entries(conn, [m.key for m in lost])}
        for message in lost:
            entry = existing[message.key]
            results[message.key] = Recorded(
                key=message.key,
                uid=message.identity.uid,
                ledger_id=entry.ledger_id,
                outcome=entry.outcome,
                stored_here=False,
            )
    writes = _Writes(storms=_storms(conn, window_keys), window=storm_window)
    for message in messages:
        if message.key in ledger_ids:
            results[message.key] = writes.add(message, ledger_ids[message.key])
    writes.execute(conn)
    return [results[message.key] for message in messages]


def _window_keys(alert: DeviceAlert, window: timedelta) -> tuple[str, ...]:
    """Keys of the windows `alert` may repeat: its own slot's and the two beside it."""
    if window <= timedelta(0):
        return ()
    slot = _slot(alert.occurred_at, window)
    return tuple(_window_key(alert.fingerprint, s) for s in (slot - 1, slot, slot + 1))


def _slot(moment: datetime, window: timedelta) -> int:
    return int(moment.timestamp() // window.total_seconds())


def _window_key(fingerprint: str, slot: int) -> str:
    return hashlib.sha256(f"{fingerprint}:{slot}".encode()).hexdigest()


def _lock_windows(conn: Connection, window_keys: Sequence[str]) -> None:
    keys = sorted({_lock_key(window_key) for window_key in window_keys})
    if keys:
        conn.execute(
            text(
                "SELECT pg_advisory_xact_lock(:namespace, k) "
                "FROM unnest(CAST(:keys AS integer[])) WITH ORDINALITY AS t(k, n) ORDER BY n"
            ),
            {"namespace": _STORM_LOCK_NAMESPACE, "keys": keys},
        )


def _lock_key(window_key: str) -> int:
    """A signed 32-bit key from the window key's hex digest (a collision only serialises)."""
    value = int(window_key[:8], 16)
    return value - (1 << 32) if value >= 1 << 31 else value


def _claim(
    conn: Connection, mailbox: str, messages: Sequence[TriagedMessage]
) -> dict[MessageKey, int]:
    """Insert ledger rows (sorted, so concurrent claims lock in one order); the ones now ours."""
    rows = [
        {
            "message_key": m.key.message_key,
            "raw_sha256": m.key.raw_sha256,
            "mailbox": _mailbox_text(mailbox),
            "uidvalidity": m.identity.uidvalidity,
            "uid": m.identity.uid,
            # Provisional; the final outcome is written in the same transaction.
            "outcome": "alert" if m.alerts else "review",
            "alert_count": 0,
        }
        for m in sorted(messages, key=lambda m: m.key)
    ]
    stmt = (
        pg_insert(LEDGER)
        .on_conflict_do_nothing(index_elements=[LEDGER.c.message_key, LEDGER.c.raw_sha256])
        .returning(LEDGER.c.id, LEDGER.c.message_key, LEDGER.c.raw_sha256)
    )
    claimed = conn.execute(stmt, rows).all()
    return {MessageKey(row.message_key, row.raw_sha256): row.id for row in claimed}


_ENTRY_COLUMNS = (
    LEDGER.c.id,
    LEDGER.c.message_key,
    LEDGER.c.raw_sha256,
    LEDGER.c.outcome,
    LEDGER.c.uid,
    LEDGER.c.marked_at,
)


# The keys travel as two arrays, so the statement's text is the same for every batch: an IN
# list of pairs is a new statement per batch size that the driver parses anew (10 ms a batch).
_ENTRIES_BY_KEY = text(
    "SELECT l.id, l.message_key, l.raw_sha256, l.outcome, l.uid, l.marked_at"
    " FROM avian_workers.mail_ledger AS l"
    " JOIN unnest(CAST(:message_keys AS text[]), CAST(:hashes AS text[])) AS k(message_key, sha)"
    " ON l.message_key = k.message_key AND l.raw_sha256 = k.sha"
)


def _entries(conn: Connection, keys: Collection[MessageKey]) -> list[LedgerEntry]:
    unique = sorted(set(keys))
    rows = conn.execute(
        _ENTRIES_BY_KEY,
        {
            "message_keys": [key.message_key for key in unique],
            "hashes": [key.raw_sha256 for key in unique],
        },
    ).all()
    return [_entry(row) for row in rows]


def _entry(row: Any) -> LedgerEntry:
    outcome = row.outcome
    if outcome not in get_args(Outcome):
        raise ValueError(f"ledger row {row.id} has unknown outcome {outcome!r}")
    return LedgerEntry(
        ledger_id=row.id,
        key=MessageKey(row.message_key, row.raw_sha256),
        outcome=cast("Outcome", outcome),
        uid=row.uid,
        marked_at=row.marked_at,
    )


@dataclass(slots=True)
class _Storm:
    alert_id: uuid.UUID
    first_seen_at: datetime
    last_seen_at: datetime
    occurrences: int
    changed: bool = False


def _storms(conn: Connection, window_keys: Sequence[str]) -> dict[str, _Storm]:
    """The open windows under these keys (the column is named `fingerprint`; it holds window keys)."""
    if not window_keys:
        return {}
    rows = conn.execute(
        select(STORMS)
        .where(STORMS.c.fingerprint.in_(window_keys))
        .order_by(STORMS.c.fingerprint)
        .with_for_update()
    ).all()
    return {
        row.fingerprint: _Storm(row.alert_id, row.first_seen_at, row.last_seen_at, row.occurrences)
        for row in rows
    }


@dataclass(slots=True)
class _Writes:
    """Rows one transaction writes, gathered per message in order, executed in bulk."""

    storms: dict[str, _Storm]
    window: timedelta
    new_alerts: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)
    folded_into_stored: dict[uuid.UUID, _Storm] = field(default_factory=dict)
    reviews: list[dict[str, Any]] = field(default_factory=list)
    ledger_updates: list[dict[str, Any]] = field(default_factory=list)

    def add(self, message: TriagedMessage, ledger_id: int) -> Recorded:
        created = folded = 0
        for alert in message.alerts:
            if self._fold(alert):
                folded += 1
            else:
                self._insert(alert, ledger_id, message.received_at)
                created += 1
        outcome: Outcome = "alert" if created else "suppressed" if folded else "review"
        review = message.review
        if review is not None:
            self.reviews.append(_review_row(message, review, ledger_id))
        self.ledger_updates.append(
            {
                "b_id": ledger_id,
                "b_outcome": outcome,
                "b_alert_count": created + folded,
                "b_detail": {
                    "alerts_created": created,
                    "occurrences_added": folded,
                    **({"review_reason": review.reason} if review else {}),
                },
            }
        )
        return Recorded(
            key=message.key,
            uid=message.identity.uid,
            ledger_id=ledger_id,
            outcome=outcome,
            alerts_created=created,
            occurrences_added=folded,
            review_reason=review.reason if review else None,
        )

    def _fold(self, alert: DeviceAlert) -> bool:
        """Count `alert` as a repeat of an open window that covers it (the earliest such)."""
        covering = [
            storm
            for key in _window_keys(alert, self.window)
            if (storm := self.storms.get(key)) is not None
            and abs(alert.occurred_at - storm.first_seen_at) < self.window
        ]
        if not covering:
            return False
        storm = min(covering, key=lambda candidate: candidate.first_seen_at)
        storm.occurrences += 1
        storm.last_seen_at = max(storm.last_seen_at, alert.occurred_at)
        storm.changed = True
        pending = self.new_alerts.get(storm.alert_id)
        if pending is not None:
            pending["metadata"]["occurrences"] = storm.occurrences
            pending["metadata"]["last_occurred_at"] = _iso(storm.last_seen_at)
        else:
            self.folded_into_stored[storm.alert_id] = storm
        return True

    def _insert(self, alert: DeviceAlert, ledger_id: int, received_at: datetime | None) -> None:
        alert_id = uuid.uuid4()
        self.new_alerts[alert_id] = _alert_row(alert_id, alert, ledger_id, received_at)
        if self.window > timedelta(0):
            # The slot is free: a window already in it would have covered this event.
            key = _window_key(alert.fingerprint, _slot(alert.occurred_at, self.window))
            self.storms[key] = _Storm(
                alert_id, alert.occurred_at, alert.occurred_at, 1, changed=True
            )

    def execute(self, conn: Connection) -> None:
        if self.new_alerts:
            conn.execute(insert(ALERTS), list(self.new_alerts.values()))
        if self.folded_into_stored:
            conn.execute(
                update(ALERTS)
                .where(ALERTS.c.id == bindparam("b_id"))
                .values(
                    metadata=func.coalesce(ALERTS.c.metadata, literal({}, JSONB)).op("||")(
                        bindparam("b_patch", type_=JSONB)
                    )
                ),
                [
                    {
                        "b_id": alert_id,
                        "b_patch": {
                            # The storm row is locked: its count is the truth, set not added.
                            "occurrences": storm.occurrences,
                            "last_occurred_at": _iso(storm.last_seen_at),
                        },
                    }
                    for alert_id, storm in self.folded_into_stored.items()
                ],
            )
        changed = [
            {
                "fingerprint": window_key,
                "alert_id": storm.alert_id,
                "first_seen_at": storm.first_seen_at,
                "last_seen_at": storm.last_seen_at,
                "occurrences": storm.occurrences,
            }
            for window_key, storm in sorted(self.storms.items())
            if storm.changed
        ]
        if changed:
            stmt = pg_insert(STORMS)
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[STORMS.c.fingerprint],
                    set_={
                        name: stmt.excluded[name]
                        for name in ("alert_id", "first_seen_at", "last_seen_at", "occurrences")
                    },
                ),
                changed,
            )
        if self.reviews:
            conn.execute(insert(REVIEW), self.reviews)
        if self.ledger_updates:
            conn.execute(
                update(LEDGER)
                .where(LEDGER.c.id == bindparam("b_id"))
                .values(
                    outcome=bindparam("b_outcome"),
                    alert_count=bindparam("b_alert_count"),
                    detail=bindparam("b_detail", type_=JSONB),
                ),
                self.ledger_updates,
            )


def _alert_row(
    alert_id: uuid.UUID, alert: DeviceAlert, ledger_id: int, received_at: datetime | None
) -> dict[str, Any]:
    parsed = alert.alert
    occurred_at = _iso(alert.occurred_at)
    metadata: dict[str, Any] = {
        **parsed.metadata,
        "occurred_at": occurred_at,
        "last_occurred_at": occurred_at,
        "occurrences": 1,
        "fingerprint": alert.fingerprint,
        "matched_by": alert.matched_by,
        "ledger_id": ledger_id,
    }
    if alert.occurred_at_source != "parsed":
        metadata["occurred_at_source"] = alert.occurred_at_source
    if received_at is not None:
        metadata["received_at"] = _iso(received_at)
    if len(alert.candidates) > 1:
        metadata["device_candidates"] = [str(candidate) for candidate in alert.candidates]
    return {
        "id": alert_id,
        "tenant_id": alert.device.tenant_id,
        "device_id": alert.device.device_id,
        "alert_type": parsed.alert_type,
        "severity": parsed.severity,
        "message": parsed.message,
        "source": ALERT_SOURCE,
        "metadata": metadata,
    }


def _review_row(message: TriagedMessage, review: Review, ledger_id: int) -> dict[str, Any]:
    identity = message.identity
    return {
        "ledger_id": ledger_id,
        "reason": review.reason,
        "detail": review.detail,
        "subject": identity.subject,
        "sender": identity.sender,
        "message_id": identity.message_id,
        "parsed": [parsed_alert_json(alert) for alert in review.unmatched] or None,
        "raw": message.raw,
    }


def _store_failure(message: TriagedMessage, error: DataError | IntegrityError) -> TriagedMessage:
    """The message as a review record only, with every event it held, and why."""
    events = tuple(alert.alert for alert in message.alerts)
    if message.review is not None:
        events += message.review.unmatched
    return TriagedMessage(
        identity=message.identity,
        raw=message.raw,
        received_at=message.received_at,
        alerts=(),
        review=Review("store_failed", _database_error(error)[:2000], events),
    )


def _database_error(error: DataError | IntegrityError) -> str:
    """The database's own words (never the statement or its parameters: they carry mail)."""
    return " ".join(str(error.orig).split()) if error.orig is not None else type(error).__name__


def _mailbox_text(mailbox: str) -> str:
    return mailbox[:_MAILBOX_CHARS]


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
