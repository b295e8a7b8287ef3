"""A real Dovecot IMAP server for the tests: throwaway config, test CA, loopback only.

`dovecot` (session) starts Dovecot as root with a config written to a temporary directory:
implicit TLS and a plaintext/STARTTLS listener on free 127.0.0.1 ports, a certificate from a
`trustme` CA, a static passdb that accepts ANY user name with one password, and a static userdb
mapping every user to the `dovecot` account with a Maildir of its own under the directory. A
fresh user name is therefore a fresh, empty mailbox: `imap_account` gives each test one.

`dovecot_oauth2` (session) is a second Dovecot that checks XOAUTH2/OAUTHBEARER bearer tokens
the way Exchange Online does for app-only tokens: its oauth2 passdb POSTs each token over TLS
to the Microsoft simulator's RFC 7662 introspection endpoint (as a resource server with its own
client id and secret, trusting the simulator's test CA) and lets the login in only when the
answer is `active: true`, has the `IMAP.AccessAsApp` scope and names the login's user as
`username`. Plain-text logins there still use the static password (to arrange and inspect mail);
the password is never accepted as a token.

If Dovecot is not installed, `scripts/ensure-dovecot.sh` installs it; if it still cannot be
started the fixture fails with the reason (it never skips). Dovecot is stopped, and its whole
process group checked gone, at session end.
"""

from __future__ import annotations

import grp
import itertools
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trustme
from imapclient import IMAPClient

from avian_workers.simulator import IMAP_ROLE

if TYPE_CHECKING:  # imported by pytest as a plugin of its own (assertion rewriting)
    from tests.plugins.microsoft_simulator import MicrosoftSimulatorHandle

REPO_ROOT = Path(__file__).resolve().parents[2]
ENSURE_DOVECOT = REPO_ROOT / "scripts" / "ensure-dovecot.sh"
SYSTEM_CA_FILE = Path("/etc/ssl/certs/ca-certificates.crt")
LOOPBACK = "127.0.0.1"
RECENT = b"\\Recent"  # session-dependent, so left out of StoredMessage.flags
TEST_PASSWORD = "dovecot-test-password-7Qx"
START_TIMEOUT_SECONDS = 20.0
STOP_TIMEOUT_SECONDS = 15.0

# Dovecot 2.3's post-login capabilities without MOVE (imap_capability replaces the list).
CAPABILITIES_WITHOUT_MOVE = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ MULTIAPPEND UNSELECT CHILDREN"
    " NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE ESEARCH LIST-STATUS SPECIAL-USE"
)
CAPABILITIES_WITHOUT_MOVE_OR_UIDPLUS = CAPABILITIES_WITHOUT_MOVE.replace(" UIDPLUS", "")

_CONFIG_TEMPLATE = """\
# Throwaway configuration written by tests/plugins/dovecot.py
instance_name = {instance}
base_dir = {root}/run
state_dir = {root}/state
protocols = imap
listen = {host}
log_path = {root}/dovecot.log
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = {uid}
first_valid_gid = {gid}

ssl = yes
ssl_cert = <{root}/tls/server.pem
ssl_key = <{root}/tls/server.key
# Plain-text login is allowed on the plaintext listener so that mode can be tested too.
disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2{extra_mechanisms}
auth_failure_delay = 0
{passdbs}userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/mail/%u
}}
mail_location = maildir:~/Maildir
mail_fsync = never
protocol imap {{
  mail_max_userip_connections = 200
{capability_line}}}

service imap-login {{
  inet_listener imap {{
    port = {plain_port}
  }}
  inet_listener imaps {{
    port = {tls_port}
    ssl = yes
  }}
}}
# No growing login delay for a client that failed to authenticate (tests do so on purpose).
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""

# Every mechanism, bearer tokens included, checked against the one password.
_STATIC_PASSDB = """\
passdb {{
  driver = static
  args = password={password}
}}
"""

# The password for plain-text logins only; bearer tokens go to the introspection endpoint.
# auth_verbose logs why a token was refused (never the token: auth_verbose_passwords is off).
_OAUTH2_PASSDBS = """\
auth_verbose = yes
passdb {{
  driver = static
  mechanisms = plain login
  args = password={password}
}}
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {root}/dovecot-oauth2.conf.ext
}}
"""

# Dovecot 2.3's oauth2 passdb (dovecot-oauth2.conf.ext): no tokeninfo_url, so every token is
# introspected. It refuses a token whose answer has an `active` other than `true` (2.3 lets an
# answer without `active` pass, so the endpoint always sends it), lacks the scope, or names
# another user (both sides normalised with username_format, default %Lu). An answer without
# `username`, or an endpoint it cannot reach or trust, is a temporary failure ([UNAVAILABLE]).
_OAUTH2_TEMPLATE = """\
introspection_mode = post
introspection_url = {url}
client_id = {client_id}
client_secret = {client_secret}
username_attribute = {username_attribute}
active_attribute = active
active_value = true
scope = {scope}
tls_ca_cert_file = {root}/tls/oauth2-ca.pem
timeout_msecs = 10000
"""


@dataclass(frozen=True)
class OAuth2Introspection:
    """Where Dovecot's oauth2 passdb checks bearer tokens (RFC 7662, POST over TLS)."""

    url: str
    client_id: str
    client_secret: str = field(repr=False)
    ca_cert: Path
    """The CA of the introspection endpoint's certificate (copied where Dovecot can read it)."""
    scope: str
    """Required in the answer's `scope`."""
    username_attribute: str = "username"


