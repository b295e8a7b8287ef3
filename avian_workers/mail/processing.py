"""Draining the alert mailbox: unseen mail to committed outcomes, then filing.

Per fetch batch (one `UID FETCH` of `BODY.PEEK[]`, so memory depends on the batch size, not
on the backlog):
1. look the batch up in the ledger (one query); a message already handled is only filed;
2. triage the others (pure, never raises: an odd message becomes a review outcome);
3. commit their outcomes in one transaction (store.record_outcomes);
4. file them: the processed folder for alerts and suppressed repeats, the review folder for
   review (`\\Seen` only on a server without MOVE);
5. note the filing in the ledger (`marked_at`).

Nothing is filed before its outcome is committed. A run that dies between 3 and 4 leaves the
message unread (or `\\Seen` but still in the inbox); the next run files it from the ledger and
never creates a second alert. That is also why every run starts by filing what an earlier run
committed but never filed: those messages may no longer be unseen.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from avian_workers.logs import get_logger
from avian_workers.mail import store
from avian_workers.mail.mailbox import FetchedMessage, Mailbox, MailboxConfig, MarkOutcome
from avian_workers.mail.match import DeviceDirectory
from avian_workers.mail.store import Outcome, Recorded
from avian_workers.mail.triage import MessageKey, TriagedMessage, identify, triage
from avian_workers.observability.progress import NO_PROGRESS, StepProgress

__all__ = ["MailboxReport", "mailbox_name", "process_mailbox"]

OUTCOMES: tuple[Outcome, ...] = ("alert", "suppressed", "review")

_log = get_logger(component="mail-processing")


def mailbox_name(config: MailboxConfig) -> str:
    """How the ledger and the lock name this mailbox: `user@host:port/inbox` (no secret)."""
    return f"{config.username}@{config.host}:{config.port}/{config.inbox_folder}"


@dataclass(frozen=True)
class MailboxReport:
    """What one pass over the mailbox did, in messages unless the name says otherwise."""

    mailbox: str
    unseen: int
    outcomes: dict[Outcome, int]
    """Messages recorded in this run by outcome."""
    already_handled: int
    """Unseen messages the ledger already held (a copy, or a run that died before filing)."""
    resumed_filing: int
    """Messages an earlier run committed but never filed, filed now."""
    alert_rows: int
    occurrences_added: int
    """Repeats folded into an existing alert's occurrence count instead of a new row."""
    review_reasons: dict[str, int]
    filing: MarkOutcome
    seconds: float

    @property
    def recorded(self) -> int:
        return sum(self.outcomes.values())

    def table_rows(self) -> list[dict[str, Any]]:
        """One row per outcome, for the run's table artifact."""
        rows: list[dict[str, Any]] = [
            {"outcome": outcome, "messages": self.outcomes.get(outcome, 0)} for outcome in OUTCOMES
        ]
        rows.append({"outcome": "already handled (filed only)", "messages": self.already_handled})
        rows.append({"outcome": "filing resumed", "messages": self.resumed_filing})
        return rows

    def totals(self) -> dict[str, Any]:
        return {
            "mailbox": self.mailbox,
            "unseen": self.unseen,
            **{f"messages_{outcome}": self.outcomes.get(outcome, 0) for outcome in OUTCOMES},
            "already_handled": self.already_handled,
            "resumed_filing": self.resumed_filing,
            "alert_rows_created": self.alert_rows,
            "occurrences_added": self.occurrences_added,
            "review_reasons": dict(self.review_reasons),
            "filing": self.filing,
        }


@dataclass
class _Tally:
    unseen: int = 0
    outcomes: Counter[Outcome] = field(default_factory=Counter)
    already_handled: int = 0
    resumed_filing: int = 0
    alert_rows: int = 0
    occurrences_added: int = 0
    review_reasons: Counter[str] = field(default_factory=Counter)

    def count(self, recorded: Recorded) -> None:
        if not recorded.stored_here:
            self.already_handled += 1
            return
        self.outcomes[recorded.outcome] += 1
        self.alert_rows += recorded.alerts_created
        self.occurrences_added += recorded.occurrences_added
        if recorded.review_reason is not None:
            self.review_reasons[recorded.review_reason] += 1


@dataclass(frozen=True, slots=True)
class _Filing:
    uid: int
    ledger_id: int
    outcome: Outcome


