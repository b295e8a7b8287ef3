"""blocks.resolve: a block that exists wins over the environment; without one the environment is used."""

from __future__ import annotations

import json
from typing import Any
from uuid import uuid4

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import BlockDocumentUpdate
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_SERVER_ALLOW_EPHEMERAL_MODE,
    temporary_settings,
)
from prefect_aws import AwsClientParameters, AwsCredentials
from prefect_aws.secrets_manager import AwsSecret
from pydantic import SecretStr

from avian_workers.logs import MASK, redact_text
from avian_workers.settings import ConfigError, WorkerType, load_settings
from blocks.mailbox import AvianMailbox
from blocks.names import BlockNames
from blocks.resolve import settings_with_blocks, tenant_credentials_provider
from blocks.tenant_credentials import AvianTenantCredentials
from tests.blocks.conftest import saved

ENV_DATABASE_URL = "postgresql://env-user@env-host:5432/env_db"
ENV_REDIS_URL = "redis://env-host:6379"
TENANT_SECRET = json.dumps(
    {"clientId": "regionless-app", "clientSecret": "regionless-secret", "tenantId": "entra"}
)


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The contract's variables as an old task definition sets them."""
    monkeypatch.setenv("DATABASE_URL", ENV_DATABASE_URL)
    monkeypatch.setenv("REDIS_URL", ENV_REDIS_URL)
    monkeypatch.setenv("IMAP_HOST", "env-imap.example.com")
    monkeypatch.setenv("IMAP_USER", "env-user@example.com")
    monkeypatch.setenv("IMAP_PASSWORD", "env-imap-password")


def _url_blocks(
    secretsmanager: Any, credentials: AwsCredentials, names: BlockNames, database_url: str
) -> None:
    secretsmanager.create_secret(Name="avian/database-url", SecretString=database_url)
    secretsmanager.create_secret(
        Name="avian/redis-url", SecretString="rediss://:redis-block-password@redis.internal:6379"
    )
    saved(
        AwsSecret(aws_credentials=credentials, secret_name="avian/database-url"), names.database_url
    )
    saved(AwsSecret(aws_credentials=credentials, secret_name="avian/redis-url"), names.redis_url)


@pytest.mark.usefixtures("environment")
def test_blocks_win_over_the_environment(
    secretsmanager: Any, moto_credentials: AwsCredentials, block_names: BlockNames
) -> None:
    _url_blocks(
        secretsmanager,
        moto_credentials,
        block_names,
        "postgresql://avian:db-block-password@db.internal:5432/avian",
    )
    saved(
        AvianMailbox(
            host="block-imap.example.com",
            user="alerts@example.com",
            password=SecretStr("block-imap-password"),
        ),
        block_names.mailbox,
    )

    settings = settings_with_blocks(load_settings(), names=block_names)

    assert settings.database_url is not None
    assert settings.redis_url is not None
    assert settings.database_url.get_secret_value() == (
        "postgresql://avian:db-block-password@db.internal:5432/avian"
    )
    assert settings.redis_url.get_secret_value().startswith("rediss://:redis-block-password@")
    assert settings.imap_host == "block-imap.example.com"
    assert settings.imap_password is not None
    assert settings.imap_password.get_secret_value() == "block-imap-password"


@pytest.mark.usefixtures("environment")
def test_the_environment_is_used_where_no_block_exists(
    secretsmanager: Any, moto_credentials: AwsCredentials, block_names: BlockNames
) -> None:
    _url_blocks(
        secretsmanager, moto_credentials, block_names, "postgresql://avian@db.internal/avian"
    )

    settings = settings_with_blocks(load_settings(), names=block_names)

    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == "postgresql://avian@db.internal/avian"
    assert settings.imap_host == "env-imap.example.com"
    assert settings.imap_password is not None
    assert settings.imap_password.get_secret_value() == "env-imap-password"


@pytest.mark.usefixtures("environment")
def test_without_a_prefect_api_no_block_is_looked_up(block_names: BlockNames) -> None:
    saved(
        AvianMailbox(host="block-imap.example.com", user="u", password=SecretStr("block-pw")),
        block_names.mailbox,
    )
    env_settings = load_settings()

    # A lookup would need an API: with none configured and no ephemeral server allowed, it raises.
    with temporary_settings(
        updates={PREFECT_SERVER_ALLOW_EPHEMERAL_MODE: False}, restore_defaults={PREFECT_API_URL}
    ):
        settings = settings_with_blocks(env_settings, names=block_names)

    assert settings == env_settings


@pytest.mark.usefixtures("environment")
def test_block_secrets_are_masked_in_later_log_lines(
    secretsmanager: Any, moto_credentials: AwsCredentials, block_names: BlockNames
) -> None:
    _url_blocks(
        secretsmanager,
        moto_credentials,
        block_names,
        "postgresql://avian:mask-this-db-password@db.internal:5432/avian",
    )

    settings_with_blocks(load_settings(), names=block_names)

    assert redact_text('auth failed: "mask-this-db-password"') == f'auth failed: "{MASK}"'
    assert redact_text("redis-block-password") == MASK


@pytest.mark.usefixtures("environment")
def test_a_block_whose_secret_is_missing_names_variable_block_and_secret(
    moto_credentials: AwsCredentials, block_names: BlockNames
) -> None:
    saved(
        AwsSecret(aws_credentials=moto_credentials, secret_name="avian/gone"),
        block_names.database_url,
    )

    with pytest.raises(ConfigError) as raised:
        settings_with_blocks(load_settings(), names=block_names)

    assert str(raised.value) == (
        f"DATABASE_URL: block {block_names.database_url!r}: secret 'avian/gone' does not exist"
    )


