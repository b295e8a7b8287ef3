import json
import uuid

import boto3
import pytest

from avian_workers.secrets_manager import (
    TenantSecretError,
    fetch_tenant_credentials,
    secrets_client,
)
from avian_workers.settings import load_settings

TEMPLATE = "edr/tenant/{tenant_id}"


@pytest.fixture
def client(moto_reset: str):  # type: ignore[no-untyped-def]
    return secrets_client(load_settings())


def _put(name: str, value: str) -> None:
    boto3.client("secretsmanager", region_name="ca-central-1").create_secret(
        Name=name, SecretString=value
    )


def test_reads_a_tenant_secret_by_the_name_template(client) -> None:  # type: ignore[no-untyped-def]
    tenant = uuid.uuid4()
    _put(
        f"edr/tenant/{tenant}",
        json.dumps({"clientId": "app", "clientSecret": "s3cr3t-value", "tenantId": "aad"}),
    )
    creds = fetch_tenant_credentials(client, TEMPLATE, tenant)
    assert (creds.client_id, creds.azure_tenant_id) == ("app", "aad")
    assert creds.client_secret.get_secret_value() == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(creds)


def test_missing_secret_is_a_clear_tenant_error(client) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TenantSecretError, match="does not exist"):
        fetch_tenant_credentials(client, TEMPLATE, uuid.uuid4())


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ('{"clientId": "a", "tenantId": "t"}', "lacks field"),
        ('{"clientId": "a", "clientSecret": "  ", "tenantId": "t"}', "lacks field.*clientSecret"),
        ('{"clientId": 123, "clientSecret": "s", "tenantId": "t"}', "not a string: clientId"),
        ("not json", "not valid JSON"),
        ('["a"]', "JSON object"),
    ],
)
def test_malformed_secret_names_the_problem(client, payload: str, message: str) -> None:  # type: ignore[no-untyped-def]
    tenant = uuid.uuid4()
    _put(f"edr/tenant/{tenant}", payload)
    with pytest.raises(TenantSecretError, match=message):
        fetch_tenant_credentials(client, TEMPLATE, tenant)


def test_secret_values_are_trimmed(client) -> None:  # type: ignore[no-untyped-def]
    tenant = uuid.uuid4()
    _put(
        f"edr/tenant/{tenant}",
        '{"clientId": " app-id\\n", "clientSecret": "s3cret\\n", "tenantId": "entra-id "}',
    )
    credentials = fetch_tenant_credentials(client, TEMPLATE, tenant)
    assert (credentials.client_id, credentials.azure_tenant_id) == ("app-id", "entra-id")
    assert credentials.client_secret.get_secret_value() == "s3cret"


def test_a_secret_stored_as_binary_is_read_as_its_utf8_text(client) -> None:  # type: ignore[no-untyped-def]
    tenant = uuid.uuid4()
    boto3.client("secretsmanager", region_name="ca-central-1").create_secret(
        Name=f"edr/tenant/{tenant}",
        SecretBinary=b'{"clientId": "app-id", "clientSecret": "s3cret", "tenantId": "entra-id"}',
    )
    assert fetch_tenant_credentials(client, TEMPLATE, tenant).client_id == "app-id"


def test_a_binary_secret_that_is_not_text_is_named(client) -> None:  # type: ignore[no-untyped-def]
    tenant = uuid.uuid4()
    boto3.client("secretsmanager", region_name="ca-central-1").create_secret(
        Name=f"edr/tenant/{tenant}", SecretBinary=b"\xff\xfe\x00binary"
    )
    with pytest.raises(TenantSecretError, match="is binary, not UTF-8 text"):
        fetch_tenant_credentials(client, TEMPLATE, tenant)
