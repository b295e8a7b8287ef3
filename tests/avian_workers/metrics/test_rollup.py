"""The counter-drop rule, source validation and the combination of one device-day's sources."""

import json
import random
from datetime import date, datetime, time
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from avian_workers.db.models import ROLLUP_METRICS
from avian_workers.metrics.rollup import (
    BIGINT_MAX,
    INT_MAX,
    METRIC_NAMES,
    NO_POSTURE,
    SECURITY_COUNTERS,
    MalformedSourceError,
    Missing,
    Outcome,
    PostureSamples,
    Rejection,
    RejectReason,
    RollupRow,
    counter_total,
    parse_poll_time,
    read_live,
    read_snapshot,
    rollup_device_day,
    series_total,
)
from avian_workers.metrics.rollup import _any_day as general_path_of_rollup

DAY = date(2025, 1, 9)
DEVICE = UUID("6f1c2d9e-3b7a-4c55-9e0d-1a2b3c4d5e6f")
OTHER_DEVICE = UUID("00000000-0000-4000-8000-000000000001")


def at(hour: int, minute: int = 0, day: date = DAY) -> datetime:
    return datetime.combine(day, time(hour, minute))


def counters(**overrides: Any) -> dict[str, Any]:
    """A full Redis counter set; keyword names are the contract's JSON names, `...` drops one."""
    values: dict[str, Any] = {
        "ipsBlocks": 100,
        "gavBlocks": 20,
        "dpiSslBlocks": 7,
        "atpVerdicts": 3,
        "appControlBlocks": 11,
        "botnetBlocks": 5,
        "contentFilterBlocks": 40,
        "blockedConnections": 900,
        "bandwidthTotalMb": 5120,
        "activeSessionsCount": 250,
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not ...}


def snapshot(**overrides: Any) -> bytes:
    return json.dumps(counters(**overrides)).encode()


def live(poll_time: str, device: UUID = DEVICE, **overrides: Any) -> bytes:
    return json.dumps(
        {
            "deviceId": str(device),
            "lastPollTime": poll_time,
            "lastCounters": counters(**overrides),
            "lastStatus": {"cpu": 10},
            "lastSecurityFeatures": {},
        }
    ).encode()


def posture(*rows: tuple[datetime, dict[str, int | None]]) -> PostureSamples:
    """Posture rows given row-wise: (timestamp, {"ips": 1, "gav": 2, ...})."""
    return PostureSamples.from_rows(rows)


def rollup(
    posture_rows: PostureSamples = NO_POSTURE,
    snapshot_raw: bytes | None = None,
    live_raw: bytes | None = None,
) -> RollupRow | Rejection | Missing:
    return rollup_device_day(
        DEVICE, DAY, posture=posture_rows, snapshot=snapshot_raw, live=live_raw
    )


def row(outcome: RollupRow | Rejection | Missing) -> RollupRow:
    assert isinstance(outcome, RollupRow), outcome
    return outcome


def rejection(outcome: RollupRow | Rejection | Missing) -> Rejection:
    assert isinstance(outcome, Rejection), outcome
    return outcome


# --- the counter-drop rule ----------------------------------------------------------------------


def test_no_samples_is_no_value_not_zero() -> None:
    assert counter_total([]) is None


def test_single_sample_is_its_value() -> None:
    assert counter_total([42]) == 42


def test_rising_samples_total_is_the_final_value() -> None:
    assert counter_total([5, 20, 20, 75]) == 75


def test_equal_values_are_not_a_drop() -> None:
    assert counter_total([30, 30, 30]) == 30


def test_reboot_mid_day_adds_the_value_reached_before_it() -> None:
    assert counter_total([120, 340, 15, 80]) == 340 + 80


def test_admin_clear_to_zero_keeps_what_was_reached_before() -> None:
    assert counter_total([50, 90, 0, 30]) == 90 + 30


def test_clear_as_the_last_sample_keeps_the_value_before_it() -> None:
    assert counter_total([50, 90, 0]) == 90


def test_several_drops_each_count_once() -> None:
    assert counter_total([10, 40, 5, 30, 2, 8]) == 40 + 30 + 8


def test_drop_to_a_non_zero_value_counts_both_sides() -> None:
    assert counter_total([100, 60]) == 160


