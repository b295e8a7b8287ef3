"""What one fetched message becomes: alerts for known firewalls, or a review record and why.

Pure functions of the raw bytes, the mailbox identity of the message and the device directory;
no I/O. `identify` gives the ledger key before anything is parsed, so a message already handled
is never parsed again. `triage` never raises for a message, whatever its bytes: a parse error or
an unexpected exception becomes a review outcome that names the reason, so one odd message can
never fail its batch.

Decisions worth knowing:
- Ledger key: the Message-ID header, or `no-message-id` when there is none, together with the
  SHA-256 of the raw bytes. A copy of a handled message (same Message-ID, or none, and the same
  bytes) is therefore never turned into a second alert, whatever UID it comes back under: a
  mailbox rebuilt with a new UIDVALIDITY renumbers every message it still holds.
- Event time: the parser's (body or Date header), else the server's INTERNALDATE (receipt),
  else the processing time; `metadata["occurred_at_source"]` says which.
- Storm fingerprint: device, alert type, severity and the normalised message
  (`match.alert_fingerprint`), plus the source and destination IP addresses and the labelled
  fields that tell events apart (signature, virus, file hash, user...) when the mail states
  them: two attackers, or two attacks between the same hosts, are two events, never one.
- A mail whose events partly match no device keeps the matched ones as alerts and the rest in
  a review record (reason `unknown_device`) with the parsed events, so nothing is dropped.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any, Literal
from uuid import UUID

from avian_workers.mail._text import header_text, storable
from avian_workers.mail.match import DeviceDirectory, KnownDevice, MatchedBy, alert_fingerprint
from avian_workers.mail.parse import MailParseError, ParsedAlert, parse_alert_email

__all__ = [
    "NO_MESSAGE_ID_KEY",
    "REVIEW_REASONS",
    "DeviceAlert",
    "MessageIdentity",
    "MessageKey",
    "Review",
    "ReviewReason",
    "TriagedMessage",
    "identify",
    "parsed_alert_json",
    "triage",
]

ReviewReason = Literal[
    "not_alert", "unparseable", "processing_error", "unknown_device", "store_failed"
]
"""Why mail is kept for review; `store_failed` is given by the store, never by `triage`."""
REVIEW_REASONS: tuple[ReviewReason, ...] = (
    "not_alert",
    "unparseable",
    "processing_error",
    "unknown_device",
    "store_failed",
)

OccurredAtSource = Literal["parsed", "received_at", "processed_at"]

_MAX_HEADER_CHARS = 998  # RFC 5322 line limit, as the parser keeps them
_MAX_KEY_BYTES = 2000
"""Longest Message-ID used as the ledger key as it is. The key and the raw bytes' hash share a
unique index whose entries PostgreSQL caps at 2,704 bytes, and 998 characters of an encoded
non-ASCII Message-ID come to about 3,000: a longer one is keyed by its hash instead."""
_HASHED_KEY_PREFIX = "message-id-sha256:"
NO_MESSAGE_ID_KEY = "no-message-id"
"""The ledger key of a message without a Message-ID: its bytes' hash alone tells it apart. Not
its UID, which names a different message after the mailbox's UIDVALIDITY changes."""
_MAX_DETAIL_CHARS = 2000
_HEADER_PARSER = BytesHeaderParser(policy=compat32)


@dataclass(frozen=True, slots=True, order=True)
class MessageKey:
    """The ledger key of a message: its Message-ID (or NO_MESSAGE_ID_KEY) and its bytes' hash."""

    message_key: str
    raw_sha256: str


@dataclass(frozen=True, slots=True)
class MessageIdentity:
    """Who a fetched message is: its ledger key, where it sits, and what its headers say."""

    key: MessageKey
    uidvalidity: int
    uid: int
    message_id: str | None
    subject: str | None
    sender: str | None


@dataclass(frozen=True, slots=True)
class DeviceAlert:
    """A parsed alert matched to a firewall, with the time and fingerprint storms are kept by."""

    alert: ParsedAlert
    device: KnownDevice
    matched_by: MatchedBy
    candidates: tuple[UUID, ...]
    fingerprint: str
    occurred_at: datetime  # aware, UTC
    occurred_at_source: OccurredAtSource


