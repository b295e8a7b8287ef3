"""Benchmark of the email-alerts flow: a backlog of N alert mails in Dovecot, end to end.

    uv run python bench/email_alerts.py [--messages 10000] [--small 2000] [--batch-size 200]
        [--profile]

For each backlog size (`--small`, then `--messages`) a fresh mailbox is filled with that many
distinct messages (every sample mail of the tests in turn, each with its own Message-ID; half
of them with a subject of their own, so the run both inserts alerts and folds storm repeats),
and a fresh process then measures, on the same bodies:

1. raw fetch: `UID SEARCH UNSEEN` and one `UID FETCH (BODY.PEEK[] INTERNALDATE)` per batch,
   with imapclient and nothing else (the ceiling: what reading the mail costs);
2. end to end: the real flow, `email_alerts()`, which fetches the same batches, parses,
   matches, commits the ledger and alerts, files every message and writes the artifacts;
3. the process's peak RSS (`ru_maxrss`), to compare the two backlog sizes.

Beside wall-clock, each phase reports CPU seconds (Linux /proc), which the load from other
work on the machine does not distort: the measured process (all threads, plus any parsing
processes it started and reaped), Dovecot (its whole process group: live members plus what the
master reaped) and the PostgreSQL backends connected to the benchmark's database (sampled every
0.1 s; a backend's last moments before it exits can be missed).

Targets (issue 4): end-to-end throughput at least 0.5 of raw fetch throughput, at least 200
messages/s, and memory flat in backlog size. `--profile` adds a cProfile of the largest run.

The services are throwaway: Dovecot started as the tests start it (tests/plugins/dovecot.py,
TLS with a test CA), a PostgreSQL database (dropped afterwards), a Redis key prefix and a
Prefect server, each in its own process, so the measured process holds only the flow.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import re
import resource
import secrets
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _services import REPO, database, free_port, http_ok, process, wait_until

sys.path.insert(0, str(REPO))  # the Dovecot test service and sample mail live under tests/

REDIS_URL = os.environ.get("AVIAN_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
APPEND_CHUNK = 1000


# --- Services ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Services:
    env: dict[str, str]
    dovecot: Any  # tests.plugins.dovecot.DovecotServer


@contextmanager
def dovecot() -> Iterator[tuple[Any, int]]:
    """Dovecot exactly as the test session starts it (throwaway config, TLS, loopback); its pid."""
    from tests.plugins import dovecot as service

    root = Path(tempfile.mkdtemp(prefix="avian-bench-dovecot-"))
    root.chmod(0o755)  # Dovecot's unprivileged users must traverse it
    server, running = service._start(root, service._dovecot_binary(), None)
    try:
        yield server, running.process.pid
    finally:
        service._stop(running)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def services() -> Iterator[Services]:
    workdir = Path(tempfile.mkdtemp(prefix="avian-bench-mail-"))
    base_env = {**os.environ, "NODE_ENV": "test", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    with ExitStack() as stack:
        server, dovecot_pid = stack.enter_context(dovecot())
        prefect_port = free_port()
        stack.enter_context(
            process(
                [
                    *(sys.executable, "-m", "prefect", "server", "start"),
                    *("--host", "127.0.0.1", "--port", str(prefect_port)),
                ],
                {
                    **base_env,
                    "PREFECT_HOME": str(workdir / "prefect"),
                    "PREFECT_API_DATABASE_CONNECTION_URL": (
                        f"sqlite+aiosqlite:///{workdir / 'prefect' / 'prefect.db'}"
                    ),
                },
                workdir / "prefect.log",
            )
        )
        database_url = stack.enter_context(database(base_env))
        env = {
            **base_env,
            "DATABASE_URL": database_url,
            "REDIS_URL": REDIS_URL,
            "REDIS_KEY_PREFIX": f"avian-bench:{secrets.token_hex(4)}:",
            "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
            "PREFECT_HOME": str(workdir / "client"),
            "LOG_LEVEL": "warning",
            "AVIAN_BENCH_DOVECOT_PID": str(dovecot_pid),
        }
        wait_until(lambda: http_ok(f"http://127.0.0.1:{prefect_port}/api/health"), "Prefect")
        try:
            yield Services(env, server)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


# --- The backlog -------------------------------------------------------------------------------


def backlog(count: int, tag: str) -> Iterator[bytes]:
    """`count` distinct alert mails cycling through every sample; half with a subject of their own."""
    from tests.avian_workers.mail.emails import all_real_emails

    samples = list(all_real_emails().values())
    message_id = re.compile(rb"^Message-ID:[^\n]*\n", re.IGNORECASE | re.MULTILINE)
    for number in range(count):
        raw = message_id.sub(b"", samples[number % len(samples)], count=1)
        if number % 2:
            raw = raw.replace(b"Subject: ", f"Subject: [{tag}-{number}] ".encode(), 1)
        yield f"Message-ID: <{tag}-{number}@bench.example.net>\r\n".encode() + raw


def fill_mailbox(env: dict[str, str], server: Any, count: int) -> dict[str, str]:
    """A fresh mailbox holding `count` unread mails; the worker's IMAP_* for it."""
    from sqlalchemy import create_engine, text

    from tests.plugins.dovecot import ImapAccount

    account = ImapAccount(server=server, username=server.new_username())
    chunk: list[bytes] = []
    for raw in backlog(count, tag=account.username):
        chunk.append(raw)
        if len(chunk) == APPEND_CHUNK:
            account.append(chunk)
            chunk = []
    account.append(chunk)
    # Each size starts from empty worker tables, so no run folds into another's storms.
    engine = create_engine(env["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(
            text(
                "TRUNCATE firewall_alerts, avian_workers.mail_ledger, avian_workers.mail_review,"
                " avian_workers.alert_storms CASCADE"
            )
        )
    engine.dispose()
    return account.env()


def add_firewalls(env: dict[str, str]) -> None:
    from sqlalchemy import create_engine

    from tests.avian_workers.mail.platform import add_firewalls as add

    engine = create_engine(env["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://"))
    add(engine)
    engine.dispose()


# --- CPU accounting (Linux /proc) --------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: str | int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def dovecot_cpu_seconds(master_pid: int) -> float:
    """CPU of Dovecot so far: its live processes plus the children its master has reaped."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(entry.name)
        if fields is None or int(fields[2]) != master_pid:  # process group
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
        if int(entry.name) == master_pid:
            total += int(fields[13]) + int(fields[14])  # cutime, cstime: reaped children
    return total / _TICK


class BackendCpu:
    """CPU of the PostgreSQL backends serving one database, sampled in a thread.

    Known backends are read every 0.1 s and /proc is scanned for new ones every second (the
    flow's pool connects once and keeps its connections), so sampling costs next to nothing.
    """

    def __init__(self, database: str) -> None:
        self._marker = f" {database} ".encode()
        self._seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BackendCpu:
        self._scan()
        self._base = sum(self._seen.values())
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._scan()

    @property
    def seconds(self) -> float:
        return sum(self._seen.values()) - self._base

    def _run(self) -> None:
        ticks = 0
        while not self._stop.wait(0.1):
            ticks += 1
            if ticks % 10 == 0:
                self._scan()
            else:
                for pid in list(self._seen):
                    self._read(pid)

    def _scan(self) -> None:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(b"postgres: ") and self._marker in cmdline:
                self._read(int(entry.name))

    def _read(self, pid: int) -> None:
        fields = _stat(pid)
        if fields is not None:
            self._seen[pid] = (int(fields[11]) + int(fields[12])) / _TICK


@dataclass(frozen=True)
class Cpu:
    """CPU seconds of one phase: this process (with reaped children), Dovecot, PostgreSQL."""

    process: float
    dovecot: float
    database: float

    @property
    def total(self) -> float:
        return self.process + self.dovecot + self.database


@contextmanager
def cpu_of_phase(result: dict[str, Cpu]) -> Iterator[None]:
    """Measure the CPU of the enclosed phase into `result["cpu"]`."""
    master = int(os.environ["AVIAN_BENCH_DOVECOT_PID"])
    database_name = os.environ["DATABASE_URL"].rsplit("/", 1)[1]

    def own() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime

    dovecot_before, own_before = dovecot_cpu_seconds(master), own()
    with BackendCpu(database_name) as backends:
        yield
        time.sleep(0.3)  # let Dovecot's master reap the session's processes
    result["cpu"] = Cpu(
        process=own() - own_before,
        dovecot=dovecot_cpu_seconds(master) - dovecot_before,
        database=backends.seconds,
    )


# --- One measured run, in its own process -------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    messages: int
    raw_fetch_seconds: float
    raw_fetch_bytes: int
    raw_fetch_cpu: Cpu
    flow_seconds: float
    flow_cpu: Cpu
    processing_seconds: float
    peak_rss_mb: float
    rss_before_flow_mb: float
    outcomes: dict[str, int]
    alert_rows: int
    profile: str | None

    @property
    def raw_rate(self) -> float:
        return self.messages / self.raw_fetch_seconds

    @property
    def flow_rate(self) -> float:
        return self.messages / self.flow_seconds


def measure(env: dict[str, str], messages: int, batch_size: int, *, profile: bool) -> RunResult:
    child_env = {**env, "IMAP_FETCH_BATCH_SIZE": str(batch_size)}
    args = [sys.executable, __file__, "--child", "--batch-size", str(batch_size)]
    result = subprocess.run(
        [*args, *(["--profile"] if profile else [])],
        env=child_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith('{"bench"')]
    if result.returncode != 0 or not lines:
        raise SystemExit(f"benchmark run failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    data = json.loads(lines[-1])["bench"]
    data["raw_fetch_cpu"] = Cpu(**data["raw_fetch_cpu"])
    data["flow_cpu"] = Cpu(**data["flow_cpu"])
    if data["messages"] != messages:
        raise SystemExit(f"the run saw {data['messages']} messages, expected {messages}")
    return RunResult(**data)


def raw_fetch(batch_size: int) -> tuple[int, int, float]:
    """UNSEEN search and batched BODY.PEEK[] fetches with bare imapclient: messages, bytes, s."""
    from imapclient import IMAPClient

    context = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    started = time.monotonic()
    client = IMAPClient(
        os.environ["IMAP_HOST"], int(os.environ["IMAP_PORT"]), ssl_context=context, timeout=60
    )
    client.login(os.environ["IMAP_USER"], os.environ["IMAP_PASSWORD"])
    client.select_folder("INBOX", readonly=True)
    uids = sorted(client.search(["UNSEEN"]))
    count = size = 0
    for start in range(0, len(uids), batch_size):
        fetched = client.fetch(uids[start : start + batch_size], [b"BODY.PEEK[]", b"INTERNALDATE"])
        count += len(fetched)
        size += sum(len(data[b"BODY[]"]) for data in fetched.values())
    client.logout()
    return count, size, time.monotonic() - started


def child(batch_size: int, profile: bool) -> None:
    from flows.email_alerts import email_alerts

    raw_cpu: dict[str, Cpu] = {}
    with cpu_of_phase(raw_cpu):
        count, size, raw_seconds = raw_fetch(batch_size)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    profiler = cProfile.Profile() if profile else None
    flow_cpu: dict[str, Cpu] = {}
    with cpu_of_phase(flow_cpu):
        started = time.monotonic()
        if profiler is not None:
            profiler.enable()
        state = email_alerts(return_state=True)
        if profiler is not None:
            profiler.disable()
        flow_seconds = time.monotonic() - started
    summary = state.result()
    report = summary.report
    assert report is not None, summary
    profile_text = None
    if profiler is not None:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("cumulative").print_stats(r"avian_workers|imapclient|sqlalchemy", 30)
        stats.sort_stats("tottime").print_stats(25)
        profile_text = out.getvalue()
    print(
        json.dumps(
            {
                "bench": {
                    "messages": count,
                    "raw_fetch_seconds": raw_seconds,
                    "raw_fetch_bytes": size,
                    "raw_fetch_cpu": vars(raw_cpu["cpu"]),
                    "flow_seconds": flow_seconds,
                    "flow_cpu": vars(flow_cpu["cpu"]),
                    "processing_seconds": report.seconds,
                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                    "rss_before_flow_mb": rss_before,
                    "outcomes": report.outcomes,
                    "alert_rows": report.alert_rows,
                    "profile": profile_text,
                }
            }
        ),
        flush=True,
    )


# --- Report ------------------------------------------------------------------------------------


def cpu_text(cpu: Cpu, messages: int) -> str:
    return (
        f"{cpu.total:6.2f} s ({cpu.total / messages * 1e6:.0f} us/msg): process {cpu.process:.2f}, "
        f"Dovecot {cpu.dovecot:.2f}, PostgreSQL {cpu.database:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--small", type=int, default=2_000, help="backlog of the memory baseline")
    parser.add_argument("--batch-size", type=int, default=200, help="IMAP_FETCH_BATCH_SIZE")
    parser.add_argument("--profile", action="store_true", help="cProfile the largest run")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.batch_size, args.profile)
        return

    print(
        f"Email alerts benchmark: backlogs of {args.small} and {args.messages} messages, "
        f"fetch batches of {args.batch_size}; load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} CPUs",
        flush=True,
    )
    results: list[RunResult] = []
    with services() as running:
        add_firewalls(running.env)
        for size in (args.small, args.messages):
            env = {**running.env, **fill_mailbox(running.env, running.dovecot, size)}
            result = measure(
                env, size, args.batch_size, profile=args.profile and size == args.messages
            )
            results.append(result)
            print(
                f"\n{size} messages ({result.raw_fetch_bytes / size / 1024:.1f} KiB each):\n"
                f"  raw UID FETCH   {result.raw_fetch_seconds:7.2f} s  {result.raw_rate:7.0f} msg/s"
                f"  CPU {cpu_text(result.raw_fetch_cpu, size)}\n"
                f"  flow end to end {result.flow_seconds:7.2f} s  {result.flow_rate:7.0f} msg/s"
                f"  CPU {cpu_text(result.flow_cpu, size)}\n"
                f"    processing {result.processing_seconds:.2f} s; outcomes {result.outcomes}, "
                f"{result.alert_rows} alert rows\n"
                f"  ratio {result.flow_rate / result.raw_rate:.2f} of raw fetch; peak RSS "
                f"{result.peak_rss_mb:.0f} MB ({result.rss_before_flow_mb:.0f} MB before the flow)",
                flush=True,
            )
            if result.profile:
                print(result.profile, flush=True)

    small, large = results
    ratio = large.flow_rate / large.raw_rate
    growth = large.peak_rss_mb - small.peak_rss_mb
    print("\nTargets:")
    print(f"  throughput >= 0.5 of raw fetch: {ratio:.2f}  {'met' if ratio >= 0.5 else 'NOT met'}")
    print(
        f"  >= 200 messages/s end to end:   {large.flow_rate:.0f}  "
        f"{'met' if large.flow_rate >= 200 else 'NOT met'}"
    )
    print(
        f"  memory flat ({small.messages} vs {large.messages}): peak RSS {small.peak_rss_mb:.0f} MB "
        f"vs {large.peak_rss_mb:.0f} MB ({growth:+.0f} MB for {large.messages / small.messages:.0f}x "
        f"the backlog)  {'met' if growth <= 0.1 * small.peak_rss_mb else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