def test_reported_zeros_are_a_real_zero() -> None:
    assert counter_total([0, 0, 0]) == 0


def test_samples_are_put_in_time_order_first() -> None:
    assert series_total([(at(18), 300), (at(6), 100), (at(12), 200)]) == 300


def test_samples_with_the_same_time_are_ordered_by_value_so_no_drop_is_invented() -> None:
    assert series_total([(at(6), 100), (at(12), 250), (at(12), 200)]) == 250


def test_a_sample_without_the_counter_is_skipped() -> None:
    assert series_total([(at(6), 100), (at(12), None), (at(18), 150)]) == 150
    assert series_total([(at(6), None)]) is None


samples_strategy = st.lists(st.integers(min_value=0, max_value=10**6), max_size=12)


@given(samples_strategy)
def test_total_is_at_least_every_sample_and_at_most_their_sum(values: list[int]) -> None:
    total = counter_total(values)
    if not values:
        assert total is None
        return
    assert total is not None
    assert max(values) <= total <= sum(values)


@given(samples_strategy, st.integers(min_value=0, max_value=10**6), st.data())
def test_an_additional_sample_never_lowers_the_total(
    values: list[int], extra: int, data: st.DataObject
) -> None:
    position = data.draw(st.integers(min_value=0, max_value=len(values)))
    before = counter_total(values) or 0
    after = counter_total([*values[:position], extra, *values[position:]])
    assert after is not None
    assert after >= before


@given(st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=12))
def test_a_counter_that_never_drops_totals_its_last_value(values: list[int]) -> None:
    rising = sorted(values)
    assert counter_total(rising) == rising[-1]


