"""The email worker's PostgreSQL side: directory, ledger, alerts, storms and review records."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.header import Header
from typing import Any

import pytest
from sqlalchemy import Engine, delete, insert, text, update

from avian_workers.db.models import (
    AlertStorm,
    FirewallDevice,
    FirewallHostAlias,
    MailLedgerEntry,
    MailReviewItem,
)
from avian_workers.mail.match import DeviceDirectory
from avian_workers.mail.parse import parse_alert_email
from avian_workers.mail.store import (
    Recorded,
    find_handled,
    load_device_directory,
    mark_filed,
    prune_ledger,
    prune_reviews,
    prune_storms,
    record_outcomes,
    unfiled,
)
from avian_workers.mail.triage import NO_MESSAGE_ID_KEY, TriagedMessage
from tests.avian_workers.mail.emails import fixture, make_mail, seed
from tests.avian_workers.mail.platform import (
    HQ_SERIAL,
    Firewalls,
    add_firewalls,
    iso,
    ledger,
    stored_alerts,
    stored_reviews,
    storms,
    triaged,
)

MAILBOX = "alerts@imap.example.net:993/INBOX"
WINDOW = timedelta(minutes=15)


@pytest.fixture
def firewalls(db: Engine) -> Firewalls:
    return add_firewalls(db)


@pytest.fixture
def directory(db: Engine, firewalls: Firewalls) -> DeviceDirectory:
    return load_device_directory(db)


def ips_mail(
    number: int,
    *,
    minute: int = 0,
    serial: str = HQ_SERIAL,
    source_ip: str = "203.0.113.45",
    subject: str = "IPS Alert: SQL Injection Attempt blocked",
) -> bytes:
    """An IPS alert at 10:<minute> UTC on 9 January 2025, with a Message-ID of its own."""
    body = (
        "Severity: High\n"
        f"Timestamp: 2025-01-09 10:{minute:02d}:00 UTC\n"
        f"Serial Number: {serial}\n"
        f"Source IP: {source_ip}\n"
    )
    return make_mail(body, subject=subject, message_id=f"<ips-{number}@fw.example.net>")


def at_minute(minute: int) -> datetime:
    return datetime(2025, 1, 9, 10, minute, tzinfo=UTC)


def record(engine: Engine, *messages: TriagedMessage, window: timedelta = WINDOW) -> list[Recorded]:
    return record_outcomes(engine, MAILBOX, list(messages), storm_window=window)


def record_each(
    engine: Engine, directory: DeviceDirectory, raws: list[bytes], window: timedelta = WINDOW
) -> list[Recorded]:
    """Each mail in a transaction of its own, as separate batches would be."""
    return [
        recorded
        for number, raw in enumerate(raws, start=1)
        for recorded in record(engine, triaged(raw, directory, uid=number), window=window)
    ]


# --- device directory -------------------------------------------------------------------------


def test_directory_holds_every_firewall_and_matches_host_aliases(
    db: Engine, firewalls: Firewalls
) -> None:
    with db.begin() as conn:
        conn.execute(
            insert(FirewallHostAlias).values(
                hostname="fw-hq-primary", device_id=firewalls.hq.device_id
            )
        )
    body = "Severity: High\nHostname: FW-HQ-PRIMARY\n"
    (alert,) = parse_alert_email(make_mail(body, subject="IPS Alert")).alerts

    found = load_device_directory(db).match(alert)

    assert found.device is not None
    assert (found.device.device_id, found.device.tenant_id) == (
        firewalls.hq.device_id,
        firewalls.hq.tenant_id,
    )
    assert found.matched_by == "hostname"


# --- alerts and review records ----------------------------------------------------------------


def test_matched_alert_becomes_an_email_alert_of_its_devices_tenant(
    db: Engine, firewalls: Firewalls, directory: DeviceDirectory
) -> None:
    before = datetime.now(UTC).replace(tzinfo=None)
    received = datetime(2025, 1, 9, 10, 0, 3, tzinfo=UTC)

    (recorded,) = record(db, triaged(ips_mail(1), directory, received_at=received))

    (alert,) = stored_alerts(db)
    assert recorded.outcome == "alert"
    assert (recorded.alerts_created, recorded.occurrences_added) == (1, 0)
    assert (alert["tenant_id"], alert["device_id"]) == (
        firewalls.hq.tenant_id,
        firewalls.hq.device_id,
    )
    assert (alert["alert_type"], alert["severity"], alert["source"]) == (
        "ips_alert",
        "high",
        "email",
    )
    assert alert["message"] == "IPS Alert: SQL Injection Attempt blocked"
    assert alert["acknowledged"] is False
    metadata = alert["metadata"]
    assert metadata["occurred_at"] == "2025-01-09T10:00:00Z"
    assert metadata["received_at"] == "2025-01-09T10:00:03Z"
    assert metadata["occurrences"] == 1
    assert metadata["matched_by"] == "serial_number"
    assert metadata["ledger_id"] == recorded.ledger_id
    assert metadata["message_id"] == "<ips-1@fw.example.net>"
    assert metadata["src"] == {"ip": "203.0.113.45"}
    # created_at is the platform's insertion time (naive UTC), not the event's time.
    assert alert["created_at"].tzinfo is None
    assert alert["created_at"] >= before


def test_ledger_row_records_the_outcome_in_the_same_commit(
    db: Engine, directory: DeviceDirectory
) -> None:
    message = triaged(ips_mail(1), directory, uid=7, uidvalidity=42)

    (recorded,) = record(db, message)

    (row,) = ledger(db)
    assert (row["message_key"], row["raw_sha256"]) == (
        "<ips-1@fw.example.net>",
        message.key.raw_sha256,
    )
    assert (row["mailbox"], row["uidvalidity"], row["uid"]) == (MAILBOX, 42, 7)
    assert (row["outcome"], row["alert_count"], row["marked_at"]) == ("alert", 1, None)
    assert row["id"] == recorded.ledger_id


def test_mail_of_an_unknown_firewall_is_kept_for_review_with_its_events_and_raw_bytes(
    db: Engine, directory: DeviceDirectory
) -> None:
    raw = seed("unknown-device-01.eml")

    (recorded,) = record(db, triaged(raw, directory))

    assert stored_alerts(db) == []
    (review,) = stored_reviews(db)
    assert (recorded.outcome, recorded.review_reason) == ("review", "unknown_device")
    assert review["reason"] == "unknown_device"
    assert "UNKNOWN-SERIAL-999" in review["detail"]
    assert review["subject"] == "IPS Alert: Intrusion Detected on Unknown Device"
    assert review["sender"] == "alerts@sonicwall.example.com"
    assert review["message_id"] == "<unknown-001@sonicwall.example.com>"
    assert review["raw"] == raw
    (event,) = review["parsed"]
    assert (event["serial_number"], event["alert_type"], event["occurred_at"]) == (
        "UNKNOWN-SERIAL-999",
        "ips_alert",
        "2025-12-08T22:22:10Z",
    )
    assert review["ledger_id"] == recorded.ledger_id
    assert review["resolved_at"] is None


def test_mail_that_is_no_alert_is_kept_for_review_saying_so(
    db: Engine, directory: DeviceDirectory
) -> None:
    (recorded,) = record(db, triaged(fixture("non-alert-maintenance.eml"), directory))

    (review,) = stored_reviews(db)
    assert (recorded.outcome, review["reason"], review["parsed"]) == ("review", "not_alert", None)
    assert review["detail"]


def test_digest_with_one_unknown_firewall_stores_the_rest_and_keeps_that_event_for_review(
    db: Engine, firewalls: Firewalls
) -> None:
    with db.begin() as conn:  # the branch firewall of the digest's last row is not known
        conn.execute(delete(FirewallDevice).where(FirewallDevice.id == firewalls.branch.device_id))
    directory = load_device_directory(db)

    (recorded,) = record(db, triaged(fixture("csv-digest-four-events.eml"), directory))

    assert (recorded.outcome, recorded.alerts_created) == ("alert", 3)
    assert {alert["device_id"] for alert in stored_alerts(db)} == {firewalls.hq.device_id}
    (review,) = stored_reviews(db)
    assert review["reason"] == "unknown_device"
    assert [event["serial_number"] for event in review["parsed"]] == ["0040103C0FFE"]
    (row,) = ledger(db)
    assert row["detail"] == {
        "alerts_created": 3,
        "occurrences_added": 0,
        "review_reason": "unknown_device",
    }


# --- the ledger -------------------------------------------------------------------------------


def test_find_handled_returns_exactly_the_messages_in_the_ledger(
    db: Engine, directory: DeviceDirectory
) -> None:
    first, second = triaged(ips_mail(1), directory), triaged(ips_mail(2), directory)
    (recorded,) = record(db, first)

    handled = find_handled(db, {first.key, second.key})

    assert list(handled) == [first.key]
    assert handled[first.key].ledger_id == recorded.ledger_id
    assert handled[first.key].outcome == "alert"


def test_a_message_recorded_again_is_not_stored_twice(
    db: Engine, directory: DeviceDirectory
) -> None:
    message = triaged(ips_mail(1), directory)
    (first,) = record(db, message)

    (again,) = record(db, message)

    assert again.stored_here is False
    assert (again.ledger_id, again.outcome) == (first.ledger_id, "alert")
    assert len(stored_alerts(db)) == 1
    assert len(ledger(db)) == 1


def test_same_message_id_with_other_bytes_is_a_different_ledger_entry(
    db: Engine, directory: DeviceDirectory
) -> None:
    # A relay that rewrites a message changes its bytes; the hash keeps both apart.
    original = ips_mail(1)
    rewritten = original.replace(b"Severity: High", b"Severity: Critical")

    record(db, triaged(original, directory, uid=1), triaged(rewritten, directory, uid=2))

    assert len(ledger(db)) == 2


def test_message_without_message_id_is_found_again_under_a_new_uidvalidity(
    db: Engine, directory: DeviceDirectory
) -> None:
    # The mailbox was rebuilt: the unread copy of a handled message comes back renumbered.
    raw = fixture("no-message-id.eml")
    first = triaged(raw, directory, uid=17, uidvalidity=99)
    record(db, first)
    renumbered = triaged(raw, directory, uid=3, uidvalidity=100)

    handled = find_handled(db, [renumbered.key])

    assert handled.keys() == {first.key}
    assert [row["message_key"] for row in ledger(db)] == [NO_MESSAGE_ID_KEY]


def test_messages_without_message_id_are_told_apart_by_their_bytes(
    db: Engine, directory: DeviceDirectory
) -> None:
    raw = fixture("no-message-id.eml")
    other = raw.replace(b"Subject: ", b"Subject: Second ", 1)
    assert other != raw

    record(db, triaged(raw, directory, uid=1), triaged(other, directory, uid=2))

    assert len(ledger(db)) == 2


def test_a_message_id_longer_than_the_ledger_index_takes_is_stored_and_found_again(
    db: Engine, directory: DeviceDirectory
) -> None:
    # 998 CJK characters that do not compress, about 3,000 bytes: as a key it would overflow
    # the unique index's entry and stop every later batch of the mailbox.
    ideographs = "".join(chr(0x4E00 + number * 7919 % 20_000) for number in range(998))
    message_id = Header(ideographs, "utf-8").encode()
    message = triaged(make_mail("Severity: High", message_id=message_id), directory)

    (first,) = record(db, message)
    (again,) = record(db, message)

    assert (first.stored_here, again.stored_here) == (True, False)
    assert find_handled(db, [message.key]).keys() == {message.key}
    assert len(ledger(db)) == 1


def test_concurrent_recording_of_one_message_stores_it_once(
    db: Engine, directory: DeviceDirectory
) -> None:
    message = triaged(ips_mail(1), directory)

    results = run_together(db, lambda: record(db, message), lambda: record(db, message))

    assert sorted(r[0].stored_here for r in results) == [False, True]
    assert len(stored_alerts(db)) == 1
    assert len(ledger(db)) == 1


def test_mark_filed_sets_marked_at_once_and_unfiled_lists_the_others(
    db: Engine, directory: DeviceDirectory
) -> None:
    first, second = record(
        db,
        triaged(ips_mail(1), directory, uid=1, uidvalidity=5),
        triaged(ips_mail(2), directory, uid=2, uidvalidity=5),
    )

    mark_filed(db, [first.ledger_id])
    (marked_at,) = [r["marked_at"] for r in ledger(db) if r["id"] == first.ledger_id]
    mark_filed(db, [first.ledger_id])

    assert marked_at is not None
    assert [r["marked_at"] for r in ledger(db) if r["id"] == first.ledger_id] == [marked_at]
    assert [(e.ledger_id, e.uid) for e in unfiled(db, MAILBOX, 5)] == [(second.ledger_id, 2)]
    assert unfiled(db, MAILBOX, 6) == []
    assert unfiled(db, "someone-else@imap.example.net:993/INBOX", 5) == []


# --- storm suppression ------------------------------------------------------------------------


def test_same_alert_three_times_within_the_window_is_one_row_with_three_occurrences(
    db: Engine, directory: DeviceDirectory
) -> None:
    results = record_each(
        db, directory, [ips_mail(1, minute=0), ips_mail(2, minute=5), ips_mail(3, minute=10)]
    )

    (alert,) = stored_alerts(db)
    assert [r.outcome for r in results] == ["alert", "suppressed", "suppressed"]
    assert alert["metadata"]["occurrences"] == 3
    assert alert["metadata"]["occurred_at"] == iso(at_minute(0))
    assert alert["metadata"]["last_occurred_at"] == iso(at_minute(10))
    (storm,) = storms(db)
    assert (storm["alert_id"], storm["occurrences"]) == (alert["id"], 3)
    assert (storm["first_seen_at"], storm["last_seen_at"]) == (at_minute(0), at_minute(10))
    assert [row["alert_count"] for row in ledger(db)] == [1, 1, 1]


def test_repeats_within_one_batch_fold_the_same_way(db: Engine, directory: DeviceDirectory) -> None:
    record(
        db,
        *(triaged(ips_mail(n, minute=n), directory, uid=n) for n in range(1, 4)),
    )

    (alert,) = stored_alerts(db)
    assert alert["metadata"]["occurrences"] == 3
    assert storms(db)[0]["occurrences"] == 3


def test_repeat_outside_the_window_is_a_new_row_that_opens_the_next_window(
    db: Engine, directory: DeviceDirectory
) -> None:
    results = record_each(
        db,
        directory,
        [ips_mail(1, minute=0), ips_mail(2, minute=15), ips_mail(3, minute=20)],
    )

    first, second = stored_alerts(db)
    assert [r.outcome for r in results] == ["alert", "alert", "suppressed"]
    assert (first["metadata"]["occurrences"], second["metadata"]["occurrences"]) == (1, 2)
    assert second["metadata"]["occurred_at"] == iso(at_minute(15))
    assert sorted((s["alert_id"], s["occurrences"]) for s in storms(db)) == sorted(
        [(first["id"], 1), (second["id"], 2)]
    )


def test_late_mail_within_the_window_of_the_first_event_still_folds(
    db: Engine, directory: DeviceDirectory
) -> None:
    record_each(db, directory, [ips_mail(1, minute=10), ips_mail(2, minute=2)])

    (alert,) = stored_alerts(db)
    assert alert["metadata"]["occurrences"] == 2
    assert alert["metadata"]["last_occurred_at"] == iso(at_minute(10))


def test_each_window_of_one_alert_counts_its_own_repeats_whatever_the_arrival_order(
    db: Engine, directory: DeviceDirectory
) -> None:
    # Copies of an old event arrive between repeats of a newer one.
    minutes = [40, 0, 45, 1, 50, 2]
    record_each(db, directory, [ips_mail(n, minute=m) for n, m in enumerate(minutes, start=1)])

    rows = {alert["metadata"]["occurred_at"]: alert for alert in stored_alerts(db)}
    assert {at: row["metadata"]["occurrences"] for at, row in rows.items()} == {
        iso(at_minute(40)): 3,
        iso(at_minute(0)): 3,
    }


@pytest.mark.parametrize(
    ("name", "other"),
    [
        ("another source address", {"source_ip": "198.51.100.77"}),
        ("another firewall", {"serial": "18B1690A2B3C"}),
        ("another alert type", {"subject": "Gateway AV Alert: SQL Injection Attempt blocked"}),
        ("another message", {"subject": "IPS Alert: XSS Attempt blocked"}),
    ],
)
def test_distinct_events_within_the_window_are_never_merged(
    db: Engine, directory: DeviceDirectory, name: str, other: dict[str, Any]
) -> None:
    record_each(db, directory, [ips_mail(1, minute=0), ips_mail(2, minute=1, **other)])

    alerts = stored_alerts(db)
    assert len(alerts) == 2, name
    assert [a["metadata"]["occurrences"] for a in alerts] == [1, 1]


def test_window_of_zero_turns_suppression_off(db: Engine, directory: DeviceDirectory) -> None:
    record_each(db, directory, [ips_mail(1), ips_mail(2)], window=timedelta(0))

    assert len(stored_alerts(db)) == 2


def test_concurrent_repeats_fold_into_one_row(db: Engine, directory: DeviceDirectory) -> None:
    first = triaged(ips_mail(1, minute=0), directory, uid=1)
    second = triaged(ips_mail(2, minute=1), directory, uid=2)

    run_together(db, lambda: record(db, first), lambda: record(db, second))

    (alert,) = stored_alerts(db)
    assert alert["metadata"]["occurrences"] == 2
    assert sorted(row["outcome"] for row in ledger(db)) == ["alert", "suppressed"]


def test_repeat_of_an_alert_the_platform_deleted_is_a_new_row(
    db: Engine, directory: DeviceDirectory
) -> None:
    record_each(db, directory, [ips_mail(1, minute=0)])
    with db.begin() as conn:
        conn.execute(text("DELETE FROM firewall_alerts"))

    record_each(db, directory, [ips_mail(2, minute=1)])

    (alert,) = stored_alerts(db)
    assert alert["metadata"]["occurrences"] == 1


def test_prune_forgets_only_windows_closed_more_than_a_day_ago(
    db: Engine, directory: DeviceDirectory
) -> None:
    record_each(db, directory, [ips_mail(1), ips_mail(2, subject="IPS Alert: XSS blocked")])
    old, recent = (storm["fingerprint"] for storm in storms(db))
    now = datetime.now(UTC)
    with db.begin() as conn:
        for fingerprint, first_seen in ((old, now - timedelta(days=2)), (recent, now)):
            conn.execute(
                update(AlertStorm)
                .where(AlertStorm.fingerprint == fingerprint)
                .values(first_seen_at=first_seen)
            )

    assert prune_storms(db, WINDOW) == 1
    assert [storm["fingerprint"] for storm in storms(db)] == [recent]


# --- retention ---------------------------------------------------------------------------------


def age_ledger(engine: Engine, ledger_id: int, *, days: int, filed: bool) -> None:
    """Make a ledger row (and its review record) `days` old; filed then, or never filed."""
    then = datetime.now(UTC) - timedelta(days=days)
    with engine.begin() as conn:
        conn.execute(
            update(MailLedgerEntry)
            .where(MailLedgerEntry.id == ledger_id)
            .values(processed_at=then, marked_at=then if filed else None)
        )
        conn.execute(
            update(MailReviewItem)
            .where(MailReviewItem.ledger_id == ledger_id)
            .values(created_at=then)
        )


def test_ledger_retention_deletes_rows_filed_before_it_and_keeps_younger_ones(
    db: Engine, directory: DeviceDirectory
) -> None:
    old, young = record_each(db, directory, [ips_mail(1), ips_mail(2, minute=40)])
    age_ledger(db, old.ledger_id, days=400, filed=True)
    age_ledger(db, young.ledger_id, days=300, filed=True)

    assert prune_ledger(db, 365, batch_size=1) == 1
    assert [row["id"] for row in ledger(db)] == [young.ledger_id]
    assert len(stored_alerts(db)) == 2  # alerts are the platform's; retention never touches them


def test_ledger_retention_keeps_an_old_row_never_filed_so_its_mail_is_not_stored_again(
    db: Engine, directory: DeviceDirectory
) -> None:
    (unfiled_row,) = record_each(db, directory, [ips_mail(1)])
    age_ledger(db, unfiled_row.ledger_id, days=1000, filed=False)

    assert prune_ledger(db, 365, batch_size=10) == 0
    again = record(db, triaged(ips_mail(1), directory, uid=7))
    assert [r.stored_here for r in again] == [False]
    assert len(stored_alerts(db)) == 1


def test_ledger_retention_deletes_in_batches_until_none_is_left(
    db: Engine, directory: DeviceDirectory
) -> None:
    recorded = record_each(db, directory, [ips_mail(n, minute=n) for n in range(5)])
    for entry in recorded:
        age_ledger(db, entry.ledger_id, days=400, filed=True)

    assert prune_ledger(db, 365, batch_size=2) == 5
    assert ledger(db) == []


def test_review_retention_deletes_old_review_records_and_keeps_their_ledger_rows(
    db: Engine, directory: DeviceDirectory
) -> None:
    old, young = record_each(
        db, directory, [seed("unknown-device-01.eml"), fixture("non-alert-maintenance.eml")]
    )
    age_ledger(db, old.ledger_id, days=100, filed=True)
    age_ledger(db, young.ledger_id, days=10, filed=True)

    assert prune_reviews(db, 90, batch_size=10) == 1
    assert [review["ledger_id"] for review in stored_reviews(db)] == [young.ledger_id]
    assert len(ledger(db)) == 2  # the ledger still keeps both from being stored again


def test_ledger_retention_takes_the_review_record_of_a_deleted_row_along(
    db: Engine, directory: DeviceDirectory
) -> None:
    (entry,) = record_each(db, directory, [seed("unknown-device-01.eml")])
    age_ledger(db, entry.ledger_id, days=400, filed=True)

    assert prune_ledger(db, 365, batch_size=10) == 1
    assert stored_reviews(db) == []


# --- what cannot be stored --------------------------------------------------------------------


def test_alert_for_a_firewall_deleted_since_the_directory_loaded_is_kept_for_review(
    db: Engine, firewalls: Firewalls, directory: DeviceDirectory
) -> None:
    montreal_alert = triaged(fixture("base64-wan-down.eml"), directory, uid=1)
    hq_alert = triaged(ips_mail(2), directory, uid=2)
    with db.begin() as conn:
        conn.execute(
            delete(FirewallDevice).where(FirewallDevice.id == firewalls.montreal.device_id)
        )

    results = record(db, montreal_alert, hq_alert)

    assert [(r.outcome, r.review_reason) for r in results] == [
        ("review", "store_failed"),
        ("alert", None),
    ]
    (review,) = stored_reviews(db)
    assert review["reason"] == "store_failed"
    assert "foreign key" in review["detail"]
    assert [event["serial_number"] for event in review["parsed"]] == ["18B1690A2B3C"]
    assert review["raw"] == montreal_alert.raw
    assert [alert["device_id"] for alert in stored_alerts(db)] == [firewalls.hq.device_id]


def test_messages_recorded_together_must_have_distinct_keys(
    db: Engine, directory: DeviceDirectory
) -> None:
    message = triaged(ips_mail(1), directory)

    with pytest.raises(ValueError, match="only once"):
        record(db, message, message)


def run_together(engine: Engine, *calls: Callable[[], Any]) -> list[Any]:
    """Start the calls at the same moment on threads; their results in call order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int, call: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=10)
            results[index] = call()
        except BaseException as exc:  # reported to the test below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return results
