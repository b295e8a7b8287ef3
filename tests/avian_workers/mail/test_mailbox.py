"""The alert mailbox against a real Dovecot over TLS (fixtures in tests/plugins/dovecot.py)."""

from __future__ import annotations

import base64
import io
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC
from pathlib import Path

import pytest
import trustme
from pydantic import SecretStr

from avian_workers.logs import configure_logging
from avian_workers.mail.mailbox import (
    FetchedMessage,
    Mailbox,
    MailboxAuthError,
    MailboxConfig,
    MailboxConnectionError,
    MailboxTLSError,
)
from avian_workers.microsoft import TokenProvider
from avian_workers.simulator import INTROSPECTION_PATH, SimulatedTenant
from tests.plugins.dovecot import (
    CAPABILITIES_WITHOUT_MOVE_OR_UIDPLUS,
    DovecotServer,
    ImapAccount,
)
from tests.plugins.microsoft_simulator import OUTLOOK_SCOPE, MicrosoftSimulatorHandle

SEEN = b"\\Seen"
DELETED = b"\\Deleted"
SYSTEM_CA_FILE = "/etc/ssl/certs/ca-certificates.crt"


def alert_email(number: int) -> bytes:
    """A distinct raw message with 8-bit bytes and quoted-printable look-alikes, CRLF line ends."""
    return (
        f"Message-ID: <alert-{number}@fw.example.net>\r\n"
        f"Subject: IPS Alert {number}\r\n"
        "From: SonicWall <alerts@fw.example.net>\r\n"
        "Date: Thu, 09 Jan 2025 10:11:12 +0000\r\n"
        "Content-Type: text/plain; charset=iso-8859-1\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        f"Serial Number: C0EAE4B2C3F{number % 10}\r\n"
    ).encode() + b"Note: caf\xe9 =C3=A9 \xff\r\n"


def config_for(account: ImapAccount, **overrides: object) -> MailboxConfig:
    values: dict[str, object] = {
        "host": account.host,
        "port": account.port,
        "username": account.username,
        "password": SecretStr(account.password),
        "ca_bundle": str(account.ca_bundle),
    }
    values.update(overrides)
    return MailboxConfig(**values)  # type: ignore[arg-type]


def all_fetched(mailbox: Mailbox, batch_size: int | None = None) -> list[FetchedMessage]:
    return [m for batch in mailbox.fetch_batches(mailbox.unseen_uids(), batch_size) for m in batch]


@pytest.fixture
def imap_commands(caplog: pytest.LogCaptureFixture) -> Callable[[str], list[str]]:
    """The IMAP commands the client sent (imapclient logs each as `> b'TAG [UID] VERB ...'`)."""
    caplog.set_level(logging.DEBUG, logger="imapclient")

    def sent(verb: str) -> list[str]:
        lines = [r.getMessage() for r in caplog.records]
        return [line for line in lines if line.startswith("> ") and f" {verb} " in line[:40]]

    return sent


@pytest.fixture
def system_trust_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default trust store is the system's, whatever other tests put in SSL_CERT_FILE."""
    monkeypatch.setenv("SSL_CERT_FILE", SYSTEM_CA_FILE)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


# --- connecting and logging in -------------------------------------------------------------


def test_open_logs_in_over_tls_and_creates_missing_folders(imap_account: ImapAccount) -> None:
    with Mailbox(config_for(imap_account, processed_folder="Alerts-Done")) as mailbox:
        assert mailbox.uidvalidity > 0
        assert mailbox.filing == "moved"

    assert {"INBOX", "Alerts-Done", "Review"} <= imap_account.folders()


def test_open_keeps_existing_folders_and_their_mail(imap_account: ImapAccount) -> None:
    imap_account.append([alert_email(1)], folder="Processed", flags=[SEEN])

    with Mailbox(config_for(imap_account)):
        pass

    assert [m.raw for m in imap_account.messages("Processed")] == [alert_email(1)]


def test_custom_inbox_folder_is_created_and_selected(imap_account: ImapAccount) -> None:
    with Mailbox(config_for(imap_account, inbox_folder="SonicWall")) as mailbox:
        assert mailbox.unseen_uids() == []

    assert "SonicWall" in imap_account.folders()


def test_server_certificate_is_verified_by_default(
    imap_account: ImapAccount, system_trust_only: None
) -> None:
    untrusted = config_for(imap_account, ca_bundle=None)

    with pytest.raises(MailboxTLSError, match="certificate verification failed"):
        Mailbox(untrusted).open()

    with Mailbox(config_for(imap_account)) as mailbox:
        assert mailbox.uidvalidity > 0


