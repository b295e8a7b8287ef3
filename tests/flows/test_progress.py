"""Long steps report progress: a Prefect progress artifact per run, a bar on a terminal."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)
from prefect.client.schemas.objects import Artifact, State
from rich.console import Console
from sqlalchemy import Engine

from flows._runner import run_worker
from flows.edr_polling import edr_polling
from flows.email_alerts import email_alerts
from flows.metrics_aggregation import metrics_aggregation
from tests.avian_workers.edr.tenants import edr_tenant
from tests.avian_workers.mail.emails import fixture, seed
from tests.avian_workers.mail.platform import add_firewalls
from tests.plugins.dovecot import ImapAccount
from tests.plugins.microsoft_simulator import MicrosoftSimulatorHandle

pytestmark = pytest.mark.usefixtures("prefect_server")

ANSI_ESCAPE = "\x1b["
YESTERDAY = datetime.now(UTC).date() - timedelta(days=1)
THREE_DAYS = {
    "start_date": (YESTERDAY - timedelta(days=2)).isoformat(),
    "end_date": YESTERDAY.isoformat(),
}


def progress_artifact(state: State[Any], key: str) -> Artifact:
    """The run's progress artifact named `key`, as the Prefect API holds it."""
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
            )
        )
    return artifact


def test_metrics_run_leaves_a_progress_artifact_at_100_naming_the_days(
    db: Engine, redis_client: redis.Redis
) -> None:
    state: State[Any] = metrics_aggregation(**THREE_DAYS, return_state=True)

    assert state.is_completed()
    artifact = progress_artifact(state, "metrics-aggregation-progress")
    assert artifact.type == "progress"
    assert artifact.data == 100
    assert artifact.description == "3 of 3 days aggregated"


@pytest.fixture
def mailbox(
    imap_account: ImapAccount,
    monkeypatch: pytest.MonkeyPatch,
    db: Engine,
    redis_client: redis.Redis,
) -> ImapAccount:
    """An alert inbox the worker's environment points at, with the firewalls mail names."""
    add_firewalls(db)
    for name, value in imap_account.env().items():
        monkeypatch.setenv(name, value)
    return imap_account


def test_email_run_counts_messages_against_the_unseen_count(mailbox: ImapAccount) -> None:
    mailbox.append(
        [
            seed("ips-critical-01.eml"),
            seed("unknown-device-01.eml"),
            fixture("non-alert-maintenance.eml"),
        ]
    )

    state: State[Any] = email_alerts(return_state=True)

    assert state.is_completed()
    artifact = progress_artifact(state, "email-alerts-progress")
    assert (artifact.data, artifact.description) == (100, "3 of 3 messages processed")


def test_edr_run_counts_tenants_as_they_finish(
    microsoft_simulator_env: MicrosoftSimulatorHandle,
    monkeypatch: pytest.MonkeyPatch,
    db: Engine,
    redis_client: redis.Redis,
    moto_reset: str,
) -> None:
    sim = microsoft_simulator_env
    monkeypatch.setenv("MS_AUTHORITY_HOST", sim.authority_host)
    monkeypatch.setenv("MS_GRAPH_BASE_URL", sim.graph_base_url)
    monkeypatch.setenv("MS_DEFENDER_BASE_URL", sim.defender_base_url)
    tenants = [
        edr_tenant(db, sim, name=name, devices=5, alerts=3, cves=3, policies=2)
        for name in ("First", "Second")
    ]

    state: State[Any] = edr_polling(tenant_ids=[t.id for t in tenants], return_state=True)

    assert state.is_completed()
    artifact = progress_artifact(state, "edr-polling-progress")
    assert (artifact.data, artifact.description) == (100, "2 of 2 tenants polled")


def test_an_email_run_that_cannot_log_in_ends_its_progress_artifact_at_100_as_stopped(
    mailbox: ImapAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAP_PASSWORD", "not-the-password")
    mailbox.append([seed("ips-critical-01.eml")])

    state: State[Any] = email_alerts(return_state=True)

    assert state.is_failed()
    artifact = progress_artifact(state, "email-alerts-progress")
    assert (artifact.data, artifact.description) == (100, "stopped after 0 messages processed")


# --- the CLI ----------------------------------------------------------------------------------


def test_cli_on_a_terminal_shows_the_label_and_counts_while_stdout_keeps_json_lines(
    db: Engine, redis_client: redis.Redis, capfd: pytest.CaptureFixture[str]
) -> None:
    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, force_interactive=True, width=120)

    assert run_worker("metrics-aggregation", THREE_DAYS, console=terminal) == 0

    assert "days aggregated" in screen.getvalue()
    assert "3/3" in screen.getvalue()
    stdout = capfd.readouterr().out
    assert ANSI_ESCAPE not in stdout
    lines = [json.loads(line) for line in stdout.splitlines()]  # every line is JSON
    assert lines[0]["message"] == "Starting worker: metrics-aggregation"
    assert any(line.get("message") == "Worker completed" for line in lines)


def test_cli_without_a_terminal_prints_no_bar_and_no_escape_codes(
    db: Engine, redis_client: redis.Redis, capfd: pytest.CaptureFixture[str]
) -> None:
    assert run_worker("metrics-aggregation", THREE_DAYS) == 0  # stderr is not a terminal here

    output = capfd.readouterr()
    assert ANSI_ESCAPE not in output.out + output.err
    assert "━" not in output.err
    for line in output.out.splitlines():
        json.loads(line)
