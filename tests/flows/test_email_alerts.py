"""The email-alerts flow end to end: real Dovecot over TLS, PostgreSQL, Redis and a Prefect server."""

from __future__ import annotations

import base64
import io
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.client.schemas.objects import State
from prefect.settings import get_current_settings
from pydantic import SecretStr
from sqlalchemy import Engine, text

from avian_workers.locks import hold
from avian_workers.mail.mailbox import Mailbox, MailboxAuthError
from avian_workers.mail.triage import identify
from avian_workers.redis_store import RedisKeys
from avian_workers.settings import Settings
from avian_workers.simulator import INTROSPECTION_PATH, SimulatedTenant
from flows.email_alerts import (
    LOCK_SCOPE,
    EmailAlertsSummary,
    email_alerts,
    imap_token_client,
    mailbox_config,
)
from tests.avian_workers.mail.emails import all_real_emails, fixture, make_mail, seed
from tests.avian_workers.mail.platform import (
    Firewalls,
    add_firewalls,
    directory_of,
    iso,
    ledger,
    stored_alerts,
    stored_reviews,
    triaged,
)
from tests.avian_workers.mail.test_parse_formats import FIXTURES
from tests.avian_workers.mail.test_parse_seeds import SEEDS
from tests.plugins.dovecot import ImapAccount
from tests.plugins.microsoft_simulator import MicrosoftSimulatorHandle

pytestmark = pytest.mark.usefixtures("prefect_server")

REPO_ROOT = Path(__file__).resolve().parents[2]
SEEN = b"\\Seen"
SYSTEM_CA_FILE = "/etc/ssl/certs/ca-certificates.crt"


@pytest.fixture
def firewalls(db: Engine) -> Firewalls:
    return add_firewalls(db)


@pytest.fixture
def mailbox(
    imap_account: ImapAccount,
    monkeypatch: pytest.MonkeyPatch,
    firewalls: Firewalls,
    settings: Settings,
    redis_client: redis.Redis,
) -> ImapAccount:
    """An empty alert inbox the worker's environment points at (with a clean database and Redis)."""
    for name, value in imap_account.env().items():
        monkeypatch.setenv(name, value)
    return imap_account


@pytest.fixture
def mailbox_without_move(
    imap_account_without_move: ImapAccount,
    monkeypatch: pytest.MonkeyPatch,
    firewalls: Firewalls,
    settings: Settings,
    redis_client: redis.Redis,
) -> ImapAccount:
    """The same on a server that lacks MOVE."""
    for name, value in imap_account_without_move.env().items():
        monkeypatch.setenv(name, value)
    return imap_account_without_move


def run_flow(**parameters: Any) -> EmailAlertsSummary:
    return email_alerts(**parameters)


def message_id(raw: bytes) -> str | None:
    return identify(raw, uidvalidity=1, uid=1).message_id


def filed(account: ImapAccount) -> dict[str, list[bytes]]:
    return {
        folder: [m.raw for m in account.messages(folder)]
        for folder in ("INBOX", "Processed", "Review")
    }


def assert_all_seen(account: ImapAccount, *folders: str) -> None:
    for folder in folders:
        assert all(SEEN in m.flags for m in account.messages(folder)), folder


def alert_facts(alert: dict[str, Any]) -> tuple[Any, ...]:
    metadata = alert["metadata"]
    return (
        alert["alert_type"],
        alert["severity"],
        metadata["occurred_at"],
        alert["device_id"],
        alert["tenant_id"],
        alert["message"],
    )


# --- every sample mail ------------------------------------------------------------------------