def process_mailbox(
    mailbox: Mailbox,
    engine: Engine,
    directory: DeviceDirectory,
    *,
    name: str,
    storm_window: timedelta,
    max_messages: int | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    progress: StepProgress = NO_PROGRESS,
) -> MailboxReport:
    """File what an earlier run left unfiled, then handle unseen mail batch by batch."""
    started = time.monotonic()
    run = _Pass(mailbox, engine, directory, name, storm_window)
    run.tally.resumed_filing = run.resume_filing()
    uids = mailbox.unseen_uids()
    if max_messages is not None:
        uids = uids[:max_messages]
    run.tally.unseen = len(uids)
    _log.info("Processing unseen mail", mailbox=name, unseen=len(uids))
    progress.expect(len(uids))
    for batch in mailbox.fetch_batches(uids):
        run.process_batch(batch, now=clock())
        progress.advance(len(batch))
    tally = run.tally
    return MailboxReport(
        mailbox=name,
        unseen=tally.unseen,
        outcomes=dict(tally.outcomes),
        already_handled=tally.already_handled,
        resumed_filing=tally.resumed_filing,
        alert_rows=tally.alert_rows,
        occurrences_added=tally.occurrences_added,
        review_reasons=dict(tally.review_reasons),
        filing=mailbox.filing,
        seconds=round(time.monotonic() - started, 3),
    )


@dataclass
class _Pass:
    """One pass over the mailbox: its connections, its settings and its counts."""

    mailbox: Mailbox
    engine: Engine
    directory: DeviceDirectory
    name: str
    storm_window: timedelta
    tally: _Tally = field(default_factory=_Tally)

    def resume_filing(self) -> int:
        pending = store.unfiled(self.engine, self.name, self.mailbox.uidvalidity)
        filings = [
            _Filing(entry.uid, entry.ledger_id, entry.outcome)
            for entry in pending
            if entry.uid is not None
        ]
        if filings:
            _log.warning(
                "Filing messages an earlier run committed but did not file",
                mailbox=self.name,
                messages=len(filings),
            )
            _file(self.mailbox, self.engine, filings)
        return len(filings)

    def process_batch(self, batch: Sequence[FetchedMessage], *, now: datetime) -> None:
        identities = [identify(m.raw, uidvalidity=m.uidvalidity, uid=m.uid) for m in batch]
        handled = store.find_handled(self.engine, {identity.key for identity in identities})
        filings: list[_Filing] = []
        to_record: dict[MessageKey, TriagedMessage] = {}
        copies: list[tuple[int, MessageKey]] = []  # a key twice in one batch: filed like the first
        for message, identity in zip(batch, identities, strict=True):
            entry = handled.get(identity.key)
            if entry is not None:
                filings.append(_Filing(message.uid, entry.ledger_id, entry.outcome))
                self.tally.already_handled += 1
            elif identity.key in to_record:
                copies.append((message.uid, identity.key))
                self.tally.already_handled += 1
            else:
                to_record[identity.key] = triage(
                    identity,
                    message.raw,
                    received_at=message.internal_date,
                    directory=self.directory,
                    now=now,
                )
        _log_ties(to_record.values())
        recorded = store.record_outcomes(
            self.engine, self.name, list(to_record.values()), storm_window=self.storm_window
        )
        by_key = {r.key: r for r in recorded}
        for r in recorded:
            self.tally.count(r)
            filings.append(_Filing(r.uid, r.ledger_id, r.outcome))
        for uid, key in copies:
            filings.append(_Filing(uid, by_key[key].ledger_id, by_key[key].outcome))
        _file(self.mailbox, self.engine, filings)
        stored_here = sum(1 for r in recorded if r.stored_here)
        _log.info(
            "Mail batch committed and filed",
            mailbox=self.name,
            messages=len(batch),
            recorded=stored_here,
            alreadyHandled=len(batch) - stored_here,
        )


def _file(mailbox: Mailbox, engine: Engine, filings: Sequence[_Filing]) -> None:
    """Move each message to the folder of its committed outcome, then note it in the ledger."""
    processed = [f.uid for f in filings if f.outcome != "review"]
    review = [f.uid for f in filings if f.outcome == "review"]
    if processed:
        mailbox.mark_processed(processed)
    if review:
        mailbox.mark_for_review(review)
    store.mark_filed(engine, [f.ledger_id for f in filings])


def _log_ties(messages: Iterable[TriagedMessage]) -> None:
    for message in messages:
        for alert in message.alerts:
            if len(alert.candidates) > 1:
                _log.warning(
                    "Alert matched several firewalls; chose the first by the tie rule",
                    messageKey=message.key.message_key,
                    matchedBy=alert.matched_by,
                    chosen=str(alert.device.device_id),
                    candidates=[str(candidate) for candidate in alert.candidates],
                )