@pytest.mark.usefixtures("environment")
def test_an_invalid_url_in_a_block_is_named_without_its_value(
    secretsmanager: Any, moto_credentials: AwsCredentials, block_names: BlockNames
) -> None:
    _url_blocks(
        secretsmanager,
        moto_credentials,
        block_names,
        "mysql://avian:not-postgres-password@db.internal/avian",
    )

    with pytest.raises(ConfigError) as raised:
        settings_with_blocks(load_settings(), names=block_names)

    message = str(raised.value)
    assert message == (
        f"DATABASE_URL (from block {block_names.database_url!r}): must be a postgresql:// URL"
    )


def _tenant_secret(secretsmanager: Any, name: str, client_id: str) -> None:
    secretsmanager.create_secret(
        Name=name,
        SecretString=json.dumps(
            {"clientId": client_id, "clientSecret": "tenant-client-secret", "tenantId": "azure"}
        ),
    )


def test_tenant_credentials_come_from_the_block_when_it_exists(
    monkeypatch: pytest.MonkeyPatch,
    secretsmanager: Any,
    moto_credentials: AwsCredentials,
    block_names: BlockNames,
) -> None:
    tenant_id = uuid4()
    _tenant_secret(secretsmanager, f"block-template/{tenant_id}", "from-block-template")
    _tenant_secret(secretsmanager, f"edr/tenant/{tenant_id}", "from-environment-template")
    saved(
        AvianTenantCredentials(
            secret_name_template="block-template/{tenant_id}", aws_credentials=moto_credentials
        ),
        block_names.tenant_credentials,
    )

    credentials_for = tenant_credentials_provider(load_settings(), block_names)

    assert credentials_for(tenant_id).client_id == "from-block-template"


def test_tenant_credentials_come_from_the_environment_without_a_block(
    monkeypatch: pytest.MonkeyPatch, secretsmanager: Any, block_names: BlockNames
) -> None:
    tenant_id = uuid4()
    _tenant_secret(secretsmanager, f"env/{tenant_id}/creds", "from-environment-template")
    monkeypatch.setenv("TENANT_SECRET_NAME_TEMPLATE", "env/{tenant_id}/creds")

    credentials_for = tenant_credentials_provider(load_settings(), block_names)

    assert credentials_for(tenant_id).client_id == "from-environment-template"


@pytest.mark.usefixtures("environment")
def test_a_worker_without_mail_never_reads_the_mailbox_block(
    moto_credentials: AwsCredentials, block_names: BlockNames
) -> None:
    saved(
        AvianMailbox(
            host="block-imap.example.com",
            user="alerts@example.com",
            password_secret=AwsSecret(aws_credentials=moto_credentials, secret_name="avian/gone"),
        ),
        block_names.mailbox,
    )

    metrics = settings_with_blocks(
        load_settings(), WorkerType.METRICS_AGGREGATION, names=block_names
    )
    with pytest.raises(ConfigError, match=r"IMAP: block .*'avian/gone' does not exist"):
        settings_with_blocks(load_settings(), WorkerType.EMAIL_ALERTS, names=block_names)

    assert metrics.imap_host == "env-imap.example.com"


@pytest.mark.usefixtures("environment")
def test_a_prefect_api_that_does_not_answer_is_a_configuration_error(
    block_names: BlockNames,
) -> None:
    with (
        temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}),
        pytest.raises(ConfigError, match="PREFECT_API_URL: the Prefect API did not answer"),
    ):
        settings_with_blocks(load_settings(), WorkerType.EDR_POLLING, names=block_names)


@pytest.mark.usefixtures("environment")
def test_a_stored_block_that_no_longer_validates_is_a_configuration_error(
    moto_credentials: AwsCredentials, block_names: BlockNames
) -> None:
    mailbox = saved(
        AvianMailbox(host="block-imap.example.com", user="u", password=SecretStr("block-pw")),
        block_names.mailbox,
    )
    with get_client(sync_client=True) as client:  # as an edit in the UI could leave it
        document = client.read_block_document_by_name(block_names.mailbox, "avian-mailbox")
        client.update_block_document(
            document.id,
            BlockDocumentUpdate(data={**document.data, "host": "", "port": "not a port"}),
        )
    del mailbox

    with pytest.raises(ConfigError, match=f"Unable to load '{block_names.mailbox}'"):
        settings_with_blocks(load_settings(), WorkerType.EMAIL_ALERTS, names=block_names)


@pytest.mark.usefixtures("environment")
def test_blocks_whose_credentials_name_no_region_use_the_configured_region(
    secretsmanager: Any,
    moto_reset: str,
    block_names: BlockNames,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    no_region = AwsCredentials(aws_client_parameters=AwsClientParameters(endpoint_url=moto_reset))
    _url_blocks(secretsmanager, no_region, block_names, "postgresql://avian@db.internal/avian")
    secretsmanager.create_secret(Name="edr/tenant/regionless", SecretString=TENANT_SECRET)
    saved(
        AvianTenantCredentials(
            secret_name_template="edr/tenant/{tenant_id}", aws_credentials=no_region
        ),
        block_names.tenant_credentials,
    )
    # As a worker outside ECS: the region is AWS_REGION only, which botocore does not read.
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_REGION", "ca-central-1")
    settings = load_settings()

    with_blocks = settings_with_blocks(settings, WorkerType.EDR_POLLING, names=block_names)
    credentials = tenant_credentials_provider(settings, block_names)("regionless")  # type: ignore[arg-type]

    assert with_blocks.database_url is not None
    assert with_blocks.database_url.get_secret_value() == "postgresql://avian@db.internal/avian"
    assert credentials.client_id == "regionless-app"
