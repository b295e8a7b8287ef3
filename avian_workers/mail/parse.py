"""SonicWall alert mail to alerts: a pure function of the raw message bytes.

Understood layouts: "Key: Value" bodies (the seed samples), SonicOS log lines (`key=value`,
one event per line), HTML-only mail, multipart/alternative (plain text preferred unless blank),
quoted-printable and base64 bodies, any charset including wrong and unknown ones, and digests
with a CSV attachment (one alert per row).

Decisions worth knowing:
- `occurred_at` comes from the event's own time field, else the Date header, else None (the
  caller then uses the receipt time). A body time without a zone is read in the Date header's
  offset (the firewall writes both), or as UTC without a Date header; metadata records that.
- Severity: an explicit severity field wins, then a SonicWall priority (name or `pri=` level),
  else "info"; `metadata["severity_source"]` says which.
- Device identifiers are only ever taken from labelled values (`Serial Number:`, `sn=`,
  `Management IP:`, `fw=`, `Hostname:` ...), never guessed from the look of a token.
- Free-text mail is an alert only if it names an alert type or an alert word ("alert",
  "threat" ...); every log line and digest row is an event the firewall chose to send, so it is
  an alert, of the generic type when nothing more specific is named.
- A message too large or too complex to read completely raises MailParseError instead of being
  half read, so the caller keeps it for review and no event is silently lost.
"""

from __future__ import annotations

import email
import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, tzinfo
from email.message import Message
from email.policy import compat32
from typing import Any

from avian_workers.mail._classify import (
    ALERT_TYPES,
    DOWN_TYPES,
    GENERIC_ALERT_TYPE,
    Severity,
    link_recovery,
    mentions_alert,
    priority_severity,
    severity_word,
    specific_alert_type,
)
from avian_workers.mail._csvdigest import DigestError, digest_rows
from avian_workers.mail._fields import labelled_fields
from avian_workers.mail._html import html_to_text
from avian_workers.mail._logline import endpoint, log_line_fields
from avian_workers.mail._text import decode_bytes, header_text, one_line, storable
from avian_workers.mail._timestamps import header_date, parse_timestamp

__all__ = [
    "ALERT_TYPES",
    "MailParseError",
    "ParsedAlert",
    "ParsedMail",
    "Severity",
    "parse_alert_email",
]

MAX_MESSAGE_BYTES = 32 * 1024 * 1024
MAX_BODY_CHARS = 1_000_000
MAX_HTML_CHARS = 2_000_000
MAX_CSV_CHARS = 8_000_000
MAX_MIME_PARTS = 200
MAX_EVENTS = 10_000
MAX_ALERT_MESSAGE_CHARS = 4000
_MAX_HEADER_CHARS = 998  # RFC 5322 line limit
_MAX_CLASSIFIED_CHARS = 1000

# Labels by meaning, after normalisation (see _fields.field_key); the first one present wins.
_SERIAL_KEYS = (
    "serial_number", "serial", "serial_no", "serial_num", "sn", "s_n",
    "device_serial", "device_serial_number", "device_s_n", "device_sn",
    "firewall_serial", "firewall_serial_number", "serial_number_sn", "serialnumber",
)  # fmt: skip
_MANAGEMENT_IP_KEYS = (
    "management_ip", "management_ip_address", "mgmt_ip", "fw", "firewall_ip", "device_ip",
)  # fmt: skip
_HOSTNAME_KEYS = (
    "hostname", "host_name", "device_name", "firewall_name", "system_name", "fw_name",
)  # fmt: skip
_SEVERITY_KEYS = ("severity", "sev", "severity_level", "alert_severity", "event_severity")
_PRIORITY_KEYS = ("priority", "pri")
_TIME_KEYS = (
    "timestamp", "time", "event_time", "date_time", "datetime", "occurred_at", "occurred",
    "detected_at", "alert_time", "date",
)  # fmt: skip
_MESSAGE_KEYS = ("msg", "message", "event_message", "alert_message", "description", "event")
_TYPE_KEYS = ("alert_type", "event_type", "type", "category", "cat", "event_category")
_EVENT_ID_KEYS = ("event_id", "m", "msg_id", "message_id")
_CATEGORY_KEYS = ("category", "c", "cat", "event_category")
_SOURCE_KEYS = ("src", "source", "source_ip", "src_ip", "source_address")
_DESTINATION_KEYS = ("dst", "destination", "destination_ip", "dst_ip", "destination_address")

