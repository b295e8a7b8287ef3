"""The demo's services start where they say, answer, keep their data, and leave nothing running."""

from __future__ import annotations

import ssl
import time
from pathlib import Path

import httpx
import psycopg
import pytest
import redis
import trustme
from imapclient import IMAPClient

from avian_workers.demo.seed import deliver_emails, demo_emails
from avian_workers.demo.services import (
    LOOPBACK,
    ChildProcess,
    EmbeddedImap,
    EmbeddedPostgres,
    EmbeddedRedis,
    MicrosoftSimulatorService,
    MotoSecretsManager,
    ServiceError,
    issue_certificates,
    wait_until,
)
from tests.avian_workers.demo.processes import in_group, is_alive


def test_stopping_a_service_process_stops_everything_it_started(tmp_path: Path) -> None:
    child = ChildProcess("sleepers", ["sh", "-c", "sleep 300 & sleep 300"], tmp_path / "log")
    wait_until(lambda: len(in_group(child.pid)) == 3, what="the shell and its sleepers")

    child.stop()

    assert in_group(child.pid) == []


def test_a_service_that_exits_during_start_is_reported_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "broken.log"
    child = ChildProcess("broken service", ["sh", "-c", "echo cannot bind; exit 3"], log)

    with pytest.raises(ServiceError, match=r"broken service exited with code 3; its log is"):
        wait_until(lambda: False, what="broken service", process=child, timeout=10)
    assert "cannot bind" in log.read_text()


def test_a_service_that_never_becomes_ready_times_out_naming_it() -> None:
    with pytest.raises(ServiceError, match=r"the thing did not become ready within 0\.2 s"):
        wait_until(lambda: False, what="the thing", timeout=0.2)


def test_redis_answers_on_its_socket_only_and_keeps_its_data_across_runs(tmp_path: Path) -> None:
    def started() -> EmbeddedRedis:
        server = EmbeddedRedis(tmp_path / "data", tmp_path / "redis.sock", tmp_path / "redis.log")
        server.start()
        return server

    first = started()
    assert first.url == f"unix://{tmp_path / 'redis.sock'}"
    client = redis.Redis.from_url(first.url)
    client.set("demo:key", "kept")
    client.close()
    first.stop()

    second = started()
    try:
        client = redis.Redis.from_url(second.url)
        assert client.get("demo:key") == b"kept"
        assert client.config_get("port") == {"port": "0"}  # no TCP listener
        client.close()
    finally:
        second.stop()
    assert not (tmp_path / "redis.sock").exists()


def test_postgres_serves_the_demo_database_on_a_socket_and_stops(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "postgres")
    server.start()
    try:
        server.create_database("avian_demo")
        server.create_database("avian_demo")  # a second run finds it
        url = server.url("avian_demo")
        assert "?host=/" in url
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("avian_demo",)
            assert conn.execute("SHOW listen_addresses").fetchone() == ("",)
        postmaster = int((tmp_path / "postgres" / "postmaster.pid").read_text().split()[0])
    finally:
        server.stop()

    assert not is_alive(postmaster)


# A random password may start with '-' (token_urlsafe), which must stay the password.
@pytest.mark.parametrize("password", ["demo-password-1", "-Ab3-dash-first"])
def test_imap_takes_the_sample_mail_over_verified_starttls(tmp_path: Path, password: str) -> None:
    certificates = issue_certificates(tmp_path / "tls")
    server = EmbeddedImap(certificates, "alerts", password, tmp_path / "imap.log")
    server.start()
    try:
        emails = demo_emails()[:3]
        assert deliver_emails(server.account, certificates.ca_bundle, emails) == 3
        account = server.account
        assert account.host == LOOPBACK
        with IMAPClient(account.host, port=account.port, ssl=False, timeout=10) as imap:
            imap.starttls(ssl.create_default_context(cafile=str(certificates.ca_bundle)))
            imap.login(account.user, account.password)
            imap.select_folder("INBOX", readonly=True)
            assert len(imap.search("UNSEEN")) == 3
    finally:
        server.stop()


def test_the_simulator_certificate_is_trusted_through_the_demo_bundle_only(tmp_path: Path) -> None:
    certificates = issue_certificates(tmp_path / "tls")
    service = MicrosoftSimulatorService(certificates)
    service.start()
    try:
        base_url = service.server.base_url
        assert base_url.startswith(f"https://{LOOPBACK}:")
        demo_bundle = ssl.create_default_context(cafile=str(certificates.ca_bundle))
        assert httpx.get(base_url, verify=demo_bundle).status_code < 500
        unrelated_ca = ssl.create_default_context(cadata=trustme.CA().cert_pem.bytes().decode())
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(base_url, verify=unrelated_ca)
    finally:
        service.stop()


def test_moto_listens_on_loopback_and_stops() -> None:
    moto = MotoSecretsManager()
    moto.start()
    try:
        assert moto.url.startswith(f"http://{LOOPBACK}:")
        assert httpx.get(f"{moto.url}/moto-api/").status_code == 200
    finally:
        moto.stop()
    time.sleep(0.1)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{moto.url}/moto-api/", timeout=2)