def test_starttls_verifies_the_certificate_too(
    imap_account: ImapAccount, system_trust_only: None
) -> None:
    starttls = config_for(imap_account, tls_mode="starttls", port=imap_account.server.plain_port)

    with pytest.raises(MailboxTLSError, match="certificate verification failed"):
        Mailbox(
            config_for(imap_account, tls_mode="starttls", port=starttls.port, ca_bundle=None)
        ).open()

    with Mailbox(starttls) as mailbox:
        assert mailbox.unseen_uids() == []


def test_implicit_tls_against_a_plaintext_port_is_a_tls_error(imap_account: ImapAccount) -> None:
    with pytest.raises(MailboxTLSError):
        Mailbox(config_for(imap_account, port=imap_account.server.plain_port)).open()


def test_plain_text_is_used_only_when_configured(imap_account: ImapAccount) -> None:
    imap_account.append([alert_email(1)])
    plain = config_for(imap_account, tls_mode="plain", port=imap_account.server.plain_port)

    with Mailbox(plain) as mailbox:
        assert len(mailbox.unseen_uids()) == 1


def test_wrong_password_is_an_auth_error_that_does_not_reveal_it(imap_account: ImapAccount) -> None:
    wrong = "Wr0ng-Passw0rd-that-must-not-leak"

    with pytest.raises(MailboxAuthError) as raised:
        Mailbox(config_for(imap_account, password=wrong)).open()

    assert "login refused" in str(raised.value)
    assert raised.value.__cause__ is None
    for text in (str(raised.value), repr(raised.value), raised.exconly()):
        assert wrong not in text


def test_xoauth2_logs_in_with_the_provided_token(imap_account: ImapAccount) -> None:
    # The test Dovecot checks an XOAUTH2 bearer token like a password.
    calls: list[str] = []

    def token() -> str:
        calls.append("token")
        return imap_account.password

    config = config_for(imap_account, auth="xoauth2", password=None)
    with Mailbox(config, token_provider=token) as mailbox:
        assert mailbox.unseen_uids() == []

    assert calls == ["token"]


def test_rejected_xoauth2_token_is_an_auth_error_that_does_not_reveal_it(
    imap_account: ImapAccount,
) -> None:
    token = "eyJ0eXAiOiJKV1QiLCJhbGciOi.not-valid-here.signature"
    config = config_for(imap_account, auth="xoauth2", password=None)

    with pytest.raises(MailboxAuthError) as raised:
        Mailbox(config, token_provider=lambda: token).open()

    assert token not in raised.exconly()


def test_failing_token_provider_is_an_auth_error(imap_account: ImapAccount) -> None:
    def no_token() -> str:
        raise RuntimeError("AADSTS7000215: invalid client secret")

    config = config_for(imap_account, auth="xoauth2", password=None)

    with pytest.raises(MailboxAuthError, match=r"no access token for XOAUTH2.*AADSTS7000215"):
        Mailbox(config, token_provider=no_token).open()


# --- XOAUTH2 where the server introspects the token (as Exchange Online checks it) ----------


@dataclass(frozen=True)
class OutlookApp:
    """An Entra app with IMAP access to one mailbox, and its MSAL token client."""

    tenant: SimulatedTenant
    tokens: TokenProvider
    account: ImapAccount

    def config(self) -> MailboxConfig:
        return config_for(self.account, auth="xoauth2", password=None)

    def token(self, scope: str = OUTLOOK_SCOPE) -> str:
        return self.tokens.token(scope)


@contextmanager
def msal_tokens(
    simulator: MicrosoftSimulatorHandle, tenant: SimulatedTenant
) -> Iterator[TokenProvider]:
    """The worker's MSAL client-credentials client for the tenant's app."""
    tokens = TokenProvider(
        simulator.credentials(tenant), simulator.endpoints(), ca_bundle=str(simulator.ca_bundle)
    )
    try:
        yield tokens
    finally:
        tokens.close()


@pytest.fixture
def outlook_app(
    microsoft_simulator: MicrosoftSimulatorHandle, imap_account_oauth2: ImapAccount
) -> Iterator[OutlookApp]:
    """A fresh mailbox on the introspecting Dovecot, and an app granted exactly that mailbox."""
    tenant = microsoft_simulator.add_tenant(mailbox=imap_account_oauth2.username)
    with msal_tokens(microsoft_simulator, tenant) as tokens:
        yield OutlookApp(tenant=tenant, tokens=tokens, account=imap_account_oauth2)


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> Callable[[], str]:
    """The worker's JSON log lines and every library's log records, all DEBUG up, as one text."""
    lines = io.StringIO()
    configure_logging("debug", stream=lines, mirror_to_prefect=False)
    caplog.set_level(logging.DEBUG)
    return lambda: f"{caplog.text}\n{lines.getvalue()}"