@dataclass(frozen=True)
class DovecotServer:
    """A running Dovecot: where it listens and how to trust and log in to it."""

    host: str
    port: int
    """Implicit TLS (imaps)."""
    plain_port: int
    """Plaintext IMAP that offers STARTTLS."""
    ca_bundle: Path
    """System CAs plus the test CA: what a verifying client must trust."""
    ca_cert: Path
    """The test CA alone."""
    password: str
    """Accepted for every user name (also as the XOAUTH2 token)."""
    log_path: Path
    mail_root: Path
    started_in_seconds: float
    introspection: OAuth2Introspection | None = None
    """Set when bearer tokens are introspected (else they are checked like the password)."""
    _usernames: Iterator[int] = field(default_factory=lambda: itertools.count(1), repr=False)

    def new_username(self) -> str:
        """A user name never used before in this session, i.e. an empty mailbox."""
        return f"user{next(self._usernames):05d}-{os.getpid()}"

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_bundle))

    @contextmanager
    def client(self, username: str) -> Iterator[Any]:
        """A logged-in, certificate-verifying imapclient session (for arranging and checking)."""
        client = IMAPClient(self.host, self.port, ssl_context=self.ssl_context(), timeout=30)
        try:
            client.login(username, self.password)
            yield client
        finally:
            client.logout()


@dataclass(frozen=True)
class StoredMessage:
    uid: int
    raw: bytes
    flags: frozenset[bytes]


@dataclass(frozen=True)
class ImapAccount:
    """An empty mailbox of one's own on a test Dovecot, with methods to fill and inspect it."""

    server: DovecotServer
    username: str

    @property
    def password(self) -> str:
        return self.server.password

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def ca_bundle(self) -> Path:
        return self.server.ca_bundle

    def append(
        self,
        messages: Iterable[bytes],
        folder: str = "INBOX",
        flags: Iterable[bytes] = (),
    ) -> None:
        """Store raw messages exactly as given, in one MULTIAPPEND command (fast for thousands)."""
        flag_list = list(flags)
        items = [{"msg": raw, "flags": flag_list} for raw in messages]
        if not items:
            return
        with self.server.client(self.username) as client:
            if not client.folder_exists(folder):
                client.create_folder(folder)
            client.multiappend(folder, items)

    def messages(self, folder: str = "INBOX") -> list[StoredMessage]:
        """Every message in the folder with its flags, read without changing them."""
        with self.server.client(self.username) as client:
            if not client.folder_exists(folder):
                return []
            client.select_folder(folder, readonly=True)
            uids = client.search(["ALL"])
            found = client.fetch(uids, [b"BODY.PEEK[]", b"FLAGS"]) if uids else {}
        return [
            StoredMessage(uid=uid, raw=data[b"BODY[]"], flags=frozenset(data[b"FLAGS"]) - {RECENT})
            for uid, data in sorted(found.items())
        ]

    def env(self) -> dict[str, str]:
        """The worker's environment variables for this mailbox (contract names), trusting the CA."""
        return {
            "IMAP_HOST": self.host,
            "IMAP_PORT": str(self.port),
            "IMAP_USER": self.username,
            "IMAP_PASSWORD": self.password,
            "IMAP_TLS": "true",
            "SSL_CERT_FILE": str(self.ca_bundle),
            "REQUESTS_CA_BUNDLE": str(self.ca_bundle),
        }

    def folders(self) -> set[str]:
        with self.server.client(self.username) as client:
            return {name for _flags, _delimiter, name in client.list_folders()}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _find_dovecot() -> str | None:
    return shutil.which("dovecot") or next(
        (str(p) for p in (Path("/usr/sbin/dovecot"),) if p.exists()), None
    )


