"""The demo's wiring: workers pointed at loopback only, signals that end it cleanly."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from avian_workers.demo.run import describe_result, first_clause, worker_environment
from avian_workers.demo.services import (
    LOOPBACK,
    ImapAccount,
    MicrosoftSimulatorService,
    issue_certificates,
    signals_end_the_demo,
    signals_ignored,
)
from avian_workers.edr.sync import TenantReport
from avian_workers.metrics.aggregate import AggregationSummary, DayReport
from avian_workers.settings import load_settings
from flows.edr_polling import PollingSummary


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[MicrosoftSimulatorService]:
    service = MicrosoftSimulatorService(issue_certificates(tmp_path / "tls"))
    service.start()
    yield service
    service.stop()


def test_the_workers_reach_nothing_but_the_demos_loopback_services(
    simulator: MicrosoftSimulatorService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = worker_environment(
        database_url="postgresql://postgres@/avian_demo?host=/tmp/pg",
        redis_url="unix:///tmp/avian-demo/redis.sock",
        aws_endpoint_url="http://127.0.0.1:5000",
        simulator=simulator.server,
        imap=ImapAccount(LOOPBACK, 10143, "alerts", "secret-password"),
        ca_bundle=tmp_path / "ca.pem",
    )

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    urls = [
        settings.aws_endpoint_url,
        settings.ms_authority_host,
        settings.ms_graph_base_url,
        settings.ms_defender_base_url,
    ]
    assert {urlsplit(url).hostname for url in urls if url} == {LOOPBACK}
    assert settings.imap_host == LOOPBACK
    assert settings.imap_tls == "starttls"
    assert settings.ca_bundle == str(tmp_path / "ca.pem")
    assert env["SSL_CERT_FILE"] == env["REQUESTS_CA_BUNDLE"] == env["AVIAN_CA_BUNDLE"]
    assert env["AWS_EC2_METADATA_DISABLED"] == "true"


def test_sigterm_ends_the_demo_by_unwinding_like_ctrl_c() -> None:
    with pytest.raises(SystemExit) as exited, signals_end_the_demo():
        os.kill(os.getpid(), signal.SIGTERM)
    assert exited.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_ctrl_c_is_ignored_while_the_services_stop() -> None:
    with signals_ignored():
        os.kill(os.getpid(), signal.SIGINT)  # would raise KeyboardInterrupt otherwise
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_summary_note_is_an_error_without_its_advice() -> None:
    error = "AADSTS7000215: the client secret is wrong (store the secret's value, not its ID)"

    assert first_clause(error) == "AADSTS7000215: the client secret is wrong"
    assert first_clause("timeout") == "timeout"


def test_each_flow_result_reads_as_one_line() -> None:
    polling = PollingSummary(
        (
            TenantReport("1", "Contoso", "succeeded"),
            TenantReport("2", "Fabrikam", "warning"),
            TenantReport("3", "Tailspin", "failed", error="token refused"),
        )
    )
    metrics = AggregationSummary(
        days=(
            DayReport(date(2026, 3, 9), devices=4, aggregated=3, missing=1, rows_inserted=3),
            DayReport(date(2026, 3, 10), devices=4, aggregated=4, rows_updated=1),
        ),
        retention_cutoff=date(2025, 3, 10),
        rollups_deleted=0,
    )

    assert describe_result(polling) == ("3 tenants: 1 succeeded, 1 with warnings, 1 failed")
    assert describe_result(metrics) == (
        "2 days: 7 aggregated, 1 missing, 0 rejected, 4 rows written"
    )
    assert describe_result(None) == ""
