"""Every finished flow run leaves one CloudWatch EMF line on stdout."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from flows.metrics_aggregation import metrics_aggregation


def _emf_lines(output: str) -> list[dict[str, Any]]:
    documents = []
    for line in output.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            documents.append(json.loads(line))
    return documents


@pytest.mark.usefixtures("prefect_server", "redis_prefix")
def test_completed_run_emits_success_and_item_counts(
    db: Engine, capfd: pytest.CaptureFixture[str]
) -> None:
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date()
    state = metrics_aggregation(start_date=yesterday, end_date=yesterday, return_state=True)
    assert state.is_completed()
    (document,) = _emf_lines(capfd.readouterr().out)
    assert document["WorkerType"] == "metrics-aggregation"
    assert document["ExecutionSuccess"] == 1
    assert document["ExecutionFailure"] == 0
    assert document["ItemsProcessed_rows_written"] == 0


@pytest.mark.usefixtures("prefect_server", "redis_prefix")
def test_failed_run_emits_failure(db: Engine, capfd: pytest.CaptureFixture[str]) -> None:
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date()
    state = metrics_aggregation(start_date=tomorrow, end_date=tomorrow, return_state=True)
    assert state.is_failed()
    (document,) = _emf_lines(capfd.readouterr().out)
    assert document["WorkerType"] == "metrics-aggregation"
    assert document["ExecutionFailure"] == 1
    assert document["ErrorCount"] >= 1