def _dovecot_binary() -> str:
    """The dovecot binary, installed by scripts/ensure-dovecot.sh first if it is missing."""
    found = _find_dovecot()
    if found:
        return found
    result = subprocess.run(
        ["bash", str(ENSURE_DOVECOT)], capture_output=True, text=True, check=False
    )
    found = _find_dovecot()
    if result.returncode != 0 or not found:
        pytest.fail(
            "Dovecot is not installed and scripts/ensure-dovecot.sh could not install it "
            f"(exit {result.returncode}):\n{result.stderr.strip()}",
            pytrace=False,
        )
    return found


def _write_tls_material(tls_dir: Path) -> tuple[Path, Path]:
    """Server certificate from a fresh test CA; returns (test CA, system CAs + test CA)."""
    tls_dir.mkdir(exist_ok=True)
    ca = trustme.CA()
    server_cert = ca.issue_cert(LOOPBACK, "localhost")
    server_cert.private_key_pem.write_to_path(str(tls_dir / "server.key"))
    (tls_dir / "server.pem").write_bytes(
        b"".join(pem.bytes() for pem in server_cert.cert_chain_pems)
    )
    ca_cert = tls_dir / "test-ca.pem"
    ca.cert_pem.write_to_path(str(ca_cert))
    system = SYSTEM_CA_FILE.read_bytes() if SYSTEM_CA_FILE.exists() else b""
    bundle = tls_dir / "ca-bundle.pem"
    bundle.write_bytes(
        system.rstrip(b"\n") + b"\n" + ca.cert_pem.bytes() if system else ca.cert_pem.bytes()
    )
    return ca_cert, bundle


@dataclass
class _RunningDovecot:
    process: subprocess.Popen[bytes]


class _PortTakenError(Exception):
    """Another process bound one of the chosen ports before Dovecot did."""


def _start(
    root: Path,
    binary: str,
    capabilities: str | None,
    introspection: OAuth2Introspection | None = None,
) -> tuple[DovecotServer, _RunningDovecot]:
    """Start Dovecot in `root`, choosing new free ports if a chosen one was taken meanwhile."""
    for _attempt in range(3):
        try:
            return _start_once(root, binary, capabilities, introspection)
        except _PortTakenError:
            continue
    pytest.fail(f"Dovecot could not bind free loopback ports:\n{_diagnostics(root)}", pytrace=False)


def _write_oauth2_config(root: Path, introspection: OAuth2Introspection) -> None:
    """The oauth2 passdb's file and CA, readable by the auth process (user `dovecot`)."""
    shutil.copyfile(introspection.ca_cert, root / "tls" / "oauth2-ca.pem")
    (root / "dovecot-oauth2.conf.ext").write_text(
        _OAUTH2_TEMPLATE.format(
            root=root,
            url=introspection.url,
            client_id=introspection.client_id,
            client_secret=introspection.client_secret,
            username_attribute=introspection.username_attribute,
            scope=introspection.scope,
        )
    )