@dataclass(frozen=True, slots=True)
class Review:
    """Why (part of) a message is kept for an operator, with the events no device matched."""

    reason: ReviewReason
    detail: str
    unmatched: tuple[ParsedAlert, ...] = ()


@dataclass(frozen=True, slots=True)
class TriagedMessage:
    """One message decided: alerts to store, a review record to keep, or both."""

    identity: MessageIdentity
    raw: bytes
    received_at: datetime | None
    alerts: tuple[DeviceAlert, ...]
    review: Review | None

    def __post_init__(self) -> None:
        if not self.alerts and self.review is None:
            raise ValueError("a triaged message has alerts, a review record, or both")

    @property
    def key(self) -> MessageKey:
        return self.identity.key


def identify(raw: bytes, *, uidvalidity: int, uid: int) -> MessageIdentity:
    """The ledger key and header facts of a message, from its header section only."""
    message_id = subject = sender = None
    try:
        headers = _HEADER_PARSER.parsebytes(_header_section(raw), headersonly=True)
        message_id = _header(headers.get("Message-ID"))
        subject = _header(headers.get("Subject"))
        sender = _header(headers.get("From"))
    except Exception:  # noqa: S110 - unreadable headers: the bytes' hash names the message instead
        pass
    key = _ledger_key(message_id) if message_id else NO_MESSAGE_ID_KEY
    return MessageIdentity(
        key=MessageKey(key, hashlib.sha256(raw).hexdigest()),
        uidvalidity=uidvalidity,
        uid=uid,
        message_id=message_id,
        subject=subject,
        sender=sender,
    )


def _ledger_key(message_id: str) -> str:
    """The Message-ID, or its hash when it is too long for the ledger's unique index."""
    encoded = message_id.encode("utf-8", "surrogatepass")
    if len(encoded) <= _MAX_KEY_BYTES:
        return message_id
    return _HASHED_KEY_PREFIX + hashlib.sha256(encoded).hexdigest()


# Every way an empty line can follow a line ending (CRLF, LF or a bare CR).
_BLANK_LINES = (b"\r\n\r\n", b"\n\n", b"\r\r", b"\n\r\n", b"\r\n\n", b"\n\r")


def _header_section(raw: bytes) -> bytes:
    """`raw` up to and including its first empty line: everything a header-only parse reads.

    The header section ends at the first empty line at the latest, so the parser sees the same
    header lines as in the whole message, without reading the body line by line.
    """
    ends = [found + len(blank) for blank in _BLANK_LINES if (found := raw.find(blank)) >= 0]
    return raw[: min(ends)] if ends else raw


def triage(
    identity: MessageIdentity,
    raw: bytes,
    *,
    received_at: datetime | None,
    directory: DeviceDirectory,
    now: datetime,
) -> TriagedMessage:
    """Parse and match one message; every failure becomes a review outcome, never an exception."""

    def review(reason: ReviewReason, detail: str) -> TriagedMessage:
        return TriagedMessage(identity, raw, received_at, (), Review(reason, _clip(detail)))

    try:
        parsed = parse_alert_email(raw)
    except MailParseError as exc:
        return review("unparseable", str(exc))
    except Exception as exc:  # a parser bug must not cost the batch; the mail is kept
        return review("processing_error", f"parser raised {type(exc).__name__}: {exc}")
    if not parsed.alerts:
        return review("not_alert", parsed.not_alert_reason or "no alert found")
    try:
        matched, unmatched, across_tenants = _match(
            parsed.alerts, directory, received_at=received_at, now=now
        )
    except Exception as exc:
        return review("processing_error", f"matching raised {type(exc).__name__}: {exc}")
    return TriagedMessage(
        identity,
        raw,
        received_at,
        matched,
        Review("unknown_device", _unmatched_detail(unmatched, across_tenants), unmatched)
        if unmatched
        else None,
    )


