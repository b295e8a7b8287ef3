"""Benchmark of the edr-polling flow: N tenants x M devices through the Microsoft simulator.

    uv run python bench/edr_polling.py [--tenants 200] [--devices 2000] [--latency 1.0]
        [--baseline-tenants 25] [--rss-devices 1000,5000,20000] [--rss-tenants 16]
        [--defender-page-size N] [--default-allocator]

Every request the simulator answers (API pages, and the identity round trips: OIDC discovery
and one token per API) waits a fixed `--latency` first. A tenant's round trips are sequential
(page after page), so the latency-bound ideal of a run is

    ideal = round trips per tenant x latency x tenants / concurrency

and the score is ideal / wall time (1.0: the run waited only on Microsoft). Measured:

1. the real flow, `edr_polling(tenant_ids)`, for N tenants at EDR_TENANT_CONCURRENCY 8;
2. the same workload at concurrency 1, as the old worker polled tenants one after another
   (on `--baseline-tenants` of them, extrapolated linearly to N when fewer);
3. the flow's peak RSS for `--rss-tenants` tenants of 1,000 ... 20,000 devices each.

Each run is a fresh process (so `ru_maxrss` is that run's peak) polling fresh AVIAN tenants
(so no watermark or cached dataset shortens it) against the same simulated Microsoft tenants.
The services are throwaway: a PostgreSQL database (dropped afterwards), a Redis key prefix,
moto's Secrets Manager, a Prefect server and the simulator (TLS, a test CA), each in its own
process, so the flow's RSS is the flow's alone. API requests are counted in the flow process.
The flow process runs with the allocator settings of the image (the Dockerfile's MALLOC_*
variables), or with glibc's defaults under `--default-allocator`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _services import REPO, database, free_port, http_ok, process, wait_until

REDIS_URL = os.environ.get("AVIAN_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


# --- Services ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulatedTenant:
    tenant_id: str
    client_id: str
    client_secret: str
    devices: int


@dataclass
class Services:
    env: dict[str, str]
    tenants: dict[str, list[SimulatedTenant]]  # by group
    simulator_pid: int


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds (user + system, Linux /proc) of a process and all its descendants."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    ticks = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])
        times[pid] = (int(fields[11]) + int(fields[12])) / ticks
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        total += times.get(pid, 0.0)
        stack += [child for child, parent in parents.items() if parent == pid]
    return total


@dataclass(frozen=True)
class Group:
    """Simulated tenants of one size and latency."""

    tenants: int
    devices: int
    latency: float


def simulator_config(
    path: Path, groups: dict[str, Group], *, alerts: int
) -> dict[str, list[SimulatedTenant]]:
    """A TOML file of every group's tenants, and the tenants it describes."""
    tenants: dict[str, list[SimulatedTenant]] = {}
    lines = ["[defaults]", f"alerts = {alerts}"]
    seed = 0
    for label, group in groups.items():
        for _ in range(group.tenants):
            seed += 1
            tenant = SimulatedTenant(
                str(uuid.uuid4()),
                str(uuid.uuid4()),
                f"bench~{secrets.token_urlsafe(24)}",
                group.devices,
            )
            tenants.setdefault(label, []).append(tenant)
            lines += [
                "[[tenants]]",
                f'tenant_id = "{tenant.tenant_id}"',
                f'client_id = "{tenant.client_id}"',
                f'client_secret = "{tenant.client_secret}"',
                f"seed = {seed}",
                f"devices = {group.devices}",
                "[tenants.faults]",
                f"latency = {group.latency}",
            ]
    path.write_text("\n".join(lines) + "\n")
    return tenants


