"""EMF lines of a run: parsed back and validated against the Embedded Metric Format specification.

`emf_schema.json` holds the specification's JSON schema; `spec_violations` checks the rules a
schema cannot express (members named by the directives, value types, limits, epoch milliseconds).
"""

import io
import json
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from avian_workers.observability.emf import (
    MAX_ITEM_KINDS,
    emit_run_metrics,
    record_run,
    run_metrics_document,
)

SCHEMA = json.loads((Path(__file__).parent / "emf_schema.json").read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft7Validator(SCHEMA)

# 2000-01-01 to 2100-01-01 in milliseconds: a time in seconds or microseconds falls outside.
_EPOCH_MS_RANGE = (946_684_800_000, 4_102_444_800_000)

RUN_END = datetime(2024, 12, 9, 10, 0, 0, 123_000, tzinfo=UTC)


def spec_violations(document: dict[str, Any]) -> list[str]:
    """Rules of the specification about root members that JSON schema cannot state."""
    problems: list[str] = []
    metadata = document.get("_aws", {})
    stamp = metadata.get("Timestamp")
    if not isinstance(stamp, int) or not _EPOCH_MS_RANGE[0] <= stamp <= _EPOCH_MS_RANGE[1]:
        problems.append(f"Timestamp {stamp!r} is not epoch milliseconds")
    for directive in metadata.get("CloudWatchMetrics", []):
        metrics = directive.get("Metrics", [])
        if len(metrics) > 100:
            problems.append(f"{len(metrics)} metrics in one directive (at most 100)")
        names = [metric.get("Name") for metric in metrics]
        if len(names) != len(set(names)):
            problems.append(f"a metric is defined twice: {names}")
        for name in names:
            value = document.get(name)
            if isinstance(value, list):
                if len(value) > 100 or not all(_is_number(v) for v in value):
                    problems.append(f"metric {name!r} is not an array of at most 100 numbers")
            elif not _is_number(value):
                problems.append(f"metric {name!r} has no numeric root member: {value!r}")
        for dimension_set in directive.get("Dimensions", []):
            if len(dimension_set) > 30:
                problems.append(f"{len(dimension_set)} dimensions in one set (at most 30)")
            for key in dimension_set:
                if not isinstance(document.get(key), str):
                    problems.append(f"dimension {key!r} has no string root member")
    return problems


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def assert_valid_emf(document: dict[str, Any]) -> None:
    schema_errors = [error.message for error in VALIDATOR.iter_errors(document)]
    assert schema_errors == []
    assert spec_violations(document) == []


def emitted_documents(text: str) -> list[dict[str, Any]]:
    """Every line parsed on its own, as CloudWatch Logs parses one log event."""
    documents = [json.loads(line) for line in text.splitlines()]
    assert all(isinstance(document, dict) for document in documents)
    return documents


def emit(**overrides: Any) -> tuple[dict[str, Any], str]:
    arguments: dict[str, Any] = {
        "worker_type": "edr-polling",
        "duration_seconds": 1.5,
        "succeeded": True,
        "items": {"tenants": 3, "devices": 250},
        "errors": 1,
        "timestamp": RUN_END,
    }
    stream = io.StringIO()
    returned = emit_run_metrics(**(arguments | overrides), stream=stream)
    return returned, stream.getvalue()


def test_the_schema_is_a_valid_draft7_schema() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"succeeded": False, "errors": 4},
        {"items": {}},
        {"environment": "production"},
        {"worker_type": "metrics-aggregation", "items": {"days": 2, "device_days": 40}},
    ],
    ids=["success", "failure", "no-items", "environment", "other-worker"],
)
def test_each_run_writes_exactly_one_line_that_is_a_valid_emf_document(
    overrides: dict[str, Any],
) -> None:
    returned, text = emit(**overrides)
    assert text.endswith("\n")
    (document,) = emitted_documents(text)
    assert document == returned
    assert_valid_emf(document)


