"""Typed readers for the fields of Microsoft JSON records; every failure names the field."""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

# Intune writes this GUID where a device has no Azure AD identity.
_ZERO_GUID = uuid.UUID(int=0)
_CVSS_STEP = Decimal("0.1")
_CVSS_MAX = Decimal(10)
# Scores already read, by raw value: an export repeats a few dozen distinct scores thousands of
# times, and the Decimal round trip is most of a row's cost. Bounded against odd inputs.
_CVSS_SEEN: dict[int | float | str, Decimal] = {}
_CVSS_SEEN_MAX = 4096


class RecordError(ValueError):
    """A Microsoft record that cannot be normalised: names the record kind, its id and the field."""

    def __init__(self, kind: str, field: str, problem: str, record_id: str | None = None) -> None:
        self.kind = kind
        self.field = field
        self.problem = problem
        self.record_id = record_id
        where = f"{kind} {record_id!r}" if record_id else kind
        super().__init__(f"{where}: field {field!r} {problem}")

    def __reduce__(self) -> tuple[type[RecordError], tuple[str, str, str, str | None]]:
        # Prefect may pickle task exceptions; the default reduce would replay only the message.
        return (type(self), (self.kind, self.field, self.problem, self.record_id))


def parse_timestamp(text: str) -> datetime:
    """Parse a Microsoft timestamp into an aware UTC datetime.

    Graph writes `2024-12-09T10:00:00.1234567Z`; the Defender vulnerability export writes
    `2020-11-03 10:13:34.8476880` with no zone, documented as UTC, so a missing zone means UTC.
    Fractions beyond microseconds are truncated: the result is never later than the source
    value, so a `ge` filter built from it never skips a record.
    """
    parsed = datetime.fromisoformat(text.strip())
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class FieldReader:
    """Reads one JSON object of a given kind (e.g. 'defender machine')."""

    def __init__(
        self,
        raw: object,
        kind: str,
        *,
        record_id: str | None = None,
        prefix: str = "",
    ) -> None:
        self.kind = kind
        self._prefix = prefix
        # `type(...) is dict` first: the ABC check is a Python-level call, once per record.
        if type(raw) is not dict and not isinstance(raw, Mapping):
            raise RecordError(
                kind, prefix.rstrip(".") or "<record>", "must be a JSON object", record_id
            )
        self._raw: Mapping[str, object] = raw
        own_id = raw.get("id")
        self.record_id = record_id or (own_id if isinstance(own_id, str) and own_id else None)

    def error(self, field: str, problem: str) -> RecordError:
        return RecordError(self.kind, self._prefix + field, problem, self.record_id)

    def raw(self, field: str) -> object:
        return self._raw.get(field)

    def text(self, field: str, *, max_length: int | None = None) -> str | None:
        """A string field; missing, null and blank all mean 'not known'."""
        value = self._raw.get(field)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.error(field, f"must be a string, got {_shown(value)}")
        value = value.strip()
        if not value:
            return None
        if max_length is not None and len(value) > max_length:
            raise self.error(
                field, f"is {len(value)} characters long, the column holds {max_length}"
            )
        return value

    def required_text(self, field: str, *, max_length: int | None = None) -> str:
        value = self.text(field, max_length=max_length)
        if value is None:
            raise self.error(field, "is missing")
        return value

    def timestamp(self, field: str) -> datetime | None:
        """A timestamp field; Intune's `0001-01-01T00:00:00Z` ('never') reads as not known."""
        value = self.text(field)
        if value is None:
            return None
        try:
            parsed = parse_timestamp(value)
        except (ValueError, OverflowError):
            raise self.error(field, f"is not an ISO 8601 timestamp: {_shown(value)}") from None
        return None if parsed.year == 1 else parsed

    def required_timestamp(self, field: str) -> datetime:
        value = self.timestamp(field)
        if value is None:
            raise self.error(field, "is missing")
        return value

    def guid(self, field: str) -> str | None:
        """A GUID in canonical lower-case form; the all-zero GUID means none."""
        value = self.text(field)
        if value is None:
            return None
        try:
            parsed = uuid.UUID(value)
        except ValueError:
            raise self.error(field, f"is not a GUID: {_shown(value)}") from None
        return None if parsed == _ZERO_GUID else str(parsed)

    def cvss(self, field: str) -> Decimal | None:
        """A CVSS score (number or numeric string) as numeric(3,1); half-up like NVD's 0.1 steps."""
        value = self._raw.get(field)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if type(value) is float or type(value) is str or type(value) is int:
            known = _CVSS_SEEN.get(value)
            if known is not None:
                return known
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise self.error(field, f"must be a number, got {_shown(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.error(field, f"must be a finite number, got {_shown(value)}")
        try:
            # str() first: Decimal(0.1) would carry the float's binary error into the rounding.
            number = Decimal(str(value).strip())
        except InvalidOperation:
            raise self.error(field, f"must be a number, got {_shown(value)}") from None
        if not number.is_finite() or not 0 <= number <= _CVSS_MAX:
            raise self.error(field, f"must be a CVSS score from 0 to 10, got {_shown(value)}")
        score = number.quantize(_CVSS_STEP, rounding=ROUND_HALF_UP)
        if len(_CVSS_SEEN) < _CVSS_SEEN_MAX:
            _CVSS_SEEN[value] = score
        return score

    def word[T](self, field: str, mapping: Mapping[str, T]) -> T | None:
        """An enum word looked up case-insensitively; an unknown word is an error, not a guess."""
        value = self.text(field)
        if value is None:
            return None
        try:
            return mapping[value.casefold()]
        except KeyError:
            known = ", ".join(sorted(mapping))
            raise self.error(field, f"has unknown value {_shown(value)} (known: {known})") from None
