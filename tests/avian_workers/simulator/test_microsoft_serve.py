"""Running the simulator stand-alone: config files, generated tenants and the command line."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from avian_workers.simulator import Faults, generated_tenants
from avian_workers.simulator.microsoft import load_config
from tests.plugins.services import free_port


def test_config_file_gives_defaults_generated_and_explicit_tenants(tmp_path: Path) -> None:
    config = tmp_path / "simulator.toml"
    config.write_text(
        """
        [defaults]
        devices = 120
        [defaults.faults]
        latency = 0.05

        [generate]
        count = 2

        [[tenants]]
        tenant_id = "11111111-1111-4111-8111-111111111111"
        client_id = "app"
        client_secret = "secret"
        alerts = 5
        [tenants.faults]
        throttle_every = 5
        forbidden = ["secureScores"]
        """
    )

    specs, faults = load_config(config)

    assert [spec.devices for spec in specs] == [120, 120, 120]
    assert specs[:2] == generated_tenants(2, devices=120)
    assert specs[2].alerts == 5
    assert faults[specs[0].tenant_id] == Faults(latency=0.05)
    assert faults[specs[2].tenant_id] == Faults(
        latency=0.05, throttle_every=5, forbidden=frozenset({"secureScores"})
    )


def test_config_file_with_an_unknown_fault_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "simulator.toml"
    config.write_text("[defaults.faults]\nlatencey = 1\n")

    with pytest.raises(ValueError, match="unknown fault settings \\['latencey'\\]"):
        load_config(config)


def test_generated_tenants_are_stable_and_distinct() -> None:
    first, again = generated_tenants(3), generated_tenants(3)

    assert first == again
    assert len({spec.tenant_id for spec in first}) == 3
    assert generated_tenants(1, first=2) == first[2:]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, ssl.SSLContext]:
    directory = tmp_path_factory.mktemp("stand-alone")
    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1")
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    issued.cert_chain_pems[0].write_to_path(certfile)
    issued.private_key_pem.write_to_path(keyfile)
    context = ssl.create_default_context()
    authority.configure_trust(context)
    return certfile, keyfile, context


@pytest.fixture(params=[1, 2], ids=["one-process", "two-processes"])
def stand_alone(
    request: pytest.FixtureRequest,
    certificate: tuple[Path, Path, ssl.SSLContext],
    tmp_path: Path,
) -> Iterator[tuple[dict[str, str], list[dict[str, str]], ssl.SSLContext]]:
    certfile, keyfile, context = certificate
    manifest = tmp_path / "tenants.json"
    command = [
        sys.executable,
        "-m",
        "avian_workers.simulator.microsoft",
        f"--port={free_port()}",
        f"--cert={certfile}",
        f"--key={keyfile}",
        "--tenants=2",
        "--devices=12",
        f"--workers={request.param}",
        f"--manifest={manifest}",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        where = json.loads(process.stdout.readline())
        yield where, json.loads(manifest.read_text()), context
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_stand_alone_server_serves_its_manifest_tenants_over_tls(
    stand_alone: tuple[dict[str, str], list[dict[str, str]], ssl.SSLContext],
) -> None:
    where, tenants, context = stand_alone
    assert where["tenants"] == 2
    for tenant in tenants * 3:  # new connections: with two processes both get some
        with httpx.Client(verify=context) as client:
            token = client.post(
                f"{where['authorityHost']}/{tenant['tenantId']}/oauth2/v2.0/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": tenant["clientId"],
                    "client_secret": tenant["clientSecret"],
                    "scope": "https://api.securitycenter.microsoft.com/.default",
                },
            ).json()["access_token"]
        with httpx.Client(verify=context) as client:
            machines = client.get(
                f"{where['defenderBaseUrl']}/api/machines",
                headers={"Authorization": f"Bearer {token}"},
            )
        assert machines.status_code == 200
        assert len(machines.json()["value"]) == 11