@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=23), st.integers(min_value=0, max_value=500)),
        max_size=8,
    ),
    st.randoms(use_true_random=False),
)
def test_posture_rows_in_any_order_give_the_same_rollup(
    rows: list[tuple[int, int]], shuffler: random.Random
) -> None:
    samples = [(at(hour), {"ips": value, "gav": value // 2}) for hour, value in rows]
    shuffled = samples[:]
    shuffler.shuffle(shuffled)
    assert rollup(posture(*samples), snapshot()) == rollup(posture(*shuffled), snapshot())
    assert rollup(posture(*samples)) == rollup(posture(*shuffled))


# --- Redis readings ---------------------------------------------------------------------------


def test_snapshot_counters_are_read_by_their_contract_names() -> None:
    reading = read_snapshot(snapshot(), DEVICE)
    assert reading.taken_at is None
    assert reading.counters["ips"] == 100
    assert reading.counters["blocked_connections"] == 900
    assert reading.bandwidth_total_mb == 5120
    assert reading.active_sessions_count == 250


def test_snapshot_may_nest_the_counters_as_last_counters() -> None:
    raw = json.dumps({"deviceId": str(DEVICE), "lastCounters": counters(ipsBlocks=7)})
    assert read_snapshot(raw, DEVICE).counters["ips"] == 7


def test_optional_bandwidth_and_sessions_may_be_absent() -> None:
    reading = read_snapshot(snapshot(bandwidthTotalMb=..., activeSessionsCount=None), DEVICE)
    assert reading.bandwidth_total_mb is None
    assert reading.active_sessions_count is None


def test_fractional_bandwidth_is_rounded_to_the_nearest_megabyte() -> None:
    assert read_snapshot(snapshot(bandwidthTotalMb=1234.5), DEVICE).bandwidth_total_mb == 1235
    assert read_snapshot(snapshot(bandwidthTotalMb=1234.4), DEVICE).bandwidth_total_mb == 1234


@pytest.mark.parametrize(
    ("megabytes", "rounded"),
    [(0.49999999999999994, 0), (4503599627370497.0, 4503599627370497), (0.5, 1)],
)
def test_bandwidth_rounding_is_exact_at_the_edges_of_float(megabytes: float, rounded: int) -> None:
    assert read_snapshot(snapshot(bandwidthTotalMb=megabytes), DEVICE).bandwidth_total_mb == rounded


def test_whole_number_written_as_float_is_accepted() -> None:
    assert read_snapshot(snapshot(ipsBlocks=12.0), DEVICE).counters["ips"] == 12


MALFORMED_SNAPSHOTS = [
    (b"{not json", RejectReason.NOT_JSON),
    (b"", RejectReason.NOT_JSON),
    (b"\xff\xfe\x00garbage", RejectReason.NOT_JSON),
    (b'{"ipsBlocks": NaN}', RejectReason.NOT_JSON),
    (b"[1, 2, 3]", RejectReason.NOT_AN_OBJECT),
    (b'"counters"', RejectReason.NOT_AN_OBJECT),
    (json.dumps({"lastCounters": [1, 2]}).encode(), RejectReason.NOT_AN_OBJECT),
    (snapshot(atpVerdicts=...), RejectReason.MISSING_COUNTER),
    (snapshot(atpVerdicts=None), RejectReason.MISSING_COUNTER),
    (snapshot(ipsBlocks="12"), RejectReason.NON_NUMERIC),
    (snapshot(ipsBlocks=True), RejectReason.NON_NUMERIC),
    (snapshot(ipsBlocks=12.5), RejectReason.NON_NUMERIC),
    (snapshot(ipsBlocks={"value": 1}), RejectReason.NON_NUMERIC),
    (snapshot(activeSessionsCount="many"), RejectReason.NON_NUMERIC),
    (snapshot(gavBlocks=-1), RejectReason.NEGATIVE),
    (snapshot(bandwidthTotalMb=-0.7), RejectReason.NEGATIVE),
    (snapshot(bandwidthTotalMb=-0.4), RejectReason.NEGATIVE),
    (
        json.dumps({"deviceId": str(OTHER_DEVICE), **counters()}).encode(),
        RejectReason.WRONG_DEVICE,
    ),
]


@pytest.mark.parametrize(("raw", "reason"), MALFORMED_SNAPSHOTS)
def test_malformed_snapshot_is_refused_with_its_reason(raw: bytes, reason: RejectReason) -> None:
    with pytest.raises(MalformedSourceError) as caught:
        read_snapshot(raw, DEVICE)
    assert caught.value.reason is reason
    assert "daily snapshot" in caught.value.detail


def test_live_key_counts_only_for_the_day_of_its_last_poll() -> None:
    reading = read_live(live("2025-01-09T23:55:00.000Z"), DEVICE, DAY)
    assert reading is not None
    assert reading.taken_at == at(23, 55)
    assert read_live(live("2025-01-10T00:05:00.000Z"), DEVICE, DAY) is None


def test_live_poll_time_with_an_offset_is_converted_to_utc_first() -> None:
    assert read_live(live("2025-01-10T01:30:00+02:00"), DEVICE, DAY) is not None
    assert read_live(live("2025-01-09T23:30:00-02:00"), DEVICE, DAY) is None


def test_poll_time_without_an_offset_is_taken_as_utc() -> None:
    assert parse_poll_time("2025-01-09T10:00:00") == at(10)


@pytest.mark.parametrize(
    "poll_time",
    [None, 1736416800000, "yesterday", "2025-13-01T00:00:00Z", "0001-01-01T00:00:00+01:00"],
)
def test_unreadable_poll_time_is_refused(poll_time: object) -> None:
    raw = json.dumps({"lastPollTime": poll_time, "lastCounters": counters()})
    with pytest.raises(MalformedSourceError) as caught:
        read_live(raw, DEVICE, DAY)
    assert caught.value.reason is RejectReason.BAD_POLL_TIME


def test_live_key_of_another_day_is_not_validated_further() -> None:
    assert read_live(live("2025-01-10T08:00:00Z", ipsBlocks=-5), DEVICE, DAY) is None


# --- one device-day from its sources ----------------------------------------------------------


def test_normal_day_combines_posture_samples_with_the_snapshot_as_final_sample() -> None:
    samples = posture(
        (at(4), {"ips": 30, "gav": 5, "atp": 1, "botnet": 2, "content_filter": 10}),
        (at(10), {"ips": 60, "gav": 12, "atp": 2, "botnet": 3, "content_filter": 25}),
    )
    result = row(rollup(samples, snapshot()))
    assert result == RollupRow(
        device_id=DEVICE,
        day=DAY,
        threats_blocked=100 + 20 + 3 + 5,
        malware_blocked=20,
        ips_blocked=100,
        blocked_connections=900,
        web_filter_hits=40,
        bandwidth_total_mb=5120,
        active_sessions_count=250,
    )


def test_snapshot_missing_security_counters_come_from_posture_and_the_rest_is_unknown() -> None:
    samples = posture(
        (at(4), {"ips": 30, "gav": 5, "atp": 1, "botnet": 2, "content_filter": 10}),
        (at(16), {"ips": 70, "gav": 9, "atp": 4, "botnet": 2, "content_filter": 18}),
    )
    result = row(rollup(samples))
    assert (result.ips_blocked, result.malware_blocked, result.web_filter_hits) == (70, 9, 18)
    assert result.threats_blocked == 70 + 9 + 4 + 2
    assert result.blocked_connections is None
    assert result.bandwidth_total_mb is None
    assert result.active_sessions_count is None


def test_reboot_mid_day_between_posture_samples_and_snapshot() -> None:
    samples = posture(
        (at(4), {"ips": 200, "gav": 10, "atp": 1, "botnet": 0, "content_filter": 5}),
        (at(12), {"ips": 450, "gav": 30, "atp": 2, "botnet": 1, "content_filter": 9}),
        (at(16), {"ips": 20, "gav": 2, "atp": 0, "botnet": 0, "content_filter": 1}),
    )
    result = row(
        rollup(
            samples,
            snapshot(
                ipsBlocks=90, gavBlocks=8, atpVerdicts=1, botnetBlocks=0, contentFilterBlocks=4
            ),
        )
    )
    assert result.ips_blocked == 450 + 90
    assert result.malware_blocked == 30 + 8
    assert result.web_filter_hits == 9 + 4
    assert result.threats_blocked == (450 + 90) + (30 + 8) + (2 + 1) + (1 + 0)


def test_admin_clear_to_zero_keeps_the_blocks_counted_before_it() -> None:
    samples = posture(
        (at(6), {"ips": 80, "gav": 4, "atp": 0, "botnet": 0, "content_filter": 12}),
        (at(12), {"ips": 0, "gav": 0, "atp": 0, "botnet": 0, "content_filter": 0}),
    )
    result = row(
        rollup(
            samples,
            snapshot(
                ipsBlocks=25, gavBlocks=1, atpVerdicts=0, botnetBlocks=0, contentFilterBlocks=3
            ),
        )
    )
    assert result.ips_blocked == 80 + 25
    assert result.malware_blocked == 4 + 1
    assert result.web_filter_hits == 12 + 3


def test_only_a_live_key_from_another_day_is_missing_not_zero() -> None:
    assert rollup(live_raw=live("2025-01-10T00:15:00Z")) == Missing(DEVICE, DAY)


def test_only_a_live_key_from_the_day_gives_its_counters() -> None:
    result = row(rollup(live_raw=live("2025-01-09T23:58:00Z", ipsBlocks=64)))
    assert result.ips_blocked == 64
    assert result.blocked_connections == 900
    assert result.active_sessions_count == 250


def test_live_key_is_ignored_when_the_day_has_a_snapshot() -> None:
    result = row(
        rollup(
            snapshot_raw=snapshot(ipsBlocks=100),
            live_raw=live("2025-01-09T22:00:00Z", ipsBlocks=90),
        )
    )
    assert result.ips_blocked == 100


def test_live_reading_sits_at_its_poll_time_among_posture_samples() -> None:
    samples = posture((at(23, 59), {"ips": 70}))
    result = row(rollup(samples, live_raw=live("2025-01-09T20:00:00Z", ipsBlocks=50)))
    assert result.ips_blocked == 70


def test_live_reading_at_the_time_of_a_posture_row_does_not_invent_a_drop() -> None:
    samples = posture((at(20), {"ips": 70}))
    result = row(rollup(samples, live_raw=live("2025-01-09T20:00:00Z", ipsBlocks=50)))
    assert result.ips_blocked == 70


def test_malformed_snapshot_rejects_the_device_day_even_with_good_posture_rows() -> None:
    samples = posture((at(6), {"ips": 10, "gav": 1, "atp": 0, "botnet": 0, "content_filter": 2}))
    result = rejection(rollup(samples, b"<html>oops</html>"))
    assert result.reason is RejectReason.NOT_JSON
    assert (result.device_id, result.day) == (DEVICE, DAY)


def test_malformed_live_key_rejects_a_day_without_snapshot() -> None:
    assert rejection(rollup(live_raw=b"\x00\x01")).reason is RejectReason.NOT_JSON


def test_negative_posture_counter_rejects_the_device_day_naming_the_column() -> None:
    result = rejection(rollup(posture((at(6), {"ips": 10, "gav": -3})), snapshot()))
    assert result.reason is RejectReason.NEGATIVE
    assert "gav_daily_blocks" in result.detail


@pytest.mark.parametrize(("raw", "reason"), MALFORMED_SNAPSHOTS)
def test_malformed_snapshot_rejects_a_day_of_good_posture_rows_with_its_reason(
    raw: bytes, reason: RejectReason
) -> None:
    samples = posture(
        (at(6), {"ips": 10, "gav": 1, "atp": 0, "botnet": 0, "content_filter": 2}),
        (at(12), {"ips": 20, "gav": 2, "atp": 1, "botnet": 0, "content_filter": 3}),
    )
    assert rejection(rollup(samples, raw)).reason is reason


def test_snapshot_naming_its_own_device_in_capitals_is_accepted() -> None:
    raw = json.dumps({"deviceId": str(DEVICE).upper(), **counters()}).encode()
    assert row(rollup(posture((at(6), {"ips": 10})), raw)).ips_blocked == 100


@pytest.mark.parametrize("value", [-1, -2])
def test_any_negative_posture_value_rejects_the_device_day(value: int) -> None:
    samples = posture(
        (at(6), {"ips": 10, "gav": 1, "atp": 0, "botnet": 0, "content_filter": 2}),
        (at(12), {"ips": 20, "gav": 2, "atp": value, "botnet": 0, "content_filter": 3}),
    )
    result = rejection(rollup(samples, snapshot()))
    assert result.reason is RejectReason.NEGATIVE
    assert "atp_daily_verdicts" in result.detail


SECURITY_FIELDS = ("ipsBlocks", "gavBlocks", "atpVerdicts", "botnetBlocks", "contentFilterBlocks")
# Mostly plain counts, small so that equal values and drops are frequent; now and then a
# missing (None) or negative value, which the general path must handle.
posture_value = st.integers(min_value=-3, max_value=20).map(lambda v: None if v == -3 else v)


snapshot_values = st.fixed_dictionaries(
    {
        field: st.integers(min_value=0, max_value=20)
        for field in [*SECURITY_FIELDS, "blockedConnections", "activeSessionsCount"]
    }
)


def by_the_rule(rows: list[tuple[int, dict[str, int | None]]], final: dict[str, int]) -> Outcome:
    """The rollup the module docstring defines, from series_total alone: the test's oracle."""
    if any(v is not None and v < 0 for _, values in rows for v in values.values()):
        return Rejection(DEVICE, DAY, RejectReason.NEGATIVE, "")
    samples = posture(*((at(hour), values) for hour, values in rows))
    end_of_day = datetime.combine(date(2025, 1, 10), time())
    totals = {
        name: series_total([*samples.samples(name), (end_of_day, final[field])])
        for name, field in zip(SECURITY_COUNTERS, SECURITY_FIELDS, strict=True)
    }
    return RollupRow(
        DEVICE,
        DAY,
        threats_blocked=sum(totals[name] or 0 for name in ("ips", "gav", "atp", "botnet")),
        malware_blocked=totals["gav"],
        ips_blocked=totals["ips"],
        blocked_connections=final["blockedConnections"],
        web_filter_hits=totals["content_filter"],
        bandwidth_total_mb=5120,
        active_sessions_count=final["activeSessionsCount"],
    )


def assert_follows_the_rule(
    rows: list[tuple[int, dict[str, int | None]]], final: dict[str, int]
) -> None:
    outcome = rollup(posture(*((at(hour), values) for hour, values in rows)), snapshot(**final))
    expected = by_the_rule(rows, final)
    if isinstance(expected, Rejection):
        assert rejection(outcome).reason is RejectReason.NEGATIVE
    else:
        assert outcome == expected


@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=23),
            st.fixed_dictionaries(dict.fromkeys(SECURITY_COUNTERS, posture_value)),
        ),
        max_size=6,
    ),
    snapshot_values,
)
def test_a_day_with_a_snapshot_follows_the_counter_drop_rule_with_the_snapshot_last(
    rows: list[tuple[int, dict[str, int | None]]], final: dict[str, int]
) -> None:
    assert_follows_the_rule(rows, final)


