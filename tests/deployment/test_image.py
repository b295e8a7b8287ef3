"""The Dockerfile: locked dependencies, non-root, no secrets, and the two ways the image is started.

There is no Docker engine here: these read the Dockerfile (hadolint: scripts/lint-dockerfile.sh).
"""

from __future__ import annotations

import json
import re
import tomllib

from tests.deployment.conftest import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()
INSTRUCTIONS = [
    line.split(maxsplit=1)
    for line in re.sub(r"\\\n\s*", " ", DOCKERFILE).splitlines()
    if line.strip() and not line.lstrip().startswith("#")
]


def _arguments(instruction: str) -> list[str]:
    return [arguments for name, arguments in INSTRUCTIONS if name == instruction]


def test_the_base_image_is_the_locked_prefect_release_for_our_python() -> None:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    (prefect,) = (p for p in lock["package"] if p["name"] == "prefect")

    assert _arguments("FROM") == [f"prefecthq/prefect:{prefect['version']}-python3.12"]


def test_dependencies_come_from_the_lock_file_without_development_tools() -> None:
    installs = [run for run in _arguments("RUN") if "uv " in run]

    assert installs
    assert all(run.startswith("uv sync --frozen --no-dev") for run in installs)


def test_flow_runs_do_not_run_as_root() -> None:
    *_, user = _arguments("USER")

    assert user.isdigit()
    assert int(user) != 0


def test_the_allocator_returns_freed_api_pages_to_the_system() -> None:
    # Two arenas and a fixed mmap threshold: bench/README.md (edr-polling, peak RSS).
    environment = dict(re.findall(r"(\w+)=(\S+)", " ".join(_arguments("ENV"))))

    assert environment["MALLOC_ARENA_MAX"] == "2"
    assert int(environment["MALLOC_MMAP_THRESHOLD_"]) <= 128 * 1024


def test_no_secret_is_baked_into_a_layer() -> None:
    names = [
        assignment.split("=", 1)[0]
        for arguments in _arguments("ENV") + _arguments("ARG")
        for assignment in arguments.split()
        if "=" in assignment
    ]
    rules = [
        line
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]

    assert not [
        n for n in names if re.search(r"SECRET|PASSWORD|TOKEN|KEY|DATABASE_URL|REDIS_URL", n)
    ]
    assert rules[0] == "*"  # the build context is only what is named after this
    assert not [rule for rule in rules if rule.startswith("!") and ".env" in rule]


def test_the_default_command_is_the_legacy_worker_type_entry_point() -> None:
    (command,) = _arguments("CMD")

    assert json.loads(command) == ["python", "-m", "flows"]
