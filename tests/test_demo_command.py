"""Issue 7's acceptance: `make demo`, as the README says, on a machine with nothing configured.

The demo runs in a session of its own, so every process it starts can be found afterwards
(PostgreSQL detaches itself from it, so its postmaster is checked through its data directory).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from avian_workers.demo.seed import DEMO_TENANTS, demo_emails
from tests.avian_workers.demo.processes import in_session, is_alive

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_SECONDS = 280

# What a machine with nothing configured does not have (and what a test session may have set).
UNSET = ("DATABASE_URL", "REDIS_URL", "REDIS_KEY_PREFIX", "AWS_ENDPOINT_URL", "NODE_ENV")
UNSET_PREFIXES = ("PREFECT_", "IMAP_", "MS_", "AVIAN_")


def clean_environment() -> dict[str, str]:
    return {
        name: value
        for name, value in os.environ.items()
        if name not in UNSET and not name.startswith(UNSET_PREFIXES)
    }


@dataclass
class DemoProcess:
    """`make demo` running in a session of its own, its output collected line by line."""

    process: subprocess.Popen[str]
    data_dir: Path
    lines: list[str]

    @classmethod
    def start(cls, data_dir: Path) -> DemoProcess:
        process = subprocess.Popen(
            ["make", "demo", f"ARGS=--data-dir {data_dir}"],
            cwd=REPO_ROOT,
            env=clean_environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        demo = cls(process, data_dir, [])
        threading.Thread(target=demo._collect, daemon=True).start()
        return demo

    def _collect(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the demo never printed {text!r}:\n{self.output}")
            time.sleep(0.2)

    def wait(self) -> int:
        try:
            code = self.process.wait(RUN_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            pytest.fail(f"the demo did not finish in {RUN_TIMEOUT_SECONDS} s:\n{self.output}")
        time.sleep(0.5)  # the collector thread reads the last lines
        return code

    def leftovers(self) -> list[str]:
        """Processes the demo left running: its session's, and its PostgreSQL."""
        left = [f"{p.pid} {p.command}" for p in in_session(self.process.pid)]
        postmaster = self.data_dir / "postgres" / "postmaster.pid"
        if postmaster.exists():
            pid = int(postmaster.read_text().split()[0])
            if is_alive(pid):
                left.append(f"{pid} postgres (postmaster of {postmaster.parent})")
        return left


@dataclass(frozen=True)
class FinishedDemo:
    code: int
    output: str
    leftovers: list[str]


def run_demo(data_dir: Path) -> FinishedDemo:
    demo = DemoProcess.start(data_dir)
    code = demo.wait()
    return FinishedDemo(code, demo.output, demo.leftovers())


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo") / "data"


@pytest.fixture(scope="module")
def first_run(demo_dir: Path) -> FinishedDemo:
    return run_demo(demo_dir)


def section(output: str, title: str) -> list[str]:
    """The row lines of one summary table: from the rule under its header to a blank line."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    rule = next(i for i in range(start, len(lines)) if "━" in lines[i])
    rows = []
    for line in lines[rule + 1 :]:
        if not line.strip():
            break
        rows.append(line)
    return rows


def row(rows: list[str], *needles: str) -> str:
    (match,) = [line for line in rows if all(needle in line for needle in needles)]
    return match


def test_make_demo_runs_all_three_workers_and_summarises_each(first_run: FinishedDemo) -> None:
    output = first_run.output
    assert first_run.code == 0, output

    runs = section(output, "Flow runs")
    for worker in ("edr-polling", "email-alerts", "metrics-aggregation"):
        assert "Completed" in row(runs, worker), output

    tenants = section(output, "edr-polling: per tenant")
    for tenant in DEMO_TENANTS:
        expected = "failed" if tenant.broken_credentials else "succeeded"
        assert expected in row(tenants, tenant.name)
    contoso = row(tenants, "Contoso Logistics").split()
    assert "40" in contoso  # its 40 simulated devices are stored

    emails = section(output, "email-alerts: per email")
    for email in demo_emails():
        assert any(line.startswith(f"  {email.file_name[:29]}") for line in emails), email
    assert "atp_alert (critical)" in row(emails, "atp-critical-01.eml", "alert")
    assert "review: not_alert" in row(emails, "non-alert-maintenance.eml")

    device_days = section(output, "metrics-aggregation: per device-day")
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    hq_yesterday = row(device_days, yesterday, "FW-HQ-PRIMARY").split()
    assert int(hq_yesterday[2].replace(",", "")) > 0  # threats blocked

    assert "prefect server start" in output


def test_the_demo_stops_every_process_it_started(first_run: FinishedDemo) -> None:
    assert first_run.leftovers == []
    assert "Services stopped" in first_run.output


def test_a_second_run_is_idempotent(first_run: FinishedDemo, demo_dir: Path) -> None:
    second = run_demo(demo_dir)

    assert second.code == 0, second.output
    handled = f"{len(demo_emails())} already handled"
    assert handled in row(section(second.output, "Flow runs"), "email-alerts")
    assert section(second.output, "email-alerts: per email") == section(
        first_run.output, "email-alerts: per email"
    )
    assert second.leftovers == []


def test_ctrl_c_leaves_no_process_behind(tmp_path: Path) -> None:
    demo = DemoProcess.start(tmp_path / "data")
    demo.wait_for_line("IMAP server (pymap)", timeout=RUN_TIMEOUT_SECONDS)

    os.killpg(demo.process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    code = demo.wait()

    assert code != 0
    assert "Interrupted" in demo.output, demo.output
    assert demo.leftovers() == []