def _start_once(
    root: Path,
    binary: str,
    capabilities: str | None,
    introspection: OAuth2Introspection | None,
) -> tuple[DovecotServer, _RunningDovecot]:
    try:
        uid = pwd.getpwnam("dovecot").pw_uid
        gid = grp.getgrnam("dovecot").gr_gid
        pwd.getpwnam("dovenull")
    except KeyError as exc:
        pytest.fail(
            f"Dovecot's system users are missing ({exc}); reinstall dovecot-imapd", pytrace=False
        )
    ca_cert, bundle = _write_tls_material(root / "tls")
    mail_root = root / "mail"
    mail_root.mkdir(exist_ok=True)
    os.chown(mail_root, uid, gid)
    tls_port, plain_port = _free_port(), _free_port()
    capability_line = f"  imap_capability = {capabilities}\n" if capabilities else ""
    if introspection is not None:
        _write_oauth2_config(root, introspection)
    passdbs = _OAUTH2_PASSDBS if introspection is not None else _STATIC_PASSDB
    config = root / "dovecot.conf"
    config.write_text(
        _CONFIG_TEMPLATE.format(
            instance=f"avian-test-{os.getpid()}-{root.name[-8:]}",
            root=root,
            host=LOOPBACK,
            uid=uid,
            gid=gid,
            extra_mechanisms=" oauthbearer" if introspection is not None else "",
            passdbs=passdbs.format(root=root, password=TEST_PASSWORD),
            capability_line=capability_line,
            plain_port=plain_port,
            tls_port=tls_port,
        )
    )
    stderr_path = root / "dovecot.stderr"
    (root / "dovecot.log").unlink(missing_ok=True)  # diagnostics only from this attempt
    started = time.monotonic()
    with stderr_path.open("wb") as stderr:
        # Own process group: at the end the whole tree is signalled and checked gone.
        process = subprocess.Popen(
            [binary, "-F", "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            start_new_session=True,
        )
    running = _RunningDovecot(process=process)
    try:
        tls_context = ssl.create_default_context(cafile=str(ca_cert))
        _wait_until_greeting(process, {tls_port: tls_context, plain_port: None}, root)
    except BaseException:
        _stop(running)
        raise
    server = DovecotServer(
        host=LOOPBACK,
        port=tls_port,
        plain_port=plain_port,
        ca_bundle=bundle,
        ca_cert=ca_cert,
        password=TEST_PASSWORD,
        log_path=root / "dovecot.log",
        mail_root=mail_root,
        started_in_seconds=time.monotonic() - started,
        introspection=introspection,
    )
    return server, running


def _wait_until_greeting(
    process: subprocess.Popen[bytes], ports: dict[int, ssl.SSLContext | None], root: Path
) -> None:
    """Until every port answers with an IMAP greeting (an open port alone could be someone else)."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    pending = dict(ports)
    while pending:
        if process.poll() is not None:
            if "Address already in use" in _diagnostics(root):
                raise _PortTakenError
            pytest.fail(
                f"Dovecot exited with code {process.returncode} at start:\n{_diagnostics(root)}",
                pytrace=False,
            )
        if time.monotonic() > deadline:
            pytest.fail(
                f"Dovecot did not greet on {LOOPBACK}:{sorted(pending)} within "
                f"{START_TIMEOUT_SECONDS:g}s:\n{_diagnostics(root)}",
                pytrace=False,
            )
        port, context = next(iter(pending.items()))
        if _greets(port, context):
            del pending[port]
        else:
            time.sleep(0.02)


def _greets(port: int, context: ssl.SSLContext | None) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1) as raw:
            if context is None:
                return raw.makefile("rb").readline().startswith(b"* OK")
            with context.wrap_socket(raw, server_hostname=LOOPBACK) as tls:
                return tls.makefile("rb").readline().startswith(b"* OK")
    except (OSError, ssl.SSLError):
        return False


def _diagnostics(root: Path) -> str:
    parts = []
    for name in ("dovecot.stderr", "dovecot.log"):
        path = root / name
        if path.exists() and path.stat().st_size:
            parts.append(f"--- {name} ---\n{path.read_text(errors='replace')[-4000:]}")
    return "\n".join(parts) or "(Dovecot wrote nothing)"


def _stop(running: _RunningDovecot) -> None:
    """SIGTERM the process group Dovecot leads, wait, SIGKILL what is left; fail if any remain."""
    pgid = running.process.pid
    with suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while _group_members(pgid) and time.monotonic() < deadline:
        running.process.poll()  # reaps the master once it has exited
        time.sleep(0.05)
    if _group_members(pgid):
        with suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    running.process.wait(timeout=STOP_TIMEOUT_SECONDS)
    left = _group_members(pgid)
    if left:
        pytest.fail(f"Dovecot processes left behind after stop: {left}", pytrace=False)


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in the process group."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, process_group = fields[0], int(fields[2])
        if process_group == pgid and state != "Z":
            members.append(int(entry.name))
    return members


@pytest.fixture(scope="session")
def dovecot_factory() -> Iterator[Callable[..., DovecotServer]]:
    """Start (once per distinct configuration) a Dovecot; all are stopped at session end."""
    binary = _dovecot_binary()
    started: dict[tuple[str | None, OAuth2Introspection | None], DovecotServer] = {}
    running: list[_RunningDovecot] = []
    roots: list[Path] = []

    def start(
        capabilities: str | None = None, introspection: OAuth2Introspection | None = None
    ) -> DovecotServer:
        key = (capabilities, introspection)
        if key in started:
            return started[key]
        # Not pytest's tmp_path: those are 0700, and Dovecot's unprivileged users must traverse it.
        root = Path(tempfile.mkdtemp(prefix="avian-dovecot-"))
        root.chmod(0o755)
        roots.append(root)
        server, process = _start(root, binary, capabilities, introspection)
        running.append(process)
        started[key] = server
        return server

    try:
        yield start
    finally:
        for process in running:
            _stop(process)
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def dovecot(dovecot_factory: Callable[..., DovecotServer]) -> DovecotServer:
    """Dovecot 2.3 with its default capabilities (MOVE, UIDPLUS, MULTIAPPEND, LITERAL+ ...)."""
    return dovecot_factory()


@pytest.fixture(scope="session")
def dovecot_without_move(dovecot_factory: Callable[..., DovecotServer]) -> DovecotServer:
    """A second Dovecot that does not advertise MOVE (UIDPLUS still there)."""
    return dovecot_factory(CAPABILITIES_WITHOUT_MOVE)


@pytest.fixture(scope="session")
def dovecot_oauth2(
    dovecot_factory: Callable[..., DovecotServer], microsoft_simulator: MicrosoftSimulatorHandle
) -> DovecotServer:
    """A Dovecot whose bearer tokens are checked by the Microsoft simulator's introspection."""
    return dovecot_factory(
        introspection=OAuth2Introspection(
            url=microsoft_simulator.introspection_url,
            client_id=microsoft_simulator.introspection_client_id,
            client_secret=microsoft_simulator.introspection_client_secret,
            ca_cert=microsoft_simulator.ca_cert,
            scope=IMAP_ROLE,
        )
    )


@pytest.fixture
def imap_account(dovecot: DovecotServer) -> ImapAccount:
    """A fresh, empty mailbox (new user) on the session's Dovecot."""
    return ImapAccount(server=dovecot, username=dovecot.new_username())


@pytest.fixture
def imap_account_without_move(dovecot_without_move: DovecotServer) -> ImapAccount:
    """A fresh, empty mailbox on the Dovecot that lacks MOVE."""
    return ImapAccount(server=dovecot_without_move, username=dovecot_without_move.new_username())


@pytest.fixture
def imap_account_oauth2(dovecot_oauth2: DovecotServer) -> ImapAccount:
    """A fresh, empty mailbox on the Dovecot that introspects bearer tokens."""
    return ImapAccount(server=dovecot_oauth2, username=dovecot_oauth2.new_username())


__all__ = [
    "CAPABILITIES_WITHOUT_MOVE",
    "CAPABILITIES_WITHOUT_MOVE_OR_UIDPLUS",
    "DovecotServer",
    "ImapAccount",
    "OAuth2Introspection",
    "StoredMessage",
    "dovecot",
    "dovecot_factory",
    "dovecot_oauth2",
    "dovecot_without_move",
    "imap_account",
    "imap_account_oauth2",
    "imap_account_without_move",
]
