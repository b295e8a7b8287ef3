"""One device's rollup for one UTC day, from that day's counter samples: pure validation and maths.

Sources of device D on day X (CONTRACT.md), and how they combine
-----------------------------------------------------------------
- `firewall_security_posture` rows of D timestamped on X: intra-day samples of the security
  counters (`ips`, `gav`, `atp`, `botnet`, `content_filter` `_daily_blocks`/`_daily_verdicts`).
- The daily snapshot `firewall:polling:{D}:daily:{X}`: the final values of X. It is the day's
  last sample of every counter, placed after all posture rows.
- The live key `firewall:polling:{D}`: consulted only when there is no daily snapshot, and only
  when its `lastPollTime` falls on X; it is then a sample taken at `lastPollTime`. Snapshot and
  live key are never both used: when the poll is the day's last, both hold the same numbers, and
  putting an earlier, lower live reading after the snapshot would invent a drop.

The snapshot or live key (the "final reading") is the only source of `blocked_connections`,
`bandwidth_total_mb` and `active_sessions_count`; without one those columns are NULL (unknown,
which is not zero). `threats_blocked` is the sum of the known ips/gav/atp/botnet totals. A
device-day with no sample at all is Missing: no row is written. One malformed value in a source
that applies to the day rejects the whole device-day with a reason; nothing partial is written.

The counter-drop rule
---------------------
A sample is what a counter has reached since the day began (the platform names them
`*_daily_blocks`; the snapshot holds "the final values of that UTC day"). Counters only grow,
except when the firewall reboots or an administrator clears them: the counter then restarts from
zero. For one counter's samples s1..sn in time order:

    total = sum of s_i for each i with s_(i+1) < s_i   (the value reached before each drop)
          + s_n                                          (the final value)

Edge cases, each tested:
- no samples: no value (the column is NULL, or the device-day Missing) - never zero;
- one sample: its value;
- values that never decrease, including equal consecutive values: the final value;
- a reboot mid-day (drop to a small value) and an admin clear (drop to zero) count the value
  reached before the drop; what follows the drop is new and counted by later samples;
- a clear as the day's last sample: the total is the value before the clear;
- several drops: each pre-drop value counts once;
- samples with the same timestamp are ordered by value, so a tie never invents a drop;
- a sample without this counter (NULL in a posture row) is skipped for this counter only.

What cannot be known is not guessed: blocks between the last sample before a reset and the reset
itself are lost, so after a drop the total is a lower bound. Because of that, adding a sample
(late data) never lowers a total; the store relies on this when it lets a recomputed row without
a final reading replace a stored one only if none of its totals is lower.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from itertools import compress
from operator import gt, itemgetter, lt
from typing import NamedTuple, cast
from uuid import UUID

import orjson

INT_MAX = 2**31 - 1
BIGINT_MAX = 2**63 - 1

SECURITY_COUNTERS: tuple[str, ...] = ("ips", "gav", "atp", "botnet", "content_filter")
"""Counters both the posture rows and the Redis readings carry, and the rollup needs."""

POSTURE_COLUMNS: Mapping[str, str] = {
    "ips": "ips_daily_blocks",
    "gav": "gav_daily_blocks",
    "atp": "atp_daily_verdicts",
    "botnet": "botnet_daily_blocks",
    "content_filter": "content_filter_daily_blocks",
}

REDIS_COUNTERS: Mapping[str, str] = {
    "ips": "ipsBlocks",
    "gav": "gavBlocks",
    "dpi_ssl": "dpiSslBlocks",
    "atp": "atpVerdicts",
    "app_control": "appControlBlocks",
    "botnet": "botnetBlocks",
    "content_filter": "contentFilterBlocks",
    "blocked_connections": "blockedConnections",
}
"""Counters every Redis reading must carry (the contract marks only the next two optional)."""

REDIS_BANDWIDTH = "bandwidthTotalMb"
REDIS_SESSIONS = "activeSessionsCount"

_REQUIRED_NAMES = tuple(REDIS_COUNTERS)
_REQUIRED_FIELDS = tuple(REDIS_COUNTERS.values())
_required_values = cast(
    "Callable[[object], tuple[int, int, int, int, int, int, int, int]]",
    itemgetter(*_REQUIRED_FIELDS),
)
_KnownPosture = tuple[
    Sequence[datetime], Sequence[int], Sequence[int], Sequence[int], Sequence[int], Sequence[int]
]
# Above any value the fast path meets: posture columns are int4, and orjson reads integers
# beyond 64 bits as floats, which the fast path leaves to the general one.
_GAP = 2**65
_GAPS = len(SECURITY_COUNTERS) - 1
_ONLY_INT = {int}
_DAY = timedelta(days=1)

Sample = tuple[datetime, int | None]
"""(taken at, in naive UTC; the counter's value, None when that sample lacks it)."""


class PostureSamples(NamedTuple):
    """A device's posture rows of one day, column-wise: when each was taken, and each counter's
    value in that row (None where the row lacks it). Fields after `taken_at` are SECURITY_COUNTERS.

    A NamedTuple, so a database row of the same columns becomes one without copying its arrays.
    """

    taken_at: Sequence[datetime]
    ips: Sequence[int | None]
    gav: Sequence[int | None]
    atp: Sequence[int | None]
    botnet: Sequence[int | None]
    content_filter: Sequence[int | None]

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[datetime, Mapping[str, int | None]]]) -> PostureSamples:
        """Build from (taken at, {counter: value}) rows; absent counters are None."""
        listed = list(rows)
        return cls(
            [taken_at for taken_at, _ in listed],
            *([values.get(name) for _, values in listed] for name in SECURITY_COUNTERS),
        )

    def values(self, name: str) -> Sequence[int | None]:
        """One counter's values, in row order."""
        return cast("Sequence[int | None]", getattr(self, name))

    def samples(self, name: str) -> list[Sample]:
        """One counter's samples as (taken at, value) pairs."""
        return list(zip(self.taken_at, self.values(name), strict=True))