@given(
    st.lists(st.integers(min_value=0, max_value=23), unique=True, max_size=6),
    st.lists(
        st.fixed_dictionaries(
            dict.fromkeys(SECURITY_COUNTERS, st.integers(min_value=0, max_value=20))
        ),
        min_size=6,
        max_size=6,
    ),
    snapshot_values,
)
def test_complete_posture_rows_in_any_order_follow_the_counter_drop_rule(
    hours: list[int], values: list[dict[str, int | None]], final: dict[str, int]
) -> None:
    assert_follows_the_rule(list(zip(hours, values, strict=False)), final)


counter_value = st.one_of(
    st.integers(min_value=0, max_value=20),
    st.integers(min_value=INT_MAX // 4 - 5, max_value=INT_MAX // 4 + 5),  # four sum past INT_MAX
    st.integers(min_value=INT_MAX - 3, max_value=INT_MAX),
)


@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=23),
            st.fixed_dictionaries(
                dict.fromkeys(SECURITY_COUNTERS, st.one_of(st.none(), counter_value))
            ),
        ),
        max_size=5,
    ),
    st.fixed_dictionaries(
        {
            field: st.one_of(counter_value, st.integers(min_value=INT_MAX, max_value=2**64))
            for field in [*SECURITY_FIELDS, "blockedConnections", "bandwidthTotalMb"]
        }
    ),
)
def test_the_usual_day_shortcut_gives_what_the_general_path_gives(
    rows: list[tuple[int, dict[str, int | None]]], final: dict[str, int]
) -> None:
    samples = posture(*((at(hour), values) for hour, values in rows))
    raw = snapshot(**final)
    general = general_path_of_rollup(DEVICE, DAY, posture=samples, snapshot=raw, live=None)
    assert rollup(samples, raw) == general