def test_seed_emails_become_their_expected_alerts_and_the_unknown_device_a_review(
    mailbox: ImapAccount, db: Engine, firewalls: Firewalls
) -> None:
    mailbox.append(seed(expected.file) for expected in SEEDS)

    summary = run_flow()

    by_message_id = {alert["metadata"]["message_id"]: alert for alert in stored_alerts(db)}
    reviews = {review["message_id"]: review for review in stored_reviews(db)}
    for expected in SEEDS:
        key = message_id(seed(expected.file))
        device = firewalls.by_serial(expected.device[0])
        if device is None:
            assert key not in by_message_id, expected.file
            assert reviews[key]["reason"] == "unknown_device", expected.file
            continue
        assert alert_facts(by_message_id[key]) == (
            expected.alert_type,
            expected.severity,
            iso(expected.occurred_at),
            device.device_id,
            device.tenant_id,
            expected.message,
        ), expected.file
    assert len(by_message_id) == 15
    assert len(reviews) == 1
    assert summary.report is not None
    assert summary.report.outcomes == {"alert": 15, "review": 1}
    folders = filed(mailbox)
    assert (len(folders["INBOX"]), len(folders["Processed"]), len(folders["Review"])) == (0, 15, 1)
    assert_all_seen(mailbox, "Processed", "Review")


def test_own_fixtures_of_every_layout_become_their_alerts_or_review_records(
    mailbox: ImapAccount, db: Engine, firewalls: Firewalls
) -> None:
    names = [*FIXTURES, "non-alert-maintenance.eml"]
    mailbox.append(fixture(name) for name in names)

    run_flow()

    expected_alerts: list[tuple[Any, ...]] = []
    expected_reviews: list[tuple[str, str]] = []
    for name, alerts in FIXTURES.items():
        for alert in alerts:
            device = firewalls.by_serial(alert.device[0])
            if device is None:
                expected_reviews.append((name, "unknown_device"))
                continue
            expected_alerts.append(
                (
                    alert.alert_type,
                    alert.severity,
                    iso(alert.occurred_at),
                    device.device_id,
                    device.tenant_id,
                    alert.message,
                )
            )
    expected_reviews.append(("non-alert-maintenance.eml", "not_alert"))
    stored = stored_alerts(db)
    assert sorted(map(alert_facts, stored), key=repr) == sorted(expected_alerts, key=repr)
    assert all(alert["metadata"]["occurrences"] == 1 for alert in stored)
    assert all(alert["source"] == "email" for alert in stored)
    subjects = {name: identify(fixture(name), uidvalidity=1, uid=1).subject for name in names}
    assert sorted((r["subject"], r["reason"]) for r in stored_reviews(db)) == sorted(
        (subjects[name], reason) for name, reason in expected_reviews
    )
    assert filed(mailbox)["INBOX"] == []


# --- exactly once -----------------------------------------------------------------------------


def test_mail_delivered_again_creates_no_second_alert(mailbox: ImapAccount, db: Engine) -> None:
    raws = [seed(expected.file) for expected in SEEDS]
    mailbox.append(raws)
    run_flow()
    first = stored_alerts(db)

    mailbox.append(raws)  # the same messages, unread, in the inbox again
    summary = run_flow()

    assert stored_alerts(db) == first
    assert len(ledger(db)) == len(raws)
    assert summary.report is not None
    assert (summary.report.already_handled, summary.report.recorded) == (len(raws), 0)
    folders = filed(mailbox)
    assert (len(folders["INBOX"]), len(folders["Processed"]), len(folders["Review"])) == (0, 30, 2)


def test_second_run_on_a_handled_mailbox_changes_nothing(mailbox: ImapAccount, db: Engine) -> None:
    mailbox.append([seed("ips-critical-01.eml"), fixture("csv-digest-four-events.eml")])
    run_flow()
    alerts, reviews, entries = stored_alerts(db), stored_reviews(db), ledger(db)

    summary = run_flow()

    assert (stored_alerts(db), stored_reviews(db), ledger(db)) == (alerts, reviews, entries)
    assert summary.report is not None
    assert summary.report.unseen == 0


def test_storm_of_one_alert_is_one_row_counting_every_mail(
    mailbox: ImapAccount, db: Engine
) -> None:
    def cpu_alert(number: int, minute: int, percent: int) -> bytes:
        body = f"Severity: Medium\nTimestamp: 2025-01-09 10:{minute:02d}:00 UTC\nSerial Number: C0EAE4B2C3F1\n"
        return make_mail(
            body, subject=f"High CPU: CPU Usage at {percent}%", message_id=f"<cpu-{number}@fw>"
        )

    mailbox.append(
        [cpu_alert(1, 0, 87), cpu_alert(2, 4, 91), cpu_alert(3, 9, 95), cpu_alert(4, 30, 90)]
    )

    summary = run_flow()

    # Both rows come from one transaction, so created_at ties: order by when the events happened.
    first, later = sorted(stored_alerts(db), key=lambda alert: alert["metadata"]["occurred_at"])
    assert (first["metadata"]["occurrences"], later["metadata"]["occurrences"]) == (3, 1)
    assert summary.report is not None
    assert summary.report.outcomes == {"alert": 2, "suppressed": 2}
    assert len(filed(mailbox)["Processed"]) == 4