def assert_token_hidden(token: str, username: str, *texts: str) -> None:
    """Neither the token nor the base64 XOAUTH2 string that carries it appears anywhere."""
    sasl = base64.b64encode(f"user={username}\1auth=Bearer {token}\1\1".encode()).decode()
    for text in texts:
        assert token not in text
        assert sasl not in text


def introspections(simulator: MicrosoftSimulatorHandle, tenant: SimulatedTenant) -> list[int]:
    """Statuses of the introspection calls the IMAP server made with this tenant's tokens."""
    return [
        r.status
        for r in simulator.simulator.requests(tenant.spec.tenant_id)
        if r.path == INTROSPECTION_PATH
    ]


def test_xoauth2_with_an_msal_outlook_token_opens_the_mailbox_the_app_may_use(
    outlook_app: OutlookApp, microsoft_simulator: MicrosoftSimulatorHandle
) -> None:
    outlook_app.account.append([alert_email(1)])

    with Mailbox(outlook_app.config(), token_provider=outlook_app.token) as mailbox:
        [message] = all_fetched(mailbox)
        assert mailbox.mark_processed([message.uid]) == "moved"

    assert message.raw == alert_email(1)
    assert [m.raw for m in outlook_app.account.messages("Processed")] == [alert_email(1)]
    assert introspections(microsoft_simulator, outlook_app.tenant) == [200]


def test_password_is_not_accepted_as_a_bearer_token(outlook_app: OutlookApp) -> None:
    password = outlook_app.account.password

    with pytest.raises(MailboxAuthError, match="login refused"):
        Mailbox(outlook_app.config(), token_provider=lambda: password).open()

    with Mailbox(config_for(outlook_app.account)) as mailbox:  # still the password's own way in
        assert mailbox.unseen_uids() == []


@pytest.mark.parametrize(
    "why",
    ["graph token", "other mailbox", "revoked", "expired"],
)
def test_refused_outlook_token_is_an_auth_error_and_never_logged(
    outlook_app: OutlookApp,
    microsoft_simulator: MicrosoftSimulatorHandle,
    all_logs: Callable[[], str],
    why: str,
) -> None:
    token = outlook_app.token()
    config = outlook_app.config()
    if why == "graph token":
        token = outlook_app.token("https://graph.microsoft.com/.default")
    elif why == "other mailbox":
        config = config_for(
            outlook_app.account,
            username=outlook_app.account.server.new_username(),
            auth="xoauth2",
            password=None,
        )
    elif why == "revoked":
        microsoft_simulator.simulator.revoke_token(token)
    else:
        microsoft_simulator.simulator.set_faults(
            outlook_app.tenant.spec.tenant_id, token_max_uses=1
        )
        with Mailbox(config, token_provider=outlook_app.token):  # the token's one use
            pass
        assert outlook_app.token() == token  # MSAL hands out its cached token again

    with pytest.raises(MailboxAuthError, match="login refused") as raised:
        Mailbox(config, token_provider=lambda: token).open()

    assert introspections(microsoft_simulator, outlook_app.tenant)[-1] == 200
    assert_token_hidden(
        token, config.username, str(raised.value), repr(raised.value), raised.exconly(), all_logs()
    )


def test_xoauth2_is_a_retryable_outage_when_the_server_cannot_trust_the_token_check(
    dovecot_factory: Callable[..., DovecotServer],
    dovecot_oauth2: DovecotServer,
    microsoft_simulator: MicrosoftSimulatorHandle,
    tmp_path: Path,
) -> None:
    # The same introspection endpoint, but Dovecot is told to trust another CA.
    assert dovecot_oauth2.introspection is not None
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    server = dovecot_factory(introspection=replace(dovecot_oauth2.introspection, ca_cert=other_ca))
    account = ImapAccount(server=server, username=server.new_username())
    tenant = microsoft_simulator.add_tenant(mailbox=account.username)
    config = config_for(account, auth="xoauth2", password=None)

    with (
        msal_tokens(microsoft_simulator, tenant) as tokens,
        pytest.raises(MailboxConnectionError, match=r"temporarily unavailable.*\[UNAVAILABLE\]"),
    ):
        Mailbox(config, token_provider=lambda: tokens.token(OUTLOOK_SCOPE)).open()

    assert "Received invalid SSL certificate" in server.log_path.read_text()