NO_POSTURE = PostureSamples((), (), (), (), (), ())


class RejectReason(StrEnum):
    """Why a device-day was excluded; short codes the run summary counts."""

    NOT_JSON = "not_json"
    NOT_AN_OBJECT = "not_an_object"
    WRONG_DEVICE = "wrong_device"
    BAD_POLL_TIME = "bad_poll_time"
    MISSING_COUNTER = "missing_counter"
    NON_NUMERIC = "non_numeric"
    NEGATIVE = "negative"
    OUT_OF_RANGE = "out_of_range"


class MalformedSourceError(ValueError):
    """A source value that cannot be trusted; `reason` is the code, the message the detail."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# Reading and RollupRow are NamedTuples rather than frozen dataclasses: a backfill makes
# hundreds of thousands of them, and a tuple is built several times faster.


class Reading(NamedTuple):
    """The validated counters of one Redis value (daily snapshot or live key)."""

    taken_at: datetime | None
    """lastPollTime of a live key (naive UTC); None for a snapshot, which ends the day."""
    counters: Mapping[str, int]
    """Every name in REDIS_COUNTERS."""
    bandwidth_total_mb: int | None
    active_sessions_count: int | None


class RollupRow(NamedTuple):
    """One `firewall_metrics_rollup` row; None is an unknown metric (written as NULL)."""

    device_id: UUID
    day: date
    threats_blocked: int | None
    malware_blocked: int | None
    ips_blocked: int | None
    blocked_connections: int | None
    web_filter_hits: int | None
    bandwidth_total_mb: int | None
    active_sessions_count: int | None


METRIC_NAMES: tuple[str, ...] = RollupRow._fields[2:]
METRIC_LIMITS: Mapping[str, int] = {
    name: BIGINT_MAX if name == "bandwidth_total_mb" else INT_MAX for name in METRIC_NAMES
}


@dataclass(frozen=True, slots=True)
class Rejection:
    """A device-day left out because a source was malformed."""

    device_id: UUID
    day: date
    reason: RejectReason
    detail: str


@dataclass(frozen=True, slots=True)
class Missing:
    """A device-day without any data: no row is written (missing is not zero)."""

    device_id: UUID
    day: date


Outcome = RollupRow | Rejection | Missing


def counter_total(values: Sequence[int]) -> int | None:
    """The day's total of one counter from its samples in time order (the counter-drop rule)."""
    return _drop_total(values) if values else None


def _drop_total(values: Sequence[int]) -> int:
    # Each value followed by a lower one (a drop) counts, and so does the last; compress and
    # map keep the loop in C, which matters at hundreds of thousands of device-days.
    return sum(compress(values, map(gt, values, values[1:]))) + values[-1]