# --- crashes and failures ---------------------------------------------------------------------


def failing_move_once(monkeypatch: pytest.MonkeyPatch, error: Exception) -> list[str]:
    """Make imapclient's MOVE fail the first time (a dropped connection, a server refusal)."""
    original = IMAPClient.move
    calls: list[str] = []

    def move(self: IMAPClient, messages: Any, folder: str) -> Any:
        calls.append(folder)
        if len(calls) == 1:
            raise error
        return original(self, messages, folder)

    monkeypatch.setattr(IMAPClient, "move", move)
    return calls


def test_connection_lost_after_the_commit_is_retried_and_files_without_a_second_alert(
    mailbox: ImapAccount, db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox.append([seed("ips-critical-01.eml"), seed("unknown-device-01.eml")])
    moves = failing_move_once(monkeypatch, IMAPClientAbortError("socket error: EOF"))

    summary = run_flow()

    assert moves[0] == "Processed"
    assert len(stored_alerts(db)) == 1
    assert len(stored_reviews(db)) == 1
    assert all(row["marked_at"] is not None for row in ledger(db))
    assert summary.report is not None
    assert summary.report.resumed_filing == 2  # the retry filed what the failed attempt committed
    folders = filed(mailbox)
    assert (len(folders["INBOX"]), len(folders["Processed"]), len(folders["Review"])) == (0, 1, 1)


def test_run_that_fails_between_commit_and_filing_loses_nothing_and_the_next_run_files(
    mailbox: ImapAccount, db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox.append([seed("ips-critical-01.eml"), seed("wan-critical-01.eml")])
    failing_move_once(monkeypatch, IMAPClientError("MOVE failed: [SERVERBUG] Internal error"))

    state = cast("State[Any]", email_alerts(return_state=True))

    assert state.is_failed()
    assert len(stored_alerts(db)) == 2
    assert [row["marked_at"] for row in ledger(db)] == [None, None]
    assert len(filed(mailbox)["INBOX"]) == 2  # committed, not filed

    summary = run_flow()

    assert len(stored_alerts(db)) == 2
    assert all(row["marked_at"] is not None for row in ledger(db))
    assert summary.report is not None
    assert summary.report.resumed_filing == 2
    assert len(filed(mailbox)["Processed"]) == 2


def backdate_ledger(engine: Engine, days: int) -> None:
    """Make every ledger row (and review record) `days` old, filed or not as it stands."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE avian_workers.mail_ledger"
                " SET processed_at = now() - make_interval(days => :d),"
                " marked_at = marked_at - make_interval(days => :d)"
            ),
            {"d": days},
        )
        conn.execute(
            text(
                "UPDATE avian_workers.mail_review"
                " SET created_at = created_at - make_interval(days => :d)"
            ),
            {"d": days},
        )


def test_mail_left_unread_long_past_the_ledger_retention_is_filed_not_stored_again(
    mailbox: ImapAccount, db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox.append([seed("ips-critical-01.eml"), seed("wan-critical-01.eml")])
    failing_move_once(monkeypatch, IMAPClientError("MOVE failed: [SERVERBUG] Internal error"))
    state = cast("State[Any]", email_alerts(return_state=True))
    assert state.is_failed()  # committed, never filed: both still unread in the inbox
    backdate_ledger(db, days=1000)

    summary = run_flow()

    assert summary.retention is not None
    assert summary.retention.ledger_rows_deleted == 0
    assert len(stored_alerts(db)) == 2
    assert summary.report is not None
    assert summary.report.resumed_filing == 2
    assert len(filed(mailbox)["Processed"]) == 2


def test_run_deletes_ledger_and_review_rows_past_retention_and_counts_them(
    mailbox: ImapAccount, db: Engine
) -> None:
    mailbox.append([seed("ips-critical-01.eml"), seed("unknown-device-01.eml")])
    run_flow()
    backdate_ledger(db, days=400)  # past the default 365 (ledger) and 90 (review) days
    mailbox.append([seed("wan-critical-01.eml")])

    summary = run_flow()

    assert summary.retention is not None
    assert (summary.retention.ledger_rows_deleted, summary.retention.review_rows_deleted) == (2, 1)
    assert summary.totals()["ledger_rows_deleted"] == 2
    assert len(ledger(db)) == 1  # the new mail's row
    assert stored_reviews(db) == []
    assert len(stored_alerts(db)) == 2  # alerts are the platform's: retention leaves them


def test_mailbox_locked_by_another_run_is_skipped_and_left_untouched(
    mailbox: ImapAccount, db: Engine, settings: Settings, redis_client: redis.Redis
) -> None:
    mailbox.append([seed("ips-critical-01.eml")])
    name = f"{mailbox.username}@{mailbox.host}:{mailbox.port}/INBOX"
    key = RedisKeys(settings.redis_key_prefix).lock(LOCK_SCOPE, name)

    with hold(redis_client, key, lease_seconds=60) as lease:
        assert lease is not None
        summary = run_flow()

    assert (summary.status, summary.report) == ("locked", None)
    assert ledger(db) == []
    assert [SEEN in m.flags for m in mailbox.messages("INBOX")] == [False]


def test_untrusted_server_certificate_fails_the_run_without_touching_mail(
    mailbox: ImapAccount, db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox.append([seed("ips-critical-01.eml")])
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        monkeypatch.setenv(name, SYSTEM_CA_FILE)

    state = cast("State[Any]", email_alerts(return_state=True))

    assert state.is_failed()
    assert "certificate verification failed" in str(state.message)
    assert ledger(db) == []


def test_server_without_move_flags_mail_seen_and_the_next_run_leaves_it(
    mailbox_without_move: ImapAccount, db: Engine
) -> None:
    account = mailbox_without_move
    account.append([seed("ips-critical-01.eml"), seed("unknown-device-01.eml")])

    first = run_flow()
    second = run_flow()

    assert first.report is not None
    assert first.report.filing == "flagged"
    assert_all_seen(account, "INBOX")
    assert len(account.messages("INBOX")) == 2
    assert second.report is not None
    assert (second.report.unseen, second.report.resumed_filing) == (0, 0)
    assert len(stored_alerts(db)) == 1


def test_run_leaves_a_table_artifact_of_messages_per_outcome(mailbox: ImapAccount) -> None:
    mailbox.append(
        [
            seed("ips-critical-01.eml"),
            seed("unknown-device-01.eml"),
            fixture("non-alert-maintenance.eml"),
        ]
    )

    state = cast("State[Any]", email_alerts(return_state=True))

    assert state.is_completed()
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
    by_key = {artifact.key: artifact for artifact in artifacts}
    assert {"email-alerts", "email-alerts-summary"} <= set(by_key)
    rows = {row["outcome"]: row["messages"] for row in json.loads(str(by_key["email-alerts"].data))}
    assert (rows["alert"], rows["suppressed"], rows["review"]) == (1, 0, 2)


# --- configuration ----------------------------------------------------------------------------


def test_settings_map_onto_the_mailbox_configuration() -> None:
    settings = Settings(
        imap_host="imap.example.net",
        imap_port=143,
        imap_user="alerts@example.net",
        imap_password=SecretStr("pw-123456"),
        imap_tls="starttls",
        ca_bundle="/etc/avian/ca.pem",
        imap_connect_timeout_seconds=3,
        imap_read_timeout_seconds=30,
        imap_inbox_folder="SonicWall",
        imap_processed_folder="SonicWall/Done",
        imap_review_folder="SonicWall/Review",
        imap_fetch_batch_size=50,
    )

    config = mailbox_config(settings)

    assert (config.host, config.port, config.username, config.tls_mode) == (
        "imap.example.net",
        143,
        "alerts@example.net",
        "starttls",
    )
    assert (config.ca_bundle, config.connect_timeout, config.read_timeout) == (
        "/etc/avian/ca.pem",
        3,
        30,
    )
    assert (config.inbox_folder, config.processed_folder, config.review_folder) == (
        "SonicWall",
        "SonicWall/Done",
        "SonicWall/Review",
    )
    assert (config.fetch_batch_size, config.auth) == (50, "password")
    assert imap_token_client(settings) is None


def xoauth2_settings(
    simulator: MicrosoftSimulatorHandle, secret: str | None = None, **more: Any
) -> tuple[Settings, Any]:
    tenant = simulator.add_tenant()
    values: dict[str, Any] = {
        "imap_host": "outlook.office365.com",
        "imap_user": "alerts@contoso.example",
        **more,
    }
    settings = Settings(
        imap_auth="xoauth2",
        imap_oauth_tenant_id=tenant.spec.tenant_id,
        imap_oauth_client_id=tenant.spec.client_id,
        imap_oauth_client_secret=SecretStr(secret or tenant.spec.client_secret),
        ms_authority_host=simulator.authority_host,
        ca_bundle=str(simulator.ca_bundle),
        **values,
    )
    return settings, tenant


def test_xoauth2_gets_an_app_only_token_from_msal_for_the_configured_tenant(
    microsoft_simulator_env: MicrosoftSimulatorHandle,
) -> None:
    settings, _ = xoauth2_settings(microsoft_simulator_env)

    tokens = imap_token_client(settings)

    assert tokens is not None
    assert settings.imap_oauth_scope == "https://outlook.office365.com/.default"
    assert tokens.token(settings.imap_oauth_scope)
    assert mailbox_config(settings).auth == "xoauth2"


def test_xoauth2_login_without_a_token_is_an_auth_error_naming_the_cause(
    microsoft_simulator_env: MicrosoftSimulatorHandle, imap_account: ImapAccount
) -> None:
    settings, _ = xoauth2_settings(
        microsoft_simulator_env,
        secret="not~the-right-secret-value",
        imap_host=imap_account.host,
        imap_port=imap_account.port,
    )
    tokens = imap_token_client(settings)
    assert tokens is not None
    config = replace(mailbox_config(settings), ca_bundle=str(imap_account.ca_bundle))

    with pytest.raises(MailboxAuthError, match="AADSTS7000215") as raised:
        Mailbox(config, token_provider=partial(tokens.token, settings.imap_oauth_scope)).open()

    assert "not~the-right-secret-value" not in raised.exconly()


@pytest.fixture
def outlook_mailbox(
    *,
    imap_account_oauth2: ImapAccount,
    microsoft_simulator: MicrosoftSimulatorHandle,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    firewalls: Firewalls,
    settings: Settings,
    redis_client: redis.Redis,
) -> tuple[ImapAccount, SimulatedTenant]:
    """An empty alert inbox on a server that introspects tokens, and the Entra app granted it.

    The worker's environment names the app, not a password (IMAP_AUTH=xoauth2, default
    Outlook scope), and trusts both the IMAP server and the identity endpoint.
    """
    account = imap_account_oauth2
    tenant = microsoft_simulator.add_tenant(mailbox=account.username)
    bundle = tmp_path / "ca-bundle.pem"
    bundle.write_bytes(
        account.ca_bundle.read_bytes() + b"\n" + microsoft_simulator.ca_cert.read_bytes()
    )
    env = {
        **account.env(),
        "SSL_CERT_FILE": str(bundle),
        "REQUESTS_CA_BUNDLE": str(bundle),
        "IMAP_AUTH": "xoauth2",
        "IMAP_OAUTH_TENANT_ID": tenant.spec.tenant_id,
        "IMAP_OAUTH_CLIENT_ID": tenant.spec.client_id,
        "IMAP_OAUTH_CLIENT_SECRET": tenant.spec.client_secret,
        "MS_AUTHORITY_HOST": microsoft_simulator.authority_host,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("IMAP_PASSWORD")
    monkeypatch.delenv("IMAP_OAUTH_SCOPE", raising=False)
    return account, tenant


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def introspection_statuses(
    simulator: MicrosoftSimulatorHandle, tenant: SimulatedTenant
) -> list[int]:
    return [
        r.status
        for r in simulator.simulator.requests(tenant.spec.tenant_id)
        if r.path == INTROSPECTION_PATH
    ]


def test_xoauth2_run_with_an_app_only_outlook_token_turns_mail_into_alerts(
    outlook_mailbox: tuple[ImapAccount, SimulatedTenant],
    microsoft_simulator: MicrosoftSimulatorHandle,
    db: Engine,
) -> None:
    account, tenant = outlook_mailbox
    account.append([seed("ips-critical-01.eml")])

    summary = run_flow()

    assert summary.report is not None
    assert summary.report.outcomes == {"alert": 1}
    assert [alert["alert_type"] for alert in stored_alerts(db)] == ["ips_alert"]
    folders = filed(account)
    assert (len(folders["INBOX"]), len(folders["Processed"])) == (0, 1)
    assert introspection_statuses(microsoft_simulator, tenant) == [200]


def test_xoauth2_run_for_a_mailbox_the_app_may_not_open_fails_without_touching_mail(
    *,
    outlook_mailbox: tuple[ImapAccount, SimulatedTenant],
    microsoft_simulator: MicrosoftSimulatorHandle,
    db: Engine,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    account, _granted = outlook_mailbox
    account.append([seed("ips-critical-01.eml")])
    other = microsoft_simulator.add_tenant(mailbox=account.server.new_username())
    monkeypatch.setenv("IMAP_OAUTH_TENANT_ID", other.spec.tenant_id)
    monkeypatch.setenv("IMAP_OAUTH_CLIENT_ID", other.spec.client_id)
    monkeypatch.setenv("IMAP_OAUTH_CLIENT_SECRET", other.spec.client_secret)
    monkeypatch.setenv("LOG_LEVEL", "debug")
    caplog.set_level("DEBUG")
    # The run writes its JSON lines to the stdout it finds at start (never closed, unlike capsys').
    stdout = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stdout)

    state = cast("State[Any]", email_alerts(return_state=True))

    assert state.is_failed()
    assert "login refused" in str(state.message)
    assert introspection_statuses(microsoft_simulator, other) == [200]
    assert ledger(db) == []
    assert [SEEN in m.flags for m in account.messages("INBOX")] == [False]
    logs = "\n".join([caplog.text, stdout.getvalue(), str(state.message)])
    assert "ExecutionFailure" in stdout.getvalue()  # the run's stdout was captured
    # Every token of the simulator starts with this JWT header; XOAUTH2 sends the token inside
    # a base64 string that starts with "user=".
    assert b64url(b'{"typ":"JWT","alg":"HS256"}') not in logs
    assert base64.b64encode(b"user=").decode()[:6] not in logs


# --- SIGKILL at random points -----------------------------------------------------------------

KILLED_RUNS = 20
COPIES_PER_SAMPLE = 12
KILL_BATCH_SIZE = 3
STARTED_MARKER = '"message": "Processing unseen mail"'


def kill_test_mail() -> list[bytes]:
    """Every sample mail several times over, each copy with bytes of its own (an X-Copy header)."""
    samples = list(all_real_emails().values())
    return [
        f"X-Copy: {copy}\r\n".encode() + raw for copy in range(COPIES_PER_SAMPLE) for raw in samples
    ]


def worker_env(account: ImapAccount) -> dict[str, str]:
    """`python -m flows` as ECS ran it, against this session's database, Redis and Prefect."""
    api_url = get_current_settings().api.url
    assert api_url, "the Prefect test server must be running"
    return {
        **os.environ,
        **account.env(),
        "WORKER_TYPE": "email-alerts",
        "IMAP_FETCH_BATCH_SIZE": str(KILL_BATCH_SIZE),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


def start_worker(env: dict[str, str]) -> tuple[subprocess.Popen[str], queue.Queue[str | None]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "flows"],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return process, lines


def wait_for(lines: queue.Queue[str | None], marker: str, timeout: float) -> tuple[bool, list[str]]:
    """Read output until a line containing `marker` (True) or the end of output (False)."""
    seen: list[str] = []
    while True:
        line = lines.get(timeout=timeout)
        if line is None:
            return False, seen
        seen.append(line)
        if marker in line:
            return True, seen


def kill_at_random_point(env: dict[str, str], delay: float) -> str:
    """Run the worker, SIGKILL it `delay` seconds into its mail processing; what happened."""
    process, lines = start_worker(env)
    try:
        started, output = wait_for(lines, STARTED_MARKER, timeout=180)
        if not started:
            process.wait(timeout=30)
            assert process.returncode == 0, "".join(output)
            return "finished before processing"
        try:
            process.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        return "killed" if process.returncode == -signal.SIGKILL else "finished"
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # twenty worker start-ups, each importing Prefect
def test_worker_killed_at_random_points_handles_every_message_exactly_once(
    mailbox: ImapAccount,
    db: Engine,
    settings: Settings,
    redis_client: redis.Redis,
) -> None:
    mailbox.append(kill_test_mail())
    raws = [message.raw for message in mailbox.messages("INBOX")]  # as the server stores them
    env = worker_env(mailbox)
    name = f"{mailbox.username}@{mailbox.host}:{mailbox.port}/INBOX"
    lock_key = RedisKeys(settings.redis_key_prefix).lock(LOCK_SCOPE, name)
    seed_value = random.SystemRandom().randrange(2**32)
    rng = random.Random(seed_value)
    print(f"kill test random seed: {seed_value}")

    happened: Counter[str] = Counter()
    for run in range(KILLED_RUNS):
        # A killed run's lock stays until its lease expires; we stand in for the expiry.
        redis_client.delete(lock_key)
        started = time.monotonic()
        happened[kill_at_random_point(env, delay=rng.uniform(0.0, 0.3))] += 1
        print(f"run {run}: {time.monotonic() - started:.1f}s, ledger {len(ledger(db))}")
    redis_client.delete(lock_key)
    final = subprocess.run(
        [sys.executable, "-m", "flows"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    print(f"runs: {dict(happened)}")

    assert final.returncode == 0, final.stdout[-4000:] + final.stderr[-4000:]
    assert happened["killed"] > 0
    assert_handled_exactly_once(raws, mailbox, db)


def assert_handled_exactly_once(raws: list[bytes], account: ImapAccount, db: Engine) -> None:
    """Every message one ledger entry, filed by its outcome; every event counted once."""
    directory = directory_of(db)
    triage_of = {raw: triaged(raw, directory) for raw in raws}
    by_hash = {message.key.raw_sha256: message for message in triage_of.values()}

    entries = ledger(db)
    assert sorted(e["raw_sha256"] for e in entries) == sorted(by_hash)  # one entry per message
    assert all(e["marked_at"] is not None for e in entries)

    # Mailbox: nothing left unread in the inbox; each message filed once, in its outcome's folder.
    folders = filed(account)
    assert folders["INBOX"] == []
    for folder, wanted in (("Processed", True), ("Review", False)):
        assert sorted(folders[folder]) == sorted(
            raw for raw, message in triage_of.items() if bool(message.alerts) is wanted
        ), folder
    assert_all_seen(account, "Processed", "Review")

    # Events: the copies of one event fold into one row, where each is counted exactly once.
    events = Counter(
        (alert.fingerprint, iso(alert.occurred_at))
        for m in triage_of.values()
        for alert in m.alerts
    )
    alerts = stored_alerts(db)
    rows = Counter((a["metadata"]["fingerprint"], a["metadata"]["occurred_at"]) for a in alerts)
    assert rows == Counter(dict.fromkeys(events, 1))
    occurrences = {
        (a["metadata"]["fingerprint"], a["metadata"]["occurred_at"]): a["metadata"]["occurrences"]
        for a in alerts
    }
    assert occurrences == dict(events)
    assert sum(e["alert_count"] for e in entries) == sum(events.values())

    # Review: one record per message kept for review, none twice.
    reviews = Counter(review["ledger_id"] for review in stored_reviews(db))
    review_entries = {e["id"] for e in entries if e["outcome"] == "review"}
    assert set(reviews) == review_entries
    assert set(reviews.values()) == {1}
