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
def dovecot() -> Iterator[Any]:
    """Dovecot exactly as the test session starts it (throwaway config, TLS, loopback)."""
    from tests.plugins import dovecot as service

    root = Path(tempfile.mkdtemp(prefix="avian-bench-dovecot-"))
    root.chmod(0o755)  # Dovecot's unprivileged users must traverse it
    server, running = service._start(root, service._dovecot_binary(), None)
    try:
        yield server
    finally:
        service._stop(running)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def services() -> Iterator[Services]:
    workdir = Path(tempfile.mkdtemp(prefix="avian-bench-mail-"))
    base_env = {**os.environ, "NODE_ENV": "test", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    with ExitStack() as stack:
        server = stack.enter_context(dovecot())
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


# --- One measured run, in its own process -------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    messages: int
    raw_fetch_seconds: float
    raw_fetch_bytes: int
    flow_seconds: float
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

    count, size, raw_seconds = raw_fetch(batch_size)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    profiler = cProfile.Profile() if profile else None
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
        profile_text = out.getvalue()
    print(
        json.dumps(
            {
                "bench": {
                    "messages": count,
                    "raw_fetch_seconds": raw_seconds,
                    "raw_fetch_bytes": size,
                    "flow_seconds": flow_seconds,
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
                f"  raw UID FETCH   {result.raw_fetch_seconds:7.2f} s  {result.raw_rate:7.0f} msg/s\n"
                f"  flow end to end {result.flow_seconds:7.2f} s  {result.flow_rate:7.0f} msg/s "
                f"(processing {result.processing_seconds:.2f} s; outcomes {result.outcomes}, "
                f"{result.alert_rows} alert rows)\n"
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