def series_total(samples: Iterable[Sample]) -> int | None:
    """counter_total of the samples that carry a value, ordered by time, ties by value."""
    present = sorted((taken_at, value) for taken_at, value in samples if value is not None)
    return counter_total([value for _, value in present])


def _decode_object(raw: bytes | str, source: str) -> dict[str, object]:
    try:
        document = orjson.loads(raw)  # strict JSON: NaN, Infinity and bad UTF-8 are refused
    except orjson.JSONDecodeError as exc:
        raise MalformedSourceError(
            RejectReason.NOT_JSON, f"{source} is not valid JSON ({exc})"
        ) from None
    if not isinstance(document, dict):
        raise MalformedSourceError(
            RejectReason.NOT_AN_OBJECT,
            f"{source} is a JSON {type(document).__name__}, not an object",
        )
    return document


def _check_device(document: Mapping[str, object], device_id: UUID, source: str) -> None:
    claimed = document.get("deviceId")
    if claimed is not None and str(claimed).lower() != str(device_id):
        raise MalformedSourceError(
            RejectReason.WRONG_DEVICE, f"{source} names device {claimed!s:.64}, not {device_id}"
        )


def _whole_number(value: object, field: str, source: str, *, round_fraction: bool = False) -> int:
    """A non-negative integer from a JSON number; a fraction only where `round_fraction`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedSourceError(
            RejectReason.NON_NUMERIC, f"{source}: {field} is not a number ({value!r:.64})"
        )
    if isinstance(value, float):
        if not math.isfinite(value):  # pragma: no cover - _decode_object refuses these
            raise MalformedSourceError(RejectReason.NON_NUMERIC, f"{source}: {field} is {value}")
        if not value.is_integer() and not round_fraction:
            raise MalformedSourceError(
                RejectReason.NON_NUMERIC, f"{source}: {field} is not a whole number ({value})"
            )
    if value < 0:  # before rounding: -0.4 MB is bad data, not 0
        raise MalformedSourceError(
            RejectReason.NEGATIVE, f"{source}: {field} is negative ({value})"
        )
    if isinstance(value, float):
        # Half up, from the exact fraction: floor(x + 0.5) rounds 0.49999999999999994 up.
        whole = math.floor(value)
        return whole + (value - whole >= 0.5)
    return value


def _reading(document: Mapping[str, object], source: str, taken_at: datetime | None) -> Reading:
    counters_doc = document.get("lastCounters", document)
    if not isinstance(counters_doc, dict):
        raise MalformedSourceError(
            RejectReason.NOT_AN_OBJECT, f"{source}: lastCounters is not an object"
        )
    found: list[object] = list(map(counters_doc.get, _REQUIRED_FIELDS))
    # The usual reading is all non-negative ints, checked at C speed; anything else is checked
    # field by field, which names the first problem.
    if set(map(type, found)) == _ONLY_INT and min(cast("list[int]", found)) >= 0:
        values = cast("list[int]", found)
    else:
        values = [
            _required_count(value, field, source)
            for field, value in zip(_REQUIRED_FIELDS, found, strict=True)
        ]
    bandwidth = counters_doc.get(REDIS_BANDWIDTH)
    sessions = counters_doc.get(REDIS_SESSIONS)
    return Reading(
        taken_at=taken_at,
        counters=dict(zip(_REQUIRED_NAMES, values, strict=True)),
        # Bandwidth is a measurement in MB and may be fractional: rounded to the nearest MB.
        bandwidth_total_mb=_optional_count(bandwidth, REDIS_BANDWIDTH, source, round_fraction=True),
        active_sessions_count=_optional_count(sessions, REDIS_SESSIONS, source),
    )


def _required_count(value: object, field: str, source: str) -> int:
    if value is None:
        raise MalformedSourceError(
            RejectReason.MISSING_COUNTER, f"{source}: counter {field} is missing"
        )
    return _whole_number(value, field, source)


def _optional_count(
    value: object, field: str, source: str, *, round_fraction: bool = False
) -> int | None:
    if value is None:
        return None
    if type(value) is int and value >= 0:
        return value
    return _whole_number(value, field, source, round_fraction=round_fraction)


def read_snapshot(raw: bytes | str, device_id: UUID) -> Reading:
    """The counters of a daily snapshot (bare counters, or a `lastCounters` object)."""
    source = "daily snapshot"
    document = _decode_object(raw, source)
    _check_device(document, device_id, source)
    return _reading(document, source, None)


def parse_poll_time(value: object) -> datetime:
    """An ISO 8601 `lastPollTime` as naive UTC (a time without offset is taken as UTC)."""
    if not isinstance(value, str):
        raise MalformedSourceError(
            RejectReason.BAD_POLL_TIME, f"live key: lastPollTime is not a string ({value!r:.64})"
        )
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):
        raise MalformedSourceError(
            RejectReason.BAD_POLL_TIME, f"live key: lastPollTime is not ISO 8601 ({value!r:.64})"
        ) from None
    return parsed


def read_live(raw: bytes | str, device_id: UUID, day: date) -> Reading | None:
    """The live key's counters if its lastPollTime falls on `day`, else None (not a source)."""
    source = "live key"
    document = _decode_object(raw, source)
    _check_device(document, device_id, source)
    polled_at = parse_poll_time(document.get("lastPollTime"))
    if polled_at.date() != day:
        return None
    return _reading(document, source, polled_at)


