"""scripts/deploy.sh: defaults for what has one, and a clear stop naming what is missing."""

from __future__ import annotations

import os
import subprocess

from tests.deployment.conftest import REPO

REQUIRED = (
    "AVIAN_IMAGE_REPOSITORY",
    "AVIAN_TASK_ROLE_ARN",
    "AVIAN_EXECUTION_ROLE_ARN",
    "AVIAN_VPC_ID",
    "AVIAN_SUBNET_ID_A",
    "AVIAN_SUBNET_ID_B",
    "AVIAN_SECURITY_GROUP_ID",
)


def _deploy(**env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AVIAN_", "PREFECT_"))}
    return subprocess.run(
        ["bash", "scripts/deploy.sh", "--skip-build"],
        cwd=REPO,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_missing_settings_stop_the_deploy_naming_each_one() -> None:
    result = _deploy()

    assert result.returncode == 1
    assert result.stderr.startswith("deploy: set ")
    for name in REQUIRED:
        assert name in result.stderr
    assert "Deploying" not in result.stdout


def test_settings_with_defaults_are_not_reported_missing() -> None:
    result = _deploy(AVIAN_IMAGE_REPOSITORY="123456789012.dkr.ecr.ca-central-1.amazonaws.com/w")

    assert result.returncode == 1
    for name in ("PREFECT_WORK_POOL_NAME", "AVIAN_ECS_CLUSTER", "AWS_REGION", "NODE_ENV"):
        assert name not in result.stderr
    assert "AVIAN_IMAGE_REPOSITORY" not in result.stderr
    assert "AVIAN_TASK_ROLE_ARN" in result.stderr
