"""`python -m flows` behaves as the old ECS task entry point did."""

import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.plugins.services import free_port

VALID = ("edr-polling", "metrics-aggregation", "email-alerts")


def _run(
    env: dict[str, str], *args: str, python_options: tuple[str, ...] = ()
) -> tuple[subprocess.CompletedProcess[str], float]:
    base = {
        k: v for k, v in os.environ.items() if k not in {"WORKER_TYPE", "DATABASE_URL", "REDIS_URL"}
    }
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, *python_options, "-m", *(args or ("flows",))],
        env={**base, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd="/tmp",
    )
    return result, time.monotonic() - started


def _json_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("worker_type", ["bogus", None])
def test_unknown_or_missing_worker_type_exits_1_listing_valid_values(
    worker_type: str | None,
) -> None:
    env = {"WORKER_TYPE": worker_type} if worker_type else {}
    result, _ = _run(env)
    assert result.returncode == 1
    (line,) = _json_lines(result.stdout)
    assert line["level"] == "error"
    for name in VALID:
        assert name in line["message"]


def test_a_configuration_error_is_reported_without_importing_prefect() -> None:
    result, _ = _run({"WORKER_TYPE": "bogus"}, python_options=("-X", "importtime"))

    assert result.returncode == 1
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()]
    assert "flows._runner" in imported
    assert not [name for name in imported if name.split(".")[0] == "prefect"]


@pytest.mark.parametrize(
    ("variable", "service"),
    [("DATABASE_URL", "PostgreSQL"), ("REDIS_URL", "Redis")],
)
def test_unreachable_store_stops_within_15s_naming_it_without_the_password(
    variable: str, service: str
) -> None:
    dead_port = free_port()
    env = {
        "WORKER_TYPE": "metrics-aggregation",
        "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/postgres",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "PREFLIGHT_TIMEOUT_SECONDS": "10",
    }
    env[variable] = (
        f"postgresql://app:pw-Sekr1t-42@127.0.0.1:{dead_port}/avian"
        if variable == "DATABASE_URL"
        else f"redis://:pw-Sekr1t-42@127.0.0.1:{dead_port}/0"
    )
    result, elapsed = _run(env)
    assert result.returncode == 1
    assert elapsed < 15
    output = result.stdout + result.stderr
    assert "pw-Sekr1t-42" not in output
    errors = [line for line in _json_lines(result.stdout) if line["level"] == "error"]
    assert errors
    assert service in errors[-1]["message"]
    assert _json_lines(result.stdout)[0]["message"] == "Starting worker: metrics-aggregation"


def test_unroutable_database_host_times_out_within_15s() -> None:
    # 192.0.2.0/24 is TEST-NET-1 but we must not send traffic off loopback: use a port that
    # accepts nothing by binding a listening socket that never answers the protocol.
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        result, elapsed = _run(
            {
                "WORKER_TYPE": "metrics-aggregation",
                "DATABASE_URL": f"postgresql://app:pw-Hidden-9@127.0.0.1:{port}/avian",
                "REDIS_URL": "redis://127.0.0.1:6379/0",
                "PREFLIGHT_TIMEOUT_SECONDS": "3",
            }
        )
    assert result.returncode == 1
    assert elapsed < 15
    assert "pw-Hidden-9" not in result.stdout + result.stderr
    assert "PostgreSQL" in result.stdout