def _negative_posture_value(
    device_id: UUID, day: date, posture: PostureSamples, name: str
) -> Rejection:
    taken_at, value = min((s for s in posture.samples(name) if s[1] is not None), key=_value_of)
    return Rejection(
        device_id,
        day,
        RejectReason.NEGATIVE,
        f"posture row at {taken_at.isoformat()}: {POSTURE_COLUMNS[name]} is negative ({value})",
    )


def _value_of(sample: Sample) -> int:
    return sample[1] or 0


def _is_strictly_increasing(times: Sequence[datetime]) -> bool:
    return all(map(lt, times, times[1:]))  # map keeps the comparisons in C


def _final_reading(
    device_id: UUID, day: date, snapshot: bytes | None, live: bytes | None
) -> Reading | None:
    if snapshot is not None:
        return read_snapshot(snapshot, device_id)
    if live is not None:
        return read_live(live, device_id, day)
    return None


def _series(
    posture: PostureSamples,
    name: str,
    *,
    in_order: bool,
    final: tuple[datetime, int] | None,
) -> list[int]:
    """One counter's values in time order (ties by value), the final reading's last."""
    values = posture.values(name)
    taken_at = posture.taken_at
    if (
        in_order
        and None not in values
        and (final is None or not taken_at or final[0] > taken_at[-1])
    ):
        # The usual day: posture rows in time order, none lacking the counter, then a snapshot.
        series = list(cast("Sequence[int]", values))
        if final is not None:
            series.append(final[1])
        return series
    samples = [sample for sample in posture.samples(name) if sample[1] is not None]
    if final is not None:
        samples.append(final)
    return [value for _, value in sorted(cast("list[tuple[datetime, int]]", samples))]


def rollup_device_day(
    device_id: UUID,
    day: date,
    *,
    posture: PostureSamples,
    snapshot: bytes | None,
    live: bytes | None,
) -> Outcome:
    """Combine one device's sources of `day` into its rollup row, a Rejection, or Missing."""
    if snapshot is not None:
        row = _usual_day(device_id, day, posture, snapshot)
        if row is not None:
            return row
    return _any_day(device_id, day, posture=posture, snapshot=snapshot, live=live)


