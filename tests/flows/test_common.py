"""The retry conditions the worker flows put on their I/O tasks."""

from __future__ import annotations

import gc
import json
from typing import cast

import psycopg
import pytest
import redis
import sqlalchemy.exc
from prefect import flow
from prefect.client.schemas.objects import TaskRun
from prefect.states import Completed, Failed
from prefect.tasks import Task
from structlog.testing import capture_logs

from avian_workers.mail.mailbox import MailboxAuthError, MailboxConnectionError, MailboxTLSError
from avian_workers.microsoft import TenantAuthError
from flows._common import RetryOn, freeze_startup_objects, publish_summary, publish_table
from flows.edr_polling import retry_on_store_error
from flows.email_alerts import retry_on_io_error as retry_mailbox_task
from flows.metrics_aggregation import metrics_aggregation
from flows.metrics_aggregation import retry_on_io_error as retry_metrics_day

NO_TASK = cast("Task[..., object]", None)
NO_TASK_RUN = cast("TaskRun", None)
DATABASE_GONE = sqlalchemy.exc.OperationalError("SELECT 1", {}, OSError("connection reset"))


def test_a_condition_retries_the_errors_it_names_and_their_subclasses() -> None:
    retry = RetryOn((ConnectionError,))
    assert retry(NO_TASK, NO_TASK_RUN, Failed(data=ConnectionResetError("reset"))) is True
    assert retry(NO_TASK, NO_TASK_RUN, Failed(data=ValueError("bad data"))) is False


def test_a_condition_never_retries_a_state_without_an_error() -> None:
    assert RetryOn((ConnectionError,))(NO_TASK, NO_TASK_RUN, Completed(data=None)) is False


def test_a_condition_names_its_errors_for_the_retry_log_line() -> None:
    assert (
        repr(RetryOn((ConnectionError, TimeoutError))) == "RetryOn(ConnectionError, TimeoutError)"
    )


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (MailboxConnectionError("connection reset by the IMAP server"), True),
        (DATABASE_GONE, True),
        (redis.exceptions.TimeoutError("Redis timed out"), True),
        (MailboxAuthError("login refused"), False),
        (MailboxTLSError("certificate not trusted"), False),
        (KeyError("a bug"), False),
    ],
)
def test_mailbox_tasks_retry_only_when_the_server_or_a_store_failed_to_answer(
    error: Exception, retried: bool
) -> None:
    assert retry_mailbox_task(NO_TASK, NO_TASK_RUN, Failed(data=error)) is retried


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (DATABASE_GONE, True),
        (redis.exceptions.ConnectionError("Redis went away"), True),
        # Microsoft errors were retried request by request within the tenant's budget already.
        (TenantAuthError("AADSTS7000215: invalid client secret"), False),
        (ConnectionError("Microsoft reset the connection"), False),
    ],
)
def test_edr_datasets_retry_only_when_a_store_failed_to_answer(
    error: Exception, retried: bool
) -> None:
    assert retry_on_store_error(NO_TASK, NO_TASK_RUN, Failed(data=error)) is retried


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (DATABASE_GONE, True),
        # The posture cursor and the rollup COPY use psycopg directly, unwrapped by SQLAlchemy.
        (psycopg.OperationalError("consuming input failed: server closed the connection"), True),
        (redis.exceptions.TimeoutError("Redis timed out"), True),
        (psycopg.errors.CardinalityViolation("a row affected twice"), False),
        (ValueError("a device appears twice on one day"), False),
    ],
)
def test_metrics_days_retry_only_when_a_store_failed_to_answer(
    error: Exception, retried: bool
) -> None:
    assert retry_metrics_day(NO_TASK, NO_TASK_RUN, Failed(data=error)) is retried


def test_objects_alive_at_the_first_run_are_left_out_of_garbage_collections_once() -> None:
    freeze_startup_objects.cache_clear()
    gc.unfreeze()
    try:
        freeze_startup_objects()
        frozen = gc.get_freeze_count()
        gc.collect()
        assert frozen > 0
        freeze_startup_objects()  # a later run of the same process freezes nothing more
        # (frozen objects still go when nothing refers to them, so the count may only fall)
        assert gc.get_freeze_count() <= frozen
    finally:
        gc.unfreeze()  # the rest of the test session is collected as usual


@pytest.mark.usefixtures("prefect_server")
def test_an_artifact_the_api_refuses_is_logged_and_the_run_still_completes() -> None:
    @flow
    def finished_work() -> str:
        publish_table(key="Not A Valid Key!", rows=[{"day": "2025-01-09"}], description="x")
        publish_summary(key="also Invalid", title="t", rows=[], totals={"rows": 1})
        return "done"

    with capture_logs() as logs:
        state = finished_work(return_state=True)

    assert state.is_completed()
    assert state.result() == "done"
    warnings = [(e["event"], e["artifact"]) for e in logs if e["log_level"] == "warning"]
    assert warnings == [
        ("Run artifact not published", "Not A Valid Key!"),
        ("Run artifact not published", "also Invalid"),
        ("Run artifact not published", "also Invalid-summary"),
    ]


def test_outside_a_flow_run_nothing_is_published() -> None:
    publish_table(key="Not A Valid Key!", rows=[{"a": 1}], description="x")  # no error either


@pytest.mark.usefixtures("prefect_server")
def test_a_flow_run_with_invalid_settings_says_why_in_a_json_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NODE_ENV", "prod")  # not one of production, staging, ...

    state = metrics_aggregation(return_state=True)

    assert state.is_failed()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    errors = [line for line in lines if line.get("level") == "error"]
    assert [e["message"].split(":")[0] for e in errors] == ["Invalid configuration", "Run metrics"]
    assert "NODE_ENV" in errors[0]["message"]
    assert errors[0]["workerType"] == "metrics-aggregation"
    assert "timestamp" in errors[0]
