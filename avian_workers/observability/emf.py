"""CloudWatch metrics of a worker run as Embedded Metric Format (EMF) log lines, without AWS calls.

CloudWatch Logs extracts metrics from a log event only when the whole event is one JSON object
with an `_aws` member at its root (EMF specification, "Root node"). The ECS awslogs driver sends
each stdout line as one log event, so a run's metrics are one raw JSON line on stdout, written
beside the structlog lines rather than through them: the renderer would file the document under
`message` and add its own members, and CloudWatch would store an ordinary log line and extract
nothing.

One document per run, namespace `AVIAN/Workers`, one dimension set `[WorkerType]`:

    ExecutionDuration       Milliseconds  wall time of the run
    ExecutionSuccess        Count         1 when the run succeeded, else 0
    ExecutionFailure        Count         1 when the run failed, else 0
    ErrorCount              Count         errors the run counted and survived
    ItemsProcessed_<kind>   Count         one metric per kind of item (tenants, messages, days ...)

Items get one metric name per kind rather than an `ItemKind` dimension: a dimension's value is a
single root member, so one document could carry one kind only and a run would need a line per
kind. The kinds are few and fixed in code, so the number of custom metrics stays small. Success
and failure are both always present, so `SampleCount` of either counts runs (the "no execution"
alarm) and `Sum` counts outcomes. `Environment` is a plain member (searchable in Logs Insights),
not a dimension: each environment gets its own stack of alarms on `[WorkerType]`. The line also
carries the contract's log-line members (`level`, `message`, `timestamp`, `workerType`, `nodeEnv`).
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

NAMESPACE = "AVIAN/Workers"
DIMENSION = "WorkerType"
ITEMS_METRIC_PREFIX = "ItemsProcessed_"

# Limits from the EMF specification and the CloudWatch API.
MAX_METRICS_PER_DIRECTIVE = 100
MAX_DIMENSION_VALUE_LENGTH = 1024
_FIXED_METRICS = ("ExecutionDuration", "ExecutionSuccess", "ExecutionFailure", "ErrorCount")
MAX_ITEM_KINDS = MAX_METRICS_PER_DIRECTIVE - len(_FIXED_METRICS)

_ITEM_KIND = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def run_metrics_document(
    *,
    worker_type: str,
    duration_seconds: float,
    succeeded: bool,
    items: Mapping[str, int],
    errors: int,
    timestamp: datetime,
    environment: str | None = None,
) -> dict[str, Any]:
    """The EMF document of one run; ValueError names the first invalid argument."""
    worker_type = str(worker_type)  # a WorkerType member serialises as its value
    if not worker_type.strip() or len(worker_type) > MAX_DIMENSION_VALUE_LENGTH:
        raise ValueError(
            f"worker_type must be 1 to {MAX_DIMENSION_VALUE_LENGTH} characters, not {worker_type!r}"
        )
    if isinstance(duration_seconds, bool) or not (
        isinstance(duration_seconds, int | float)
        and math.isfinite(duration_seconds)
        and duration_seconds >= 0
    ):
        raise ValueError(f"duration_seconds must be a finite number >= 0, not {duration_seconds!r}")
    if timestamp.tzinfo is None:
        raise ValueError("timestamp must be timezone-aware (EMF timestamps are UTC epoch ms)")
    _check_count("errors", errors)
    if len(items) > MAX_ITEM_KINDS:
        raise ValueError(
            f"at most {MAX_ITEM_KINDS} item kinds fit in one document, got {len(items)}"
        )
    for kind, count in items.items():
        if not isinstance(kind, str) or not _ITEM_KIND.fullmatch(kind):
            raise ValueError(
                f"item kind {kind!r} must be a letter then up to 63 letters, digits, '_' or '-'"
            )
        _check_count(f"items[{kind!r}]", count)

    values: dict[str, int] = {
        "ExecutionDuration": round(duration_seconds * 1000),
        "ExecutionSuccess": 1 if succeeded else 0,
        "ExecutionFailure": 0 if succeeded else 1,
        "ErrorCount": errors,
    }
    units = dict.fromkeys(values, "Count") | {"ExecutionDuration": "Milliseconds"}
    for kind, count in items.items():
        values[ITEMS_METRIC_PREFIX + kind] = count
        units[ITEMS_METRIC_PREFIX + kind] = "Count"

    document: dict[str, Any] = {
        # The contract's log-line members, so the line reads like every other one in Logs
        # Insights; CloudWatch's metric extraction ignores members the directive does not name.
        "level": "info" if succeeded else "error",
        "message": "Run metrics",
        "timestamp": timestamp.astimezone(UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "workerType": worker_type,
        **({"nodeEnv": environment} if environment is not None else {}),
        "_aws": {
            "Timestamp": (timestamp - _EPOCH) // timedelta(milliseconds=1),
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [[DIMENSION]],
                    "Metrics": [{"Name": name, "Unit": units[name]} for name in values],
                }
            ],
        },
        DIMENSION: worker_type,
        **values,
    }
    if environment is not None:
        document["Environment"] = environment
    return document


def _check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, not {value!r}")


def emit_run_metrics(
    *,
    worker_type: str,
    duration_seconds: float,
    succeeded: bool,
    items: Mapping[str, int],
    errors: int,
    timestamp: datetime,
    environment: str | None = None,
    stream: TextIO | None = None,
) -> dict[str, Any]:
    """Write the run's EMF document as one JSON line to `stream` (stdout by default) and return it.

    The document must be a log event of its own, at top level: see the module docstring. `stream`
    defaults to the `sys.stdout` of the moment of the call, so redirections made after import
    (test capture, the CLI) are honoured.
    """
    document = run_metrics_document(
        worker_type=worker_type,
        duration_seconds=duration_seconds,
        succeeded=succeeded,
        items=items,
        errors=errors,
        timestamp=timestamp,
        environment=environment,
    )
    out = stream if stream is not None else sys.stdout
    # One write of the whole line: lines of concurrent writers never interleave inside it.
    out.write(json.dumps(document, separators=(",", ":"), allow_nan=False) + "\n")
    out.flush()
    return document


def record_run(
    worker_type: str,
    started_monotonic: float,
    succeeded: bool,
    items: Mapping[str, int],
    errors: int,
    *,
    environment: str | None = None,
    stream: TextIO | None = None,
) -> dict[str, Any]:
    """Emit the metrics of a run that started at `time.monotonic() == started_monotonic`."""
    return emit_run_metrics(
        worker_type=worker_type,
        duration_seconds=max(0.0, time.monotonic() - started_monotonic),
        succeeded=succeeded,
        items=items,
        errors=errors,
        timestamp=datetime.now(UTC),
        environment=environment,
        stream=stream,
    )
