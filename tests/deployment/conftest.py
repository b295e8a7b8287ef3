"""A real `prefect server start` (SQLite, no UI, no scheduler) and the CLI run against it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.plugins.services import free_port

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = str(Path(sys.executable).parent)

# Variables of the developer's shell that must not leak into the commands under test.
_CLEARED = ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE", "PREFECT_HOME", "WORKER_TYPE")


@dataclass(frozen=True)
class PrefectServer:
    """A running server and the environment of a CLI client talking to it."""

    api_url: str
    client_home: Path

    def env(self, **overrides: str | None) -> dict[str, str]:
        """The caller's environment pointed at this server; None removes a variable."""
        env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
        env.update(
            PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
            PREFECT_API_URL=self.api_url,
            PREFECT_HOME=str(self.client_home),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_CLI_COLORS="false",
            PREFECT_CLI_WRAP_LINES="false",
        )
        for name, value in overrides.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env

    def run(
        self, *command: str, timeout: float = 180, **env: str | None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command from the repository root against this server."""
        return subprocess.run(
            command,
            cwd=REPO,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _wait_until_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"prefect server exited with {process.returncode}:\n{log.read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    pytest.fail(f"prefect server did not answer within 180 s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def prefect_api(
    session_env: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrefectServer]:
    """`prefect server start` on a free loopback port with its own PREFECT_HOME and SQLite file."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    server = PrefectServer(
        api_url=f"http://127.0.0.1:{port}/api",
        client_home=tmp_path_factory.mktemp("prefect-client"),
    )
    log = home / "server.log"
    server_env = server.env(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=None,
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        PREFECT_UI_ENABLED="false",
        # Runs appear only when a test asks for one: no scheduled runs from the cron schedules.
        PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false",
        PREFECT_SERVER_LOGGING_LEVEL="WARNING",
    )
    command = [sys.executable, "-m", "prefect", "server", "start"]
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            env=server_env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its service processes stop with it
        )
    try:
        _wait_until_healthy(server.api_url, process, log)
        yield server
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