_PLACEHOLDERS = frozenset({"", "-", "--", "n/a", "na", "none", "null", "unknown", "not available"})
_SERIAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,99}")
_HOSTNAME_MAX_CHARS = 255
_LETTERS = re.compile(r"[^\W\d_]{2}")
_CSV_TYPES = frozenset({"text/csv", "application/csv", "text/comma-separated-values"})


class MailParseError(ValueError):
    """The bytes cannot be read as mail at all; the message says why."""


@dataclass(frozen=True)
class ParsedAlert:
    """One firewall event found in a mail."""

    alert_type: str
    severity: Severity
    occurred_at: datetime | None  # aware, UTC; None when neither body nor Date header says
    serial_number: str | None
    management_ip: str | None  # normalised (`ipaddress` compressed form)
    hostname: str | None
    message: str
    # JSON-serialisable: subject, from, message_id, format, event_id, category, src, dst,
    # priority, severity_source, occurred_at_source, fields (every labelled value) ...
    metadata: dict[str, Any] = field(hash=False)


@dataclass(frozen=True)
class ParsedMail:
    """What one mail says: its alerts, or why it is not an alert."""

    message_id: str | None
    subject: str
    sent_at: datetime | None  # Date header in UTC
    alerts: tuple[ParsedAlert, ...]  # empty means not an alert
    not_alert_reason: str | None

    def __post_init__(self) -> None:
        if bool(self.alerts) == (self.not_alert_reason is not None):
            raise ValueError("a parsed mail has alerts or a reason why not, exactly one of them")