def test_unreachable_server_is_a_connection_error(imap_account: ImapAccount) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    with pytest.raises(MailboxConnectionError, match=f"127.0.0.1:{closed_port}"):
        Mailbox(config_for(imap_account, port=closed_port)).open()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback port that accepts connections and never says a word."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


def test_server_that_never_answers_times_out_as_a_connection_error(
    imap_account: ImapAccount, silent_server: int
) -> None:
    config = config_for(imap_account, port=silent_server, connect_timeout=0.5, read_timeout=0.5)

    with pytest.raises(MailboxConnectionError, match="timed out"):
        Mailbox(config).open()


# --- reading ---------------------------------------------------------------------------------


def test_unseen_uids_ignore_mail_already_read(imap_account: ImapAccount) -> None:
    imap_account.append([alert_email(1), alert_email(2)], flags=[SEEN])
    imap_account.append([alert_email(3), alert_email(4)])
    unseen = [m.uid for m in imap_account.messages() if SEEN not in m.flags]

    with Mailbox(config_for(imap_account)) as mailbox:
        assert mailbox.unseen_uids() == unseen
        assert len(unseen) == 2


def test_fetch_returns_the_exact_bytes_and_leaves_mail_unread(imap_account: ImapAccount) -> None:
    originals = [alert_email(n) for n in range(5)]
    imap_account.append(originals)

    with Mailbox(config_for(imap_account)) as mailbox:
        fetched = all_fetched(mailbox)
        uidvalidity = mailbox.uidvalidity

    assert [m.raw for m in fetched] == originals
    assert {m.uidvalidity for m in fetched} == {uidvalidity}
    assert all(m.internal_date is not None and m.internal_date.tzinfo is UTC for m in fetched)
    stored = imap_account.messages()
    assert [m.uid for m in stored] == [m.uid for m in fetched]
    assert all(SEEN not in m.flags for m in stored)


def test_fetch_sends_one_uid_fetch_per_batch(
    imap_account: ImapAccount, imap_commands: Callable[[str], list[str]]
) -> None:
    imap_account.append([alert_email(n) for n in range(7)])

    with Mailbox(config_for(imap_account)) as mailbox:
        batches = list(mailbox.fetch_batches(mailbox.unseen_uids(), batch_size=3))

    assert [len(batch) for batch in batches] == [3, 3, 1]
    fetches = imap_commands("FETCH")
    assert len(fetches) == 3
    assert all("BODY.PEEK[]" in command for command in fetches)


def test_fetch_leaves_out_uids_that_no_longer_exist(imap_account: ImapAccount) -> None:
    imap_account.append([alert_email(1)])

    with Mailbox(config_for(imap_account)) as mailbox:
        uid = mailbox.unseen_uids()[0]
        fetched = [m for batch in mailbox.fetch_batches([uid, uid + 500]) for m in batch]

    assert [m.uid for m in fetched] == [uid]


# --- filing ----------------------------------------------------------------------------------


def test_mark_processed_flags_seen_and_moves_to_the_processed_folder(
    imap_account: ImapAccount,
) -> None:
    imap_account.append([alert_email(n) for n in range(4)])

    with Mailbox(config_for(imap_account)) as mailbox:
        uids = mailbox.unseen_uids()
        outcome = mailbox.mark_processed(uids[:3])
        assert mailbox.unseen_uids() == uids[3:]

    assert outcome == "moved"
    processed = imap_account.messages("Processed")
    assert [m.raw for m in processed] == [alert_email(n) for n in range(3)]
    assert all(SEEN in m.flags for m in processed)
    assert [m.raw for m in imap_account.messages()] == [alert_email(3)]
    assert imap_account.messages("Review") == []


def test_mark_for_review_flags_seen_and_moves_to_the_review_folder(
    imap_account: ImapAccount,
) -> None:
    imap_account.append([alert_email(1), alert_email(2)])

    with Mailbox(config_for(imap_account, review_folder="Needs Review")) as mailbox:
        first, second = mailbox.unseen_uids()
        outcome = mailbox.mark_for_review([second])

    assert outcome == "moved"
    review = imap_account.messages("Needs Review")
    assert [m.raw for m in review] == [alert_email(2)]
    assert all(SEEN in m.flags for m in review)
    inbox = imap_account.messages()
    assert [(m.uid, m.flags) for m in inbox] == [(first, frozenset())]