def parsed_alert_json(alert: ParsedAlert) -> dict[str, Any]:
    """A parsed alert as JSON, for review records of events no device matched."""
    return {
        "alert_type": alert.alert_type,
        "severity": alert.severity,
        "occurred_at": _iso(alert.occurred_at) if alert.occurred_at else None,
        "serial_number": alert.serial_number,
        "management_ip": alert.management_ip,
        "hostname": alert.hostname,
        "message": alert.message,
        "metadata": alert.metadata,
    }


def _match(
    alerts: tuple[ParsedAlert, ...],
    directory: DeviceDirectory,
    *,
    received_at: datetime | None,
    now: datetime,
) -> tuple[tuple[DeviceAlert, ...], tuple[ParsedAlert, ...], int]:
    """The matched events, the unmatched ones, and how many of those matched several tenants."""
    matched: list[DeviceAlert] = []
    unmatched: list[ParsedAlert] = []
    across_tenants = 0
    for alert in alerts:
        found = directory.match(alert)
        if found.device is None or found.matched_by is None:
            unmatched.append(alert)
            across_tenants += found.across_tenants
            continue
        occurred_at, source = _event_time(alert, received_at, now)
        matched.append(
            DeviceAlert(
                alert=alert,
                device=found.device,
                matched_by=found.matched_by,
                candidates=found.candidates,
                fingerprint=alert_fingerprint(
                    found.device.device_id, alert.alert_type, _fingerprint_text(alert)
                ),
                occurred_at=occurred_at,
                occurred_at_source=source,
            )
        )
    return tuple(matched), tuple(unmatched), across_tenants


def _event_time(
    alert: ParsedAlert, received_at: datetime | None, now: datetime
) -> tuple[datetime, OccurredAtSource]:
    if alert.occurred_at is not None:
        return alert.occurred_at, "parsed"
    if received_at is not None:
        return received_at, "received_at"
    return now, "processed_at"


_DISTINGUISHING_FIELDS = (
    # What tells one event from another of the same kind and subject; never a time, a port or
    # a counter, which change between repeats of the same event.
    "message", "msg", "note", "m", "sid", "event_id",
    "attack_signature", "signature", "signature_id", "virus", "virus_name", "threat",
    "threat_name", "malware_name", "file_hash", "sha256", "md5", "file_name", "filename", "url",
    "user", "username", "rule", "policy",
)  # fmt: skip


def _fingerprint_text(alert: ParsedAlert) -> str:
    """The message and severity, the endpoints' addresses (ports change per connection, so not
    those), and the labelled fields that tell events apart (an attack signature, a virus, a
    file hash, a user): a second attack between the same hosts, or an escalation from high to
    critical, is a new alert, not a repeat."""
    parts = [alert.message, f"severity={alert.severity}"]
    for name in ("src", "dst"):
        endpoint = alert.metadata.get(name)
        address = endpoint.get("ip") if isinstance(endpoint, dict) else None
        if address:
            parts.append(f"{name}={address}")
    fields = alert.metadata.get("fields")
    if isinstance(fields, dict):
        parts += [f"{name}={fields[name]}" for name in _DISTINGUISHING_FIELDS if fields.get(name)]
    return " ".join(parts)


def _unmatched_detail(unmatched: tuple[ParsedAlert, ...], across_tenants: int) -> str:
    first = unmatched[0]
    identifiers = ", ".join(
        f"{label} {value}"
        for label, value in (
            ("serial number", first.serial_number),
            ("management IP", first.management_ip),
            ("host name", first.hostname),
        )
        if value
    )
    stated = identifiers or "no device identifier"
    events = "1 event matches" if len(unmatched) == 1 else f"{len(unmatched)} events match"
    ambiguous = (
        f"; {across_tenants} of them match firewalls of more than one tenant equally well"
        if across_tenants
        else ""
    )
    return _clip(f"{events} no firewall device (first states {stated}){ambiguous}")


def _header(value: Any) -> str | None:
    text = header_text(value)
    return text[:_MAX_HEADER_CHARS] if text else None


def _clip(text: str) -> str:
    text = storable(text)
    return text if len(text) <= _MAX_DETAIL_CHARS else text[: _MAX_DETAIL_CHARS - 1] + "…"


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