def test_day_without_any_data_is_missing() -> None:
    assert rollup() == Missing(DEVICE, DAY)


def test_posture_rows_without_any_counter_are_missing() -> None:
    assert rollup(posture((at(6), {}), (at(12), {}))) == Missing(DEVICE, DAY)


def test_threats_blocked_sums_the_services_that_reported() -> None:
    result = row(rollup(posture((at(6), {"ips": 10, "gav": 4, "atp": None, "botnet": None}))))
    assert result.threats_blocked == 14
    assert result.web_filter_hits is None


def test_total_beyond_the_int_column_is_rejected_not_written() -> None:
    samples = posture((at(6), {"content_filter": INT_MAX}), (at(12), {"content_filter": 5}))
    result = rejection(rollup(samples))
    assert result.reason is RejectReason.OUT_OF_RANGE
    assert "web_filter_hits" in result.detail


def test_threats_sum_beyond_the_int_column_is_rejected() -> None:
    raw = snapshot(ipsBlocks=INT_MAX, gavBlocks=1)
    assert rejection(rollup(snapshot_raw=raw)).reason is RejectReason.OUT_OF_RANGE


def test_bandwidth_may_exceed_int_but_not_bigint() -> None:
    assert row(rollup(snapshot_raw=snapshot(bandwidthTotalMb=INT_MAX + 1))).bandwidth_total_mb
    too_big = snapshot(bandwidthTotalMb=BIGINT_MAX + 1)
    assert rejection(rollup(snapshot_raw=too_big)).reason is RejectReason.OUT_OF_RANGE


def test_posture_samples_hold_the_time_then_each_security_counter() -> None:
    assert PostureSamples._fields == ("taken_at", *SECURITY_COUNTERS)
    assert PostureSamples((), (), (), (), (), ()) == NO_POSTURE


def test_rollup_metrics_are_the_tables_metric_columns() -> None:
    assert METRIC_NAMES == ROLLUP_METRICS