def test_without_move_messages_are_only_flagged_seen(
    imap_account_without_move: ImapAccount,
) -> None:
    account = imap_account_without_move
    account.append([alert_email(1), alert_email(2)])

    with Mailbox(config_for(account)) as mailbox:
        assert mailbox.filing == "flagged"
        outcome = mailbox.mark_processed(mailbox.unseen_uids())
        assert mailbox.unseen_uids() == []

    assert outcome == "flagged"
    inbox = account.messages()
    assert [m.raw for m in inbox] == [alert_email(1), alert_email(2)]
    assert all(m.flags == {SEEN} for m in inbox)
    assert account.messages("Processed") == []


def test_copy_expunge_fallback_removes_only_the_copied_messages(
    imap_account_without_move: ImapAccount,
) -> None:
    account = imap_account_without_move
    # Someone else's message waiting for expunge: neither the fallback nor logout may remove it.
    account.append([alert_email(9)], flags=[SEEN, DELETED])
    account.append([alert_email(1), alert_email(2)])

    with Mailbox(config_for(account, move_fallback="copy_expunge")) as mailbox:
        assert mailbox.filing == "moved"
        outcome = mailbox.mark_processed(mailbox.unseen_uids())

    assert outcome == "moved"
    processed = account.messages("Processed")
    assert [m.raw for m in processed] == [alert_email(1), alert_email(2)]
    assert all(m.flags == {SEEN} for m in processed)
    assert [(m.raw, m.flags) for m in account.messages()] == [
        (alert_email(9), frozenset({SEEN, DELETED}))
    ]


def test_copy_expunge_fallback_needs_uidplus_else_only_flags(
    dovecot_factory: Callable[..., DovecotServer],
) -> None:
    server = dovecot_factory(CAPABILITIES_WITHOUT_MOVE_OR_UIDPLUS)
    account = ImapAccount(server=server, username=server.new_username())
    account.append([alert_email(1)])

    with Mailbox(config_for(account, move_fallback="copy_expunge")) as mailbox:
        outcome = mailbox.mark_for_review(mailbox.unseen_uids())

    assert outcome == "flagged"
    assert [m.flags for m in account.messages()] == [{SEEN}]
    assert account.messages("Review") == []


def test_a_thousand_messages_are_read_and_filed_in_chunked_commands(
    imap_account: ImapAccount, imap_commands: Callable[[str], list[str]]
) -> None:
    originals = [alert_email(n) for n in range(1000)]
    imap_account.append(originals)

    config = config_for(imap_account, fetch_batch_size=200, uids_per_command=300)
    with Mailbox(config) as mailbox:
        uids = mailbox.unseen_uids()
        fetched = [m for batch in mailbox.fetch_batches(uids) for m in batch]
        mailbox.mark_processed(uids)
        assert mailbox.unseen_uids() == []

    assert len(uids) == 1000
    assert [m.raw for m in fetched] == originals
    assert len(imap_commands("FETCH")) == 5
    assert len(imap_commands("STORE")) == 4
    assert len(imap_commands("MOVE")) == 4
    processed = imap_account.messages("Processed")
    assert len(processed) == 1000
    assert all(SEEN in m.flags for m in processed)
    assert imap_account.messages() == []


# --- configuration ---------------------------------------------------------------------------


def test_config_repr_never_shows_the_password() -> None:
    config = MailboxConfig(host="imap.example.net", username="alerts", password="hunter2-secret")

    assert "hunter2-secret" not in repr(config)


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"password": None}, "password login needs a password"),
        ({"processed_folder": "inbox"}, "three different folders"),
        ({"port": 0}, "port 0"),
        ({"fetch_batch_size": 0}, "fetch_batch_size 0"),
        ({"uids_per_command": 10_000}, "uids_per_command 10000"),
        ({"read_timeout": 0}, "timeouts must be positive"),
    ],
)
def test_config_refuses_unusable_values(overrides: dict[str, object], problem: str) -> None:
    values: dict[str, object] = {"host": "imap.example.net", "username": "alerts", "password": "pw"}
    values.update(overrides)

    with pytest.raises(ValueError, match=problem):
        MailboxConfig(**values)  # type: ignore[arg-type]


def test_xoauth2_without_a_token_provider_is_refused() -> None:
    config = MailboxConfig(host="imap.example.net", username="alerts", auth="xoauth2")

    with pytest.raises(ValueError, match="token provider"):
        Mailbox(config)
