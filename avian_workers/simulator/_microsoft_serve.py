"""Serving the simulator: a background-thread TLS server, generated tenants, the CLI."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import secrets
import signal
import socket
import sys
import threading
import time
import tomllib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import uvicorn

from avian_workers.simulator._microsoft_app import INTROSPECTION_PATH, MicrosoftSimulator
from avian_workers.simulator._microsoft_data import TenantSpec
from avian_workers.simulator._microsoft_endpoints import DEFENDER_PREFIX, GRAPH_PREFIX
from avian_workers.simulator._microsoft_state import Faults


class SimulatorServer:
    """The simulator on a loopback TLS port, served from a background thread."""

    def __init__(
        self,
        simulator: MicrosoftSimulator,
        *,
        certfile: str | Path,
        keyfile: str | Path,
        host: str = "127.0.0.1",
        port: int = 0,
        reuse_port: bool = False,
    ) -> None:
        """`reuse_port` lets several processes serve one port (the kernel spreads connections)."""
        self.simulator = simulator
        # IPPROTO_TCP explicitly: asyncio turns Nagle off only on sockets created with it, and
        # with Nagle on every response waits ~40 ms for a delayed ACK.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self._socket.bind((host, port))
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(
            simulator.app,
            ssl_certfile=str(certfile),
            ssl_keyfile=str(keyfile),
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            date_header=False,
            timeout_keep_alive=30,
            backlog=2048,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            daemon=True,
            name="microsoft-simulator",
        )

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    @property
    def authority_host(self) -> str:
        return self.base_url

    @property
    def graph_base_url(self) -> str:
        return self.base_url + GRAPH_PREFIX

    @property
    def defender_base_url(self) -> str:
        return self.base_url + DEFENDER_PREFIX

    @property
    def introspection_url(self) -> str:
        """Where an IMAP server checks Outlook tokens (needs an introspection client)."""
        return self.base_url + INTROSPECTION_PATH

    def start(self, timeout: float = 15.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the Microsoft simulator did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)
        self._socket.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def generated_tenants(count: int, *, first: int = 0, **sizes: Any) -> list[TenantSpec]:
    """`count` tenants with stable ids and secrets derived from their number (for benchmarks)."""
    namespace = uuid.UUID("6f1c2d8e-0b7a-4b43-9a57-5d1f3e2c9a10")
    return [
        TenantSpec(
            tenant_id=str(uuid.uuid5(namespace, f"tenant-{k}")),
            client_id=str(uuid.uuid5(namespace, f"app-{k}")),
            client_secret=f"sim{k}~{uuid.uuid5(namespace, f'secret-{k}').hex}",
            seed=k,
            **sizes,
        )
        for k in range(first, first + count)
    ]


def load_config(path: Path) -> tuple[list[TenantSpec], dict[str, Faults]]:
    """Tenants and faults from a TOML file (see the module's `main` for the format)."""
    config = tomllib.loads(path.read_text())
    defaults = dict(config.get("defaults", {}))
    default_faults = Faults.from_mapping(defaults.pop("faults", {}))
    specs: list[TenantSpec] = []
    faults: dict[str, Faults] = {}
    generate = config.get("generate")
    if generate:
        count = int(generate.pop("count"))
        for spec in generated_tenants(count, **{**defaults, **generate}):
            specs.append(spec)
            faults[spec.tenant_id] = default_faults
    for entry in config.get("tenants", []):
        values = {**defaults, **entry}
        tenant_faults = Faults.from_mapping(values.pop("faults", {}), base=default_faults)
        spec = TenantSpec(**values)
        specs.append(spec)
        faults[spec.tenant_id] = tenant_faults
    return specs, faults


@dataclass(frozen=True)
class _ServeOptions:
    """What every serving process needs to build the very same simulator."""

    config: str | None
    tenants: int
    devices: int
    alerts: int
    latency: float
    signing_key: str
    anchor: str
    admin_api: bool


def _simulator_for(options: _ServeOptions) -> tuple[MicrosoftSimulator, list[TenantSpec]]:
    specs, faults = load_config(Path(options.config)) if options.config else ([], {})
    generated = generated_tenants(
        options.tenants, first=len(specs), devices=options.devices, alerts=options.alerts
    )
    for spec in generated:
        specs.append(spec)
        faults[spec.tenant_id] = Faults(latency=options.latency)
    simulator = MicrosoftSimulator(
        admin_api=options.admin_api,
        signing_key=bytes.fromhex(options.signing_key),
        anchor=datetime.fromisoformat(options.anchor),
    )
    for spec in specs:
        simulator.add_tenant(spec, faults.get(spec.tenant_id))
    return simulator, specs


def _serve_until_stopped(
    options: _ServeOptions, *, certfile: Path, keyfile: Path, host: str, port: int
) -> None:
    simulator, _ = _simulator_for(options)
    server = SimulatorServer(
        simulator, certfile=certfile, keyfile=keyfile, host=host, port=port, reuse_port=True
    )
    with server:
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the simulator until interrupted.

    A config file (TOML) looks like:
        [defaults]              # applied to every tenant
        devices = 2000
        [defaults.faults]
        latency = 0.05
        [generate]              # optional: N tenants with derived ids and secrets
        count = 200
        [[tenants]]             # optional: explicit tenants
        tenant_id = "..."
        client_id = "..."
        client_secret = "..."
        [tenants.faults]
        throttle_every = 5

    With --workers above 1 several processes serve the same tenants (for benchmarks); each
    keeps its own fault counters, and the fault-changing admin API is off.
    """
    parser = argparse.ArgumentParser(
        prog="python -m avian_workers.simulator.microsoft",
        description=main.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument("--cert", required=True, type=Path, help="PEM certificate (chain)")
    parser.add_argument("--key", required=True, type=Path, help="PEM private key")
    parser.add_argument("--config", type=Path, help="TOML file of tenants and faults")
    parser.add_argument("--tenants", type=int, default=0, help="generate this many tenants")
    parser.add_argument("--devices", type=int, default=40, help="devices per generated tenant")
    parser.add_argument("--alerts", type=int, default=30, help="alerts per generated tenant")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--workers", type=int, default=1, help="serving processes")
    parser.add_argument("--manifest", type=Path, help="write tenant ids and secrets (JSON) here")
    args = parser.parse_args(argv)

    options = _ServeOptions(
        config=str(args.config) if args.config else None,
        tenants=args.tenants,
        devices=args.devices,
        alerts=args.alerts,
        latency=args.latency,
        signing_key=secrets.token_hex(32),
        anchor=datetime.now(UTC).isoformat(),
        admin_api=args.workers <= 1,
    )
    simulator, specs = _simulator_for(options)
    if args.manifest:
        manifest = [
            {"tenantId": s.tenant_id, "clientId": s.client_id, "clientSecret": s.client_secret}
            for s in specs
        ]
        args.manifest.write_text(json.dumps(manifest, indent=2))
    host = f"[{args.host}]" if ":" in args.host else args.host
    base = f"https://{host}:{args.port}"
    where = {
        "authorityHost": base,
        "graphBaseUrl": base + GRAPH_PREFIX,
        "defenderBaseUrl": base + DEFENDER_PREFIX,
        "tenants": len(specs),
    }
    # Extra processes build the same simulator (same signing key and alert anchor) and share
    # the port; each keeps its own fault counters, so the admin API is off with --workers.
    context = multiprocessing.get_context("spawn")
    helpers = [
        context.Process(
            target=_serve_until_stopped,
            args=(options,),
            kwargs={
                "certfile": args.cert,
                "keyfile": args.key,
                "host": args.host,
                "port": args.port,
            },
            daemon=True,
        )
        for _ in range(args.workers - 1)
    ]
    for helper in helpers:
        helper.start()
    server = SimulatorServer(
        simulator,
        certfile=args.cert,
        keyfile=args.key,
        host=args.host,
        port=args.port,
        reuse_port=args.workers > 1,
    )
    # SIGTERM ends the main process like Ctrl-C, so it stops its helper processes first.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with server:
        print(json.dumps(where), flush=True)  # noqa: T201 - tells the caller where it listens
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            for helper in helpers:
                helper.terminate()