@contextmanager
def services(
    groups: dict[str, Group], *, alerts: int, simulator_workers: int
) -> Iterator[Services]:
    import trustme

    workdir = Path(tempfile.mkdtemp(prefix="avian-bench-"))
    base_env = {
        **os.environ,
        "NODE_ENV": "test",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_REGION": "ca-central-1",
        "AWS_DEFAULT_REGION": "ca-central-1",
    }
    with ExitStack() as stack:
        authority = trustme.CA()
        certificate = authority.issue_cert("127.0.0.1", "localhost")
        cert, key, bundle = workdir / "sim.pem", workdir / "sim.key", workdir / "ca.pem"
        certificate.private_key_pem.write_to_path(key)
        for index, pem in enumerate(certificate.cert_chain_pems):
            pem.write_to_path(cert, append=index > 0)
        bundle.write_bytes(SYSTEM_CA_BUNDLE.read_bytes() + b"\n" + authority.cert_pem.bytes())
        tenants = simulator_config(workdir / "sim.toml", groups, alerts=alerts)

        sim_port, moto_port, prefect_port = free_port(), free_port(), free_port()
        simulator = stack.enter_context(
            process(
                [
                    sys.executable,
                    "-m",
                    "avian_workers.simulator.microsoft",
                    "--port",
                    str(sim_port),
                    "--cert",
                    str(cert),
                    "--key",
                    str(key),
                    "--config",
                    str(workdir / "sim.toml"),
                    "--workers",
                    str(simulator_workers),
                ],
                base_env,
                workdir / "simulator.log",
            )
        )
        stack.enter_context(
            process(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
                base_env,
                workdir / "moto.log",
            )
        )
        prefect_env = {
            **base_env,
            "PREFECT_HOME": str(workdir / "prefect"),
            "PREFECT_API_DATABASE_CONNECTION_URL": (
                f"sqlite+aiosqlite:///{workdir / 'prefect' / 'prefect.db'}"
            ),
        }
        stack.enter_context(
            process(
                [
                    sys.executable,
                    "-m",
                    "prefect",
                    "server",
                    "start",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(prefect_port),
                ],
                prefect_env,
                workdir / "prefect.log",
            )
        )
        database_url = stack.enter_context(database(base_env))
        sim = f"https://127.0.0.1:{sim_port}"
        env = {
            **base_env,
            "DATABASE_URL": database_url,
            "REDIS_URL": REDIS_URL,
            "REDIS_KEY_PREFIX": f"avian-bench:{secrets.token_hex(4)}:",
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}",
            "MS_AUTHORITY_HOST": sim,
            "MS_GRAPH_BASE_URL": f"{sim}/graph",
            "MS_DEFENDER_BASE_URL": f"{sim}/defender",
            "SSL_CERT_FILE": str(bundle),
            "REQUESTS_CA_BUNDLE": str(bundle),
            "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
            "PREFECT_HOME": str(workdir / "client"),
            "PREFECT_LOCAL_STORAGE_PATH": str(workdir / "results"),
        }
        env.pop("EDR_RESULT_STORAGE_BLOCK", None)
        wait_until(lambda: http_ok(f"http://127.0.0.1:{moto_port}/moto-api/"), "moto")
        wait_until(lambda: http_ok(f"http://127.0.0.1:{prefect_port}/api/health"), "Prefect")
        wait_until(lambda: socket.create_connection(("127.0.0.1", sim_port), 1), "simulator")
        try:
            yield Services(env, tenants, simulator.pid)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def avian_tenants(env: dict[str, str], simulated: list[SimulatedTenant]) -> list[str]:
    """Fresh AVIAN tenants (rows and secrets) for the given simulated tenants."""
    import boto3
    import psycopg

    client = boto3.client(
        "secretsmanager",
        region_name=env["AWS_REGION"],
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    ids = []
    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
        for number, tenant in enumerate(simulated):
            tenant_id = str(uuid.uuid4())
            conn.execute(
                "INSERT INTO tenants (id, name, domain) VALUES (%s, %s, %s)",
                (tenant_id, f"Bench {number:03d} {tenant_id[:8]}", f"{tenant_id}.example.com"),
            )
            client.create_secret(
                Name=f"edr/tenant/{tenant_id}",
                SecretString=json.dumps(
                    {
                        "clientId": tenant.client_id,
                        "clientSecret": tenant.client_secret,
                        "tenantId": tenant.tenant_id,
                    }
                ),
            )
            ids.append(tenant_id)
    return ids


# --- One run, in its own process -----------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    tenants: int
    concurrency: int
    wall_seconds: float
    cpu_seconds: float
    simulator_cpu_seconds: float
    api_requests: int
    pages: int
    peak_rss_mb: float
    outcomes: dict[str, int]


def image_allocator_env() -> dict[str, str]:
    """The glibc allocator settings the image runs every flow with (the Dockerfile's ENV)."""
    return dict(re.findall(r"\b(MALLOC_[A-Z_]+)=(\S+)", (REPO / "Dockerfile").read_text()))


def run_flow(
    services: Services,
    tenant_ids: list[str],
    concurrency: int,
    page_size: int | None,
    *,
    allocator: dict[str, str],
) -> RunResult:
    """Poll `tenant_ids` in a fresh process; its wall time, API requests and peak RSS."""
    child_env = {
        **services.env,
        **allocator,
        "EDR_TENANT_CONCURRENCY": str(concurrency),
        "LOG_LEVEL": "warning",
    }
    if page_size is not None:
        child_env["EDR_DEFENDER_PAGE_SIZE"] = str(page_size)
    simulator_cpu = tree_cpu_seconds(services.simulator_pid)
    result = subprocess.run(
        [sys.executable, __file__, "--child"],
        input=json.dumps(tenant_ids),
        env=child_env,
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith('{"bench"')]
    if result.returncode != 0 or not lines:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        raise RuntimeError(f"the flow run failed (exit {result.returncode})")
    data = json.loads(lines[-1])["bench"]
    return RunResult(
        tenants=len(tenant_ids),
        concurrency=concurrency,
        wall_seconds=data["wall_seconds"],
        cpu_seconds=data["cpu_seconds"],
        simulator_cpu_seconds=tree_cpu_seconds(services.simulator_pid) - simulator_cpu,
        api_requests=data["api_requests"],
        pages=data["pages"],
        peak_rss_mb=data["peak_rss_mb"],
        outcomes=data["outcomes"],
    )


def child() -> None:
    """Run the flow on the tenant ids read from stdin; print one JSON line of measurements.

    Counts the round trips to Microsoft (the simulator): API pages over httpx and identity
    requests (OIDC discovery, tokens) over MSAL's `requests`. Prefect's own API calls are not.
    """
    import httpx
    import requests

    microsoft = os.environ["MS_AUTHORITY_HOST"]
    tenant_ids = [uuid.UUID(t) for t in json.loads(sys.stdin.read())]
    counted = {"requests": 0, "answered": 0}
    lock = threading.Lock()

    def count(url: str, status: int) -> None:
        if url.startswith(microsoft):
            with lock:
                counted["requests"] += 1
                counted["answered"] += status < 300

    api_send, identity_send = httpx.Client.send, requests.Session.send

    def counting_api_send(
        self: httpx.Client, request: httpx.Request, **kwargs: Any
    ) -> httpx.Response:
        response = api_send(self, request, **kwargs)
        count(str(request.url), response.status_code)
        return response

    def counting_identity_send(
        self: requests.Session, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        response = identity_send(self, request, **kwargs)
        count(str(request.url), response.status_code)
        return response

    httpx.Client.send = counting_api_send  # type: ignore[method-assign]
    requests.Session.send = counting_identity_send  # type: ignore[method-assign]
    from flows.edr_polling import edr_polling

    started, cpu_started = time.monotonic(), time.process_time()
    state = edr_polling(tenant_ids=tenant_ids, return_state=True)
    wall, cpu = time.monotonic() - started, time.process_time() - cpu_started
    outcomes: dict[str, int] = {}
    for report in state.result().tenants:
        outcomes[report.outcome] = outcomes.get(report.outcome, 0) + 1
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    measurement = {
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "api_requests": counted["requests"],
        "pages": counted["answered"],
        "peak_rss_mb": peak_kb / 1024,
        "outcomes": outcomes,
    }
    print(json.dumps({"bench": measurement}), flush=True)


# --- Report --------------------------------------------------------------------------------


def ideal_seconds(run: RunResult, latency: float, concurrency: int) -> float:
    """Sequential round trips per tenant x latency x tenants / concurrency (one tenant at least)."""
    per_tenant = run.pages / run.tenants
    return per_tenant * latency * max(run.tenants / concurrency, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=1.0, help="seconds per request")
    parser.add_argument("--alerts", type=int, default=30, help="alerts per tenant")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--baseline-tenants",
        type=int,
        default=25,
        help="tenants of the concurrency-1 run (0: skip it)",
    )
    parser.add_argument("--rss-devices", default="1000,5000,20000")
    parser.add_argument("--rss-tenants", type=int, default=16)
    parser.add_argument(
        "--rss-latency", type=float, default=0.05, help="seconds per request in the RSS runs"
    )
    parser.add_argument("--simulator-workers", type=int, default=2)
    parser.add_argument(
        "--defender-page-size", type=int, help="EDR_DEFENDER_PAGE_SIZE (default: the setting's)"
    )
    parser.add_argument(
        "--default-allocator",
        action="store_true",
        help="run the flow without the image's MALLOC_* settings (glibc's defaults)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child()
        return

    rss_devices = [int(n) for n in args.rss_devices.split(",") if n]
    groups = {"workload": Group(args.tenants, args.devices, args.latency)}
    for devices in rss_devices:
        groups[f"rss-{devices}"] = Group(args.rss_tenants, devices, args.rss_latency)
    print(
        f"EDR polling benchmark: {args.tenants} tenants x {args.devices} devices, "
        f"{args.latency * 1000:.0f} ms per API request, concurrency {args.concurrency}",
        flush=True,
    )
    allocator = {} if args.default_allocator else image_allocator_env()
    print(
        "allocator: "
        + (" ".join(f"{name}={value}" for name, value in allocator.items()) or "glibc defaults"),
        flush=True,
    )
    with services(groups, alerts=args.alerts, simulator_workers=args.simulator_workers) as env:
        workload = env.tenants["workload"]

        page_size = args.defender_page_size
        concurrent = run_flow(
            env, avian_tenants(env.env, workload), args.concurrency, page_size, allocator=allocator
        )
        ideal = ideal_seconds(concurrent, args.latency, args.concurrency)
        print(
            f"\n1. concurrency {args.concurrency}: {concurrent.wall_seconds:.1f} s wall, "
            f"{concurrent.pages / concurrent.tenants:.1f} round trips per tenant "
            f"({concurrent.api_requests} requests to Microsoft in all), "
            f"ideal {ideal:.1f} s -> {ideal / concurrent.wall_seconds:.2f} of ideal "
            f"(target >= 0.70); peak RSS {concurrent.peak_rss_mb:.0f} MB; "
            f"outcomes {concurrent.outcomes}; CPU: flow {concurrent.cpu_seconds:.0f} s, "
            f"simulator {concurrent.simulator_cpu_seconds:.0f} s "
            f"({os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end)",
            flush=True,
        )

        baseline_tenants = min(args.baseline_tenants, args.tenants)
        if baseline_tenants > 0:
            sequential = run_flow(
                env,
                avian_tenants(env.env, workload[:baseline_tenants]),
                1,
                page_size,
                allocator=allocator,
            )
            scale = args.tenants / baseline_tenants
            estimated = sequential.wall_seconds * scale
            sequential_ideal = ideal_seconds(sequential, args.latency, 1)
            print(
                f"2. concurrency 1: {sequential.wall_seconds:.1f} s for {baseline_tenants} tenants"
                + (f", x{scale:g} -> {estimated:.0f} s for {args.tenants}" if scale != 1 else "")
                + f" ({sequential_ideal / sequential.wall_seconds:.2f} of its ideal); "
                f"concurrency {args.concurrency} is {estimated / concurrent.wall_seconds:.1f}x faster",
                flush=True,
            )

        if not rss_devices:
            return
        print(
            f"3. peak RSS, {args.rss_tenants} tenants at concurrency {args.concurrency}, "
            f"{args.rss_latency * 1000:.0f} ms per request:"
        )
        rss: dict[int, float] = {}
        for devices in rss_devices:
            run = run_flow(
                env,
                avian_tenants(env.env, env.tenants[f"rss-{devices}"]),
                args.concurrency,
                page_size,
                allocator=allocator,
            )
            rss[devices] = run.peak_rss_mb
            print(
                f"   {devices:>6} devices per tenant: {run.peak_rss_mb:.0f} MB "
                f"({run.wall_seconds:.1f} s, flow CPU {run.cpu_seconds:.0f} s, "
                f"outcomes {run.outcomes})",
                flush=True,
            )
        print(
            f"   max {max(rss.values()):.0f} MB (target < 500), "
            f"spread {max(rss.values()) - min(rss.values()):.0f} MB",
            flush=True,
        )


if __name__ == "__main__":
    main()