def _usual_day(
    device_id: UUID, day: date, posture: PostureSamples, snapshot: bytes
) -> RollupRow | None:
    """The row of a usual day, or None when anything about the day is not usual.

    Usual is: a daily snapshot of plain non-negative integers, posture rows in time order with
    every counter and no negative value, totals within the int columns. That is nearly every
    device-day, and here it costs under half of the general path (a backfill makes hundreds of
    thousands). Anything else returns None and `_any_day` decides, with the reasons; both give
    the same row for a usual day (the counter-drop rule with the snapshot as last sample).
    """
    try:
        document = orjson.loads(snapshot)
        counters_doc = document.get("lastCounters", document)
        finals = _required_values(counters_doc)
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
        return None  # not JSON, not an object, or a counter missing
    claimed = document.get("deviceId")
    if claimed is not None and (type(claimed) is not str or claimed.lower() != str(device_id)):
        return None
    if set(map(type, finals)) != _ONLY_INT or min(finals) < 0:
        return None
    bandwidth = counters_doc.get(REDIS_BANDWIDTH)
    sessions = counters_doc.get(REDIS_SESSIONS)
    if (bandwidth is not None and (type(bandwidth) is not int or bandwidth < 0)) or (
        sessions is not None and (type(sessions) is not int or sessions < 0)
    ):
        return None
    # Typed as if every posture value were known: a None among them fails `min` below.
    taken_at, ips, gav, atp, botnet, content_filter = cast("_KnownPosture", posture)
    if len(taken_at) > 1 and not _is_strictly_increasing(taken_at):
        return None
    f_ips, f_gav, _, f_atp, _, f_botnet, f_content_filter, blocked = finals
    # The five counters' series in one list, each closed by its snapshot value (the day's last
    # sample), with a gap above any value between them. One pass in C then finds a negative or
    # missing (None: TypeError) posture value, and counts the falls: one into each of the four
    # gaps, and any more is a drop within a series (or a snapshot value beyond any column).
    series = [
        *ips, f_ips, _GAP, *gav, f_gav, _GAP, *atp, f_atp, _GAP,
        *botnet, f_botnet, _GAP, *content_filter, f_content_filter,
    ]  # fmt: skip
    try:
        if min(series) < 0:
            return None
    except TypeError:
        return None
    if sum(map(gt, series, series[1:])) == _GAPS:
        ips_total, gav_total, atp_total, botnet_total = f_ips, f_gav, f_atp, f_botnet
        content_filter_total = f_content_filter
    else:
        ips_total = _drop_total([*ips, f_ips])
        gav_total = _drop_total([*gav, f_gav])
        atp_total = _drop_total([*atp, f_atp])
        botnet_total = _drop_total([*botnet, f_botnet])
        content_filter_total = _drop_total([*content_filter, f_content_filter])
    threats = ips_total + gav_total + atp_total + botnet_total
    if (
        threats > INT_MAX
        or content_filter_total > INT_MAX
        or blocked > INT_MAX
        or (bandwidth is not None and bandwidth > INT_MAX)
        or (sessions is not None and sessions > INT_MAX)
    ):
        return None
    return RollupRow(
        device_id,
        day,
        threats,
        gav_total,
        ips_total,
        blocked,
        content_filter_total,
        bandwidth,
        sessions,
    )


def _any_day(
    device_id: UUID,
    day: date,
    *,
    posture: PostureSamples,
    snapshot: bytes | None,
    live: bytes | None,
) -> Outcome:
    """rollup_device_day for every case: unusual sources, rejections with reasons, Missing."""
    try:
        final = _final_reading(device_id, day, snapshot, live)
    except MalformedSourceError as exc:
        return Rejection(device_id, day, exc.reason, exc.detail)
    finals: dict[str, tuple[datetime, int]] = {}
    if final is not None:
        # A snapshot ends the day; a live reading sits at its poll time among the posture rows.
        final_at = final.taken_at or datetime.combine(day + _DAY, time())
        finals = {name: (final_at, final.counters[name]) for name in SECURITY_COUNTERS}
    in_order = _is_strictly_increasing(posture.taken_at)

    totals: dict[str, int | None] = {}
    for name in SECURITY_COUNTERS:
        series = _series(posture, name, in_order=in_order, final=finals.get(name))
        if series and min(series) < 0:  # only posture values can be negative: readings refuse it
            return _negative_posture_value(device_id, day, posture, name)
        totals[name] = counter_total(series)

    ips, gav, atp, botnet = totals["ips"], totals["gav"], totals["atp"], totals["botnet"]
    threats = [total for total in (ips, gav, atp, botnet) if total is not None]
    row = RollupRow(
        device_id,
        day,
        threats_blocked=sum(threats) if threats else None,
        malware_blocked=gav,
        ips_blocked=ips,
        blocked_connections=None if final is None else final.counters["blocked_connections"],
        web_filter_hits=totals["content_filter"],
        bandwidth_total_mb=None if final is None else final.bandwidth_total_mb,
        active_sessions_count=None if final is None else final.active_sessions_count,
    )
    values = metric_values(row)
    known = [value for value in values if value is not None]
    if not known:
        return Missing(device_id, day)
    if max(known) <= INT_MAX:
        return row
    for name, value in zip(METRIC_NAMES, values, strict=True):
        if value is not None and value > METRIC_LIMITS[name]:
            return Rejection(
                device_id,
                day,
                RejectReason.OUT_OF_RANGE,
                f"{name} would be {value}, beyond its column's maximum {METRIC_LIMITS[name]}",
            )
    return row


def metric_values(row: RollupRow) -> tuple[int | None, ...]:
    """The row's metrics in METRIC_NAMES order."""
    return row[2:]
