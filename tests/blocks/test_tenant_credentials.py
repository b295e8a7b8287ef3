"""AvianTenantCredentials: one block resolves every tenant's secret by template at run time."""

from __future__ import annotations

import json
from typing import Any
from uuid import uuid4

import pytest
from prefect_aws import AwsCredentials
from pydantic import ValidationError

from avian_workers.logs import MASK, redact_text
from avian_workers.secrets_manager import TenantSecretError
from blocks.tenant_credentials import AvianTenantCredentials


def _store(secretsmanager: Any, name: str, **fields: str) -> None:
    secretsmanager.create_secret(Name=name, SecretString=json.dumps(fields))


def test_reads_the_secret_the_default_template_names(
    secretsmanager: Any, moto_credentials: AwsCredentials
) -> None:
    tenant_id = uuid4()
    _store(
        secretsmanager,
        f"edr/tenant/{tenant_id}",
        clientId="app-1",
        clientSecret="client-secret-of-tenant-1",
        tenantId="azure-tenant-1",
    )
    block = AvianTenantCredentials(aws_credentials=moto_credentials)

    credentials = block.credentials_for(tenant_id)

    assert credentials.client_id == "app-1"
    assert credentials.client_secret.get_secret_value() == "client-secret-of-tenant-1"
    assert credentials.azure_tenant_id == "azure-tenant-1"


def test_a_custom_template_reads_the_older_installs_secret_name(
    secretsmanager: Any, moto_credentials: AwsCredentials
) -> None:
    tenant_id = uuid4()
    _store(
        secretsmanager,
        f"edr/tenant/{tenant_id}/microsoft-credentials",
        clientId="app-2",
        clientSecret="client-secret-of-tenant-2",
        tenantId="azure-tenant-2",
    )
    block = AvianTenantCredentials(
        secret_name_template="edr/tenant/{tenant_id}/microsoft-credentials",
        aws_credentials=moto_credentials,
    )

    assert block.credentials_for(str(tenant_id)).client_id == "app-2"


def test_the_client_secret_read_is_masked_in_later_log_lines(
    secretsmanager: Any, moto_credentials: AwsCredentials
) -> None:
    tenant_id = uuid4()
    _store(
        secretsmanager,
        f"edr/tenant/{tenant_id}",
        clientId="app-3",
        clientSecret="never-log-me-tenant-3",
        tenantId="azure-tenant-3",
    )

    AvianTenantCredentials(aws_credentials=moto_credentials).credentials_for(tenant_id)

    assert redact_text("token request with never-log-me-tenant-3") == f"token request with {MASK}"


def test_a_missing_secret_fails_that_tenant_naming_the_secret(
    moto_credentials: AwsCredentials,
) -> None:
    tenant_id = uuid4()
    block = AvianTenantCredentials(aws_credentials=moto_credentials)

    with pytest.raises(TenantSecretError, match=f"edr/tenant/{tenant_id}.*does not exist"):
        block.credentials_for(tenant_id)


def test_a_secret_lacking_a_field_fails_naming_the_field(
    secretsmanager: Any, moto_credentials: AwsCredentials
) -> None:
    tenant_id = uuid4()
    _store(secretsmanager, f"edr/tenant/{tenant_id}", clientId="app-4", tenantId="azure-4")

    with pytest.raises(TenantSecretError, match="clientSecret"):
        AvianTenantCredentials(aws_credentials=moto_credentials).credentials_for(tenant_id)


def test_a_template_without_the_tenant_placeholder_is_rejected() -> None:
    with pytest.raises(ValidationError, match=r"\{tenant_id\}"):
        AvianTenantCredentials(secret_name_template="edr/tenant/fixed")


def test_empty_aws_credentials_use_the_default_credential_chain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # On ECS the default chain is the task role; here it is the environment's keys.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-the-default-chain")
    block = AvianTenantCredentials()

    credentials = block.aws_credentials.get_boto3_session().get_credentials()

    assert credentials is not None
    assert credentials.access_key == "from-the-default-chain"