def parse_alert_email(raw: bytes) -> ParsedMail:
    """Parse one raw RFC 5322 message; raises MailParseError only when it cannot be read."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise MailParseError(f"message is {len(raw)} bytes, above the {MAX_MESSAGE_BYTES} limit")
    if not raw.strip():
        raise MailParseError("message is empty")
    # compat32 never raises on malformed headers (the modern policy can), and we decode
    # headers and bodies ourselves so that no charset problem escapes.
    message = email.message_from_bytes(raw, policy=compat32)
    if not message.keys():
        raise MailParseError("no header fields: the bytes are not an RFC 5322 message")

    envelope = _envelope(message)
    reason = _not_alert_by_headers(message)
    if reason is not None:
        return envelope.result((), reason)
    content = _content(message)
    body_fields = labelled_fields(content.text)
    headline = _headline(content.text)
    envelope = replace(envelope, body_fields=body_fields, headline=headline, content=content)

    digest = _digest_events(content)
    if digest is not None:
        events = digest
        if not events:
            return envelope.result((), "CSV digest without event rows")
    else:
        events = _log_line_events(content.text) or [
            _Event(body_fields, "key_value" if body_fields else "text", standalone=True)
        ]
    alerts = tuple(alert for event in events if (alert := _alert(event, envelope)) is not None)
    if not alerts:
        return envelope.result((), "no alert keywords in subject or body")
    return envelope.result(alerts, None)


@dataclass(frozen=True)
class _Content:
    text: str
    text_type: str | None
    declared_charset: str | None
    used_charset: str | None
    csv_files: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class _Event:
    fields: Mapping[str, str]
    format: str  # key_value | text | sonicos_log | csv_digest
    standalone: bool  # the whole mail is this one event: subject and headline describe it
    position: Mapping[str, Any] = field(default_factory=dict)

    @property
    def structured(self) -> bool:
        """A log line or digest row: an event the firewall chose to send, so always an alert."""
        return self.format in ("sonicos_log", "csv_digest")


@dataclass(frozen=True)
class _Envelope:
    message_id: str | None
    subject: str
    sender: str | None
    sent_at: datetime | None  # in the writer's offset
    body_fields: Mapping[str, str] = field(default_factory=dict)
    headline: str | None = None
    content: _Content | None = None

    def result(self, alerts: tuple[ParsedAlert, ...], reason: str | None) -> ParsedMail:
        sent_at = self.sent_at.astimezone(UTC) if self.sent_at else None
        return ParsedMail(self.message_id, self.subject, sent_at, alerts, reason)


def _envelope(message: Message) -> _Envelope:
    message_id = header_text(message.get("Message-ID"))
    date_text = header_text(message.get("Date"))
    return _Envelope(
        message_id=message_id[:_MAX_HEADER_CHARS] if message_id else None,
        subject=(header_text(message.get("Subject")) or "")[:_MAX_HEADER_CHARS],
        sender=(header_text(message.get("From")) or "")[:_MAX_HEADER_CHARS] or None,
        sent_at=header_date(date_text),
    )


def _not_alert_by_headers(message: Message) -> str | None:
    auto_submitted = (header_text(message.get("Auto-Submitted")) or "").lower()
    if auto_submitted.startswith("auto-replied") or message.get("X-Autoreply") is not None:
        return "automatic reply"
    if message.get_content_type() == "multipart/report":
        return "delivery or read report"
    return None


def _content(message: Message) -> _Content:
    plain: Message | None = None
    html: Message | None = None
    csv_parts: list[Message] = []
    for count, part in enumerate(message.walk(), start=1):
        if count > MAX_MIME_PARTS:
            raise MailParseError(f"more than {MAX_MIME_PARTS} MIME parts")
        if part.is_multipart():
            continue
        content_type = part.get_content_type()
        filename = part.get_filename() or ""
        if content_type in _CSV_TYPES or filename.lower().endswith(".csv"):
            csv_parts.append(part)
        elif part.get_content_disposition() == "attachment":
            continue
        elif content_type == "text/plain" and plain is None:
            plain = part
        elif content_type == "text/html" and html is None:
            html = part

    csv_files = tuple(
        (
            one_line(part.get_filename() or "attachment.csv")[:_MAX_HEADER_CHARS],
            _part_text(part, MAX_CSV_CHARS)[0],
        )
        for part in csv_parts
    )
    if plain is not None:
        text, used = _part_text(plain, MAX_BODY_CHARS)
        if text.strip() or html is None:
            return _Content(text, "text/plain", plain.get_content_charset(), used, csv_files)
    if html is not None:
        markup, used = _part_text(html, MAX_HTML_CHARS)
        text = html_to_text(markup)
        return _Content(text, "text/html", html.get_content_charset(), used, csv_files)
    return _Content("", None, None, None, csv_files)


def _part_text(part: Message, limit: int) -> tuple[str, str]:
    """The decoded text of a leaf part and the charset used; MailParseError above `limit`."""
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    text, used = decode_bytes(data, part.get_content_charset())
    if len(text) > limit:
        raise MailParseError(
            f"{part.get_content_type()} part is {len(text)} characters, above the {limit} limit"
        )
    return storable(text), used


def _headline(text: str) -> str | None:
    for line in text.splitlines():
        if _LETTERS.search(line):
            return one_line(line)[:_MAX_CLASSIFIED_CHARS]
    return None


def _digest_events(content: _Content) -> list[_Event] | None:
    events: list[_Event] | None = None
    for filename, text in content.csv_files:
        try:
            rows = digest_rows(text, _MESSAGE_KEYS, MAX_EVENTS)
        except DigestError as error:
            raise MailParseError(f"CSV attachment {filename!r}: {error}") from error
        if rows is None:
            continue
        events = events or []
        events.extend(
            _Event(
                row.fields,
                "csv_digest",
                standalone=False,
                position={"csv_file": filename, "csv_row": row.number},
            )
            for row in rows
        )
        if len(events) > MAX_EVENTS:
            raise MailParseError(f"CSV digests hold more than {MAX_EVENTS} events")
    return events


def _log_line_events(text: str) -> list[_Event]:
    parsed = [
        (number, fields)
        for number, line in enumerate(text.splitlines(), start=1)
        if (fields := log_line_fields(line)) is not None
    ]
    if len(parsed) > MAX_EVENTS:
        raise MailParseError(f"body holds more than {MAX_EVENTS} log lines")
    standalone = len(parsed) == 1
    return [
        _Event(fields, "sonicos_log", standalone=standalone, position={"line": number})
        for number, fields in parsed
    ]


def _alert(event: _Event, envelope: _Envelope) -> ParsedAlert | None:
    fields = event.fields
    message_text = _first(fields, _MESSAGE_KEYS)
    type_texts = [fields[key] for key in _TYPE_KEYS if key in fields]
    if message_text:
        type_texts.append(message_text)
    if event.standalone:
        type_texts.extend(text for text in (envelope.subject, envelope.headline) if text)
    type_texts = [text[:_MAX_CLASSIFIED_CHARS] for text in type_texts]
    alert_type = specific_alert_type(type_texts)
    if alert_type is None:
        if not event.structured and not mentions_alert(type_texts):
            return None
        alert_type = GENERIC_ALERT_TYPE

    # A log line or digest row may leave the device to the labelled text around it.
    identity_sources = [fields, envelope.body_fields]
    metadata = _metadata(event, envelope)
    severity = _severity(fields, metadata)
    if alert_type in DOWN_TYPES and link_recovery(type_texts):
        # The link or tunnel is back: worth a line on the firewall's timeline, not a page. A
        # firewall states the severity of the event category, the same for down and back up.
        metadata["recovery"] = True
        if metadata["severity_source"] != "default":
            metadata["severity_stated"] = severity  # severity_source says where it was stated
        severity = "info"
    occurred_at = _occurred_at(fields, envelope, metadata)
    message = message_text or envelope.subject or envelope.headline or alert_type.replace("_", " ")
    return ParsedAlert(
        alert_type=alert_type,
        severity=severity,
        occurred_at=occurred_at,
        serial_number=_identifier(identity_sources, _SERIAL_KEYS, _serial_number),
        management_ip=_identifier(identity_sources, _MANAGEMENT_IP_KEYS, _ip_address),
        hostname=_identifier(identity_sources, _HOSTNAME_KEYS, _hostname),
        message=one_line(message)[:MAX_ALERT_MESSAGE_CHARS],
        metadata=metadata,
    )


def _metadata(event: _Event, envelope: _Envelope) -> dict[str, Any]:
    fields = event.fields
    metadata: dict[str, Any] = {"format": event.format}
    for name, value in (
        ("subject", envelope.subject),
        ("from", envelope.sender),
        ("message_id", envelope.message_id),
        ("event_id", _first(fields, _EVENT_ID_KEYS)),
        ("category", _first(fields, _CATEGORY_KEYS)),
    ):
        if value:
            metadata[name] = value
    metadata.update(event.position)
    for name, keys in (("src", _SOURCE_KEYS), ("dst", _DESTINATION_KEYS)):
        value = _first(fields, keys)
        if value:
            metadata[name] = endpoint(value)
    content = envelope.content
    if content is not None and content.text_type is not None:
        metadata["body_part"] = content.text_type
    if content is not None and content.used_charset != (content.declared_charset or "utf-8"):
        declared = content.declared_charset
        metadata["body_charset"] = {
            "declared": storable(declared) if declared is not None else None,
            "used": content.used_charset,
        }
    metadata["fields"] = dict(fields)
    if event.structured and envelope.body_fields:
        metadata["mail_fields"] = dict(envelope.body_fields)
    return metadata


def _severity(fields: Mapping[str, str], metadata: dict[str, Any]) -> Severity:
    stated = _first(fields, _SEVERITY_KEYS)
    severity = severity_word(stated) if stated else None
    if severity is not None:
        metadata["severity_source"] = "severity"
        return severity
    priority = _first(fields, _PRIORITY_KEYS)
    if priority:
        metadata["priority"] = priority
        severity = priority_severity(priority)
        if severity is not None:
            metadata["severity_source"] = "priority"
            return severity
    metadata["severity_source"] = "default"
    return "info"


def _occurred_at(
    fields: Mapping[str, str], envelope: _Envelope, metadata: dict[str, Any]
) -> datetime | None:
    sent_at = envelope.sent_at
    default_zone: tzinfo = sent_at.tzinfo if sent_at and sent_at.tzinfo else UTC
    for text in _time_texts(fields):
        stamp = parse_timestamp(text, default_zone)
        if stamp is not None:
            metadata["occurred_at_source"] = "body"
            if not stamp.zone_given:
                metadata["timezone_assumed"] = "date_header" if sent_at else "utc"
            return stamp.value
    if sent_at is not None:
        metadata["occurred_at_source"] = "date_header"
        return sent_at.astimezone(UTC)
    return None


def _time_texts(fields: Mapping[str, str]) -> Iterator[str]:
    if "date" in fields and "time" in fields:  # digests may split them into two columns
        yield f"{fields['date']} {fields['time']}"
    for key in _TIME_KEYS:
        if key in fields:
            yield fields[key]


def _first(fields: Mapping[str, str], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = fields.get(key)
        if value:
            return value
    return None


def _identifier(
    sources: list[Mapping[str, str]],
    keys: tuple[str, ...],
    normalise: Callable[[str], str | None],
) -> str | None:
    for fields in sources:
        for key in keys:
            value = fields.get(key)
            if value and (normalised := normalise(value)) is not None:
                return normalised
    return None


def _first_token(value: str) -> str:
    parts = value.split(maxsplit=1)
    return parts[0] if parts else ""


def _serial_number(value: str) -> str | None:
    token = _first_token(value)
    placeholder = value.strip().lower() in _PLACEHOLDERS or token.lower() in _PLACEHOLDERS
    if placeholder or not _SERIAL.fullmatch(token):  # 'Not Available' names no serial 'Not'
        return None
    return token


def _ip_address(value: str) -> str | None:
    try:
        return ipaddress.ip_address(_first_token(value)).compressed
    except ValueError:
        return None


def _hostname(value: str) -> str | None:
    text = one_line(value)
    if text.lower() in _PLACEHOLDERS or len(text) > _HOSTNAME_MAX_CHARS:
        return None
    return text