def test_the_document_is_top_level_json_under_namespace_and_worker_type() -> None:
    _, text = emit(environment="staging")
    (document,) = emitted_documents(text)
    (directive,) = document["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "AVIAN/Workers"
    assert directive["Dimensions"] == [["WorkerType"]]
    assert document["WorkerType"] == "edr-polling"
    assert document["Environment"] == "staging"


def test_the_line_has_the_contracts_log_members_beside_the_metrics() -> None:
    _, text = emit(environment="staging")
    (document,) = emitted_documents(text)
    assert {key: document[key] for key in ("level", "message", "workerType", "nodeEnv")} == {
        "level": "info",
        "message": "Run metrics",
        "workerType": "edr-polling",
        "nodeEnv": "staging",
    }
    assert document["timestamp"] == RUN_END.isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )
    failed, _ = emit(succeeded=False)
    assert failed["level"] == "error"


def test_metrics_and_units_of_a_successful_run() -> None:
    document, _ = emit()
    units = {m["Name"]: m["Unit"] for m in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert units == {
        "ExecutionDuration": "Milliseconds",
        "ExecutionSuccess": "Count",
        "ExecutionFailure": "Count",
        "ErrorCount": "Count",
        "ItemsProcessed_tenants": "Count",
        "ItemsProcessed_devices": "Count",
    }
    values = {name: document[name] for name in units}
    assert values == {
        "ExecutionDuration": 1500,
        "ExecutionSuccess": 1,
        "ExecutionFailure": 0,
        "ErrorCount": 1,
        "ItemsProcessed_tenants": 3,
        "ItemsProcessed_devices": 250,
    }


def test_a_failed_run_counts_one_failure_and_no_success() -> None:
    document, _ = emit(succeeded=False)
    assert (document["ExecutionSuccess"], document["ExecutionFailure"]) == (0, 1)


def test_timestamp_is_epoch_milliseconds_of_the_instant_whatever_its_zone() -> None:
    eastern = RUN_END.astimezone(timezone(timedelta(hours=-5)))
    document, _ = emit(timestamp=eastern)
    assert document["_aws"]["Timestamp"] == 1_733_738_400_123


def test_without_a_stream_the_line_goes_to_stdout_of_the_moment(
    capsys: pytest.CaptureFixture[str],
) -> None:
    emit_run_metrics(
        worker_type="email-alerts",
        duration_seconds=0.25,
        succeeded=True,
        items={"messages": 7},
        errors=0,
        timestamp=RUN_END,
    )
    (document,) = emitted_documents(capsys.readouterr().out)
    assert document["WorkerType"] == "email-alerts"
    assert document["ItemsProcessed_messages"] == 7


def test_record_run_measures_from_the_monotonic_start_and_stamps_the_end() -> None:
    stream = io.StringIO()
    before_ms = int(time.time() * 1000)
    record_run("edr-polling", time.monotonic() - 2.0, True, {"tenants": 1}, 0, stream=stream)
    after_ms = int(time.time() * 1000) + 1
    (document,) = emitted_documents(stream.getvalue())
    assert_valid_emf(document)
    assert document["ExecutionDuration"] >= 2000
    assert before_ms <= document["_aws"]["Timestamp"] <= after_ms


def test_the_largest_number_of_item_kinds_still_fits_one_directive() -> None:
    items = {f"kind{i}": i for i in range(MAX_ITEM_KINDS)}
    document, _ = emit(items=items)
    assert len(document["_aws"]["CloudWatchMetrics"][0]["Metrics"]) == 100
    assert_valid_emf(document)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"timestamp": datetime(2024, 12, 9, 10, 0)}, "timestamp"),  # noqa: DTZ001 - the point
        ({"duration_seconds": -0.1}, "duration_seconds"),
        ({"duration_seconds": float("nan")}, "duration_seconds"),
        ({"duration_seconds": float("inf")}, "duration_seconds"),
        ({"errors": -1}, "errors"),
        ({"errors": True}, "errors"),
        ({"items": {"tenants": -3}}, "tenants"),
        ({"items": {"tenants": 2.5}}, "tenants"),
        ({"items": {"has space": 1}}, "has space"),
        ({"items": {"": 1}}, "item kind"),
        ({"items": {f"k{i}": 1 for i in range(MAX_ITEM_KINDS + 1)}}, "item kinds"),
        ({"worker_type": " "}, "worker_type"),
    ],
)
def test_invalid_arguments_are_refused_by_name_and_nothing_is_written(
    overrides: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        emit(**overrides)
    stream = io.StringIO()
    with pytest.raises(ValueError, match=named):
        emit_run_metrics(
            **{
                "worker_type": "edr-polling",
                "duration_seconds": 1.0,
                "succeeded": True,
                "items": {},
                "errors": 0,
                "timestamp": RUN_END,
            }
            | overrides,
            stream=stream,
        )
    assert stream.getvalue() == ""


@given(
    duration=st.floats(min_value=0, max_value=7 * 24 * 3600, allow_nan=False),
    items=st.dictionaries(
        st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,20}", fullmatch=True),
        st.integers(min_value=0, max_value=10**9),
        max_size=12,
    ),
    errors=st.integers(min_value=0, max_value=10**6),
    succeeded=st.booleans(),
    stamp=st.datetimes(
        min_value=datetime(2001, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive
        max_value=datetime(2099, 12, 31),  # noqa: DTZ001
        timezones=st.just(UTC),
    ),
)
def test_every_valid_run_yields_a_valid_document(
    duration: float, items: dict[str, int], errors: int, succeeded: bool, stamp: datetime
) -> None:
    document = run_metrics_document(
        worker_type="email-alerts",
        duration_seconds=duration,
        succeeded=succeeded,
        items=items,
        errors=errors,
        timestamp=stamp,
    )
    assert_valid_emf(json.loads(json.dumps(document)))


def _valid() -> dict[str, Any]:
    return {
        "_aws": {
            "Timestamp": 1_733_738_400_123,
            "CloudWatchMetrics": [
                {
                    "Namespace": "AVIAN/Workers",
                    "Dimensions": [["WorkerType"]],
                    "Metrics": [{"Name": "Runs", "Unit": "Count"}],
                }
            ],
        },
        "WorkerType": "edr-polling",
        "Runs": 1,
    }


def _broken(change: Any) -> dict[str, Any]:
    document = _valid()
    change(document)
    return document


def _directive(document: dict[str, Any]) -> dict[str, Any]:
    directive: dict[str, Any] = document["_aws"]["CloudWatchMetrics"][0]
    return directive


def _thirty_one_dimensions(document: dict[str, Any]) -> None:
    _directive(document)["Dimensions"] = [[f"d{i}" for i in range(31)]]
    document.update({f"d{i}": "x" for i in range(31)})


def _hundred_and_one_metrics(document: dict[str, Any]) -> None:
    _directive(document)["Metrics"] = [{"Name": f"m{i}"} for i in range(101)]
    document.update({f"m{i}": i for i in range(101)})


@pytest.mark.parametrize(
    "document",
    [
        _broken(lambda d: d.pop("_aws")),
        _broken(lambda d: d["_aws"].pop("Timestamp")),
        _broken(lambda d: d["_aws"].update(Timestamp=1_733_738_400)),  # seconds
        _broken(lambda d: d["_aws"].update(Timestamp="2024-12-09T10:00:00Z")),
        _broken(lambda d: _directive(d).pop("Namespace")),
        _broken(lambda d: _directive(d).update(Dimensions=[])),
        _broken(lambda d: d.pop("Runs")),
        _broken(lambda d: d.update(Runs="1")),
        _broken(lambda d: d.update(Runs=True)),
        _broken(lambda d: d.update(Runs=list(range(101)))),
        _broken(lambda d: d.pop("WorkerType")),
        _broken(lambda d: d.update(WorkerType=3)),
        _broken(lambda d: _directive(d)["Metrics"][0].update(Unit="Minutes")),
        _broken(lambda d: _directive(d)["Metrics"][0].update(StorageResolution=30)),
        _broken(lambda d: _directive(d)["Metrics"].append({"Name": "Runs"})),
        _broken(_thirty_one_dimensions),
        _broken(_hundred_and_one_metrics),
    ],
)
def test_the_validation_rejects_documents_that_break_the_specification(
    document: dict[str, Any],
) -> None:
    schema_errors = list(VALIDATOR.iter_errors(document))
    assert schema_errors or spec_violations(document)


def test_the_validation_accepts_the_reference_document() -> None:
    assert_valid_emf(_valid())
