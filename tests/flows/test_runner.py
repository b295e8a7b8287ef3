"""flows._runner: the stores checked before a run are the ones the run will use."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL
from prefect_aws import AwsClientParameters, AwsCredentials
from prefect_aws.secrets_manager import AwsSecret

from avian_workers.settings import Settings
from blocks.names import DEFAULT_BLOCK_NAMES
from flows._runner import EXIT_FAILED, EXIT_OK, run_worker
from tests.blocks.conftest import saved
from tests.plugins.services import free_port

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture
def database_url_block(moto_reset: str) -> Iterator[Callable[[str], None]]:
    """Saves `avian-database-url` (the name workers look up) for one test, deletes it afterwards."""
    region = "ca-central-1"
    credentials = AwsCredentials(
        region_name=region, aws_client_parameters=AwsClientParameters(endpoint_url=moto_reset)
    )
    secret_name = "avian/database-url"

    def save(url: str) -> None:
        boto3.client("secretsmanager", endpoint_url=moto_reset, region_name=region).create_secret(
            Name=secret_name, SecretString=url
        )
        saved(
            AwsSecret(aws_credentials=credentials, secret_name=secret_name),
            DEFAULT_BLOCK_NAMES.database_url,
        )

    yield save
    with get_client(sync_client=True) as client:
        document = client.read_block_document_by_name(
            DEFAULT_BLOCK_NAMES.database_url, block_type_slug="aws-secret"
        )
        client.delete_block_document(document.id)


def error_lines(output: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("level") == "error"]


def test_a_database_named_by_a_block_is_checked_instead_of_the_environment(
    settings: Settings,
    database_url_block: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    database_url_block(f"postgresql://app:pw-Blocked-7@127.0.0.1:{free_port()}/avian")

    assert run_worker("metrics-aggregation") == EXIT_FAILED

    output = capsys.readouterr().out
    (error,) = error_lines(output)
    assert error["message"].startswith("Worker cannot start")
    assert "PostgreSQL" in error["message"]
    assert "pw-Blocked-7" not in output


def test_a_stale_environment_url_is_not_checked_when_a_prefect_api_names_the_stores(
    settings: Settings,
    database_url_block: Callable[[str], None],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert settings.database_url is not None
    database_url_block(settings.database_url.get_secret_value())
    monkeypatch.setenv("PREFECT_API_URL", str(PREFECT_API_URL.value()))
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:pw-Stale-3@127.0.0.1:{free_port()}/gone")

    exit_code = run_worker(
        "metrics-aggregation", {"start_date": "2026-01-01", "end_date": "2026-01-01"}
    )

    output = capsys.readouterr().out
    assert error_lines(output) == [], output[-2000:]
    assert exit_code == EXIT_OK
    assert "pw-Stale-3" not in output
