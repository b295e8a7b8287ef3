"""AWS Secrets Manager: per-tenant Microsoft app credentials (`edr/tenant/{tenant_id}`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import SecretStr

from avian_workers.logs import register_secret
from avian_workers.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient


class TenantSecretError(Exception):
    """The tenant's secret is missing, unreadable or lacks a field; the message says which."""


@dataclass(frozen=True)
class TenantCredentials:
    """A tenant's Entra ID app registration (client credentials flow)."""

    client_id: str
    client_secret: SecretStr
    azure_tenant_id: str


_REQUIRED_FIELDS = ("clientId", "clientSecret", "tenantId")


def secrets_client(settings: Settings) -> SecretsManagerClient:
    """A Secrets Manager client for AWS_REGION (and AWS_ENDPOINT_URL when set)."""
    client: SecretsManagerClient = boto3.client(
        "secretsmanager",
        region_name=settings.aws_region,
        endpoint_url=settings.aws_endpoint_url,
        config=Config(
            connect_timeout=settings.http_connect_timeout_seconds,
            read_timeout=settings.http_read_timeout_seconds,
            retries={"mode": "standard", "max_attempts": 5},
        ),
    )
    return client


def secret_name(template: str, tenant_id: object) -> str:
    """The secret's name for one AVIAN tenant."""
    return template.format(tenant_id=tenant_id)


def parse_tenant_secret(name: str, secret_string: str | None) -> TenantCredentials:
    """Validate a tenant SecretString: JSON with clientId, clientSecret and tenantId."""
    if not secret_string:
        raise TenantSecretError(f"secret {name!r} has no value")
    try:
        payload: Any = json.loads(secret_string)
    except json.JSONDecodeError:
        raise TenantSecretError(f"secret {name!r} is not valid JSON") from None
    if not isinstance(payload, dict):
        raise TenantSecretError(f"secret {name!r} must be a JSON object")
    not_text = [f for f in _REQUIRED_FIELDS if f in payload and not isinstance(payload[f], str)]
    if not_text:
        raise TenantSecretError(f"secret {name!r}: field(s) not a string: {', '.join(not_text)}")
    # A value pasted with a trailing newline would otherwise fail later as a wrong secret.
    values = {f: payload[f].strip() for f in _REQUIRED_FIELDS if f in payload}
    missing = [f for f in _REQUIRED_FIELDS if not values.get(f)]
    if missing:
        raise TenantSecretError(f"secret {name!r} lacks field(s): {', '.join(missing)}")
    register_secret(values["clientSecret"])
    return TenantCredentials(
        client_id=values["clientId"],
        client_secret=SecretStr(values["clientSecret"]),
        azure_tenant_id=values["tenantId"],
    )


def fetch_tenant_credentials(
    client: SecretsManagerClient, template: str, tenant_id: object
) -> TenantCredentials:
    """Read and validate one tenant's credentials; TenantSecretError names what is wrong."""
    name = secret_name(template, tenant_id)
    try:
        response = client.get_secret_value(SecretId=name)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "Unknown")
        if code == "ResourceNotFoundException":
            raise TenantSecretError(f"secret {name!r} does not exist") from None
        raise TenantSecretError(f"secret {name!r} could not be read: {code}") from None
    except BotoCoreError as exc:
        raise TenantSecretError(f"secret {name!r} could not be read: {exc}") from None
    text = response.get("SecretString")
    if text is None and "SecretBinary" in response:  # stored as binary: its UTF-8 text
        try:
            text = response["SecretBinary"].decode("utf-8")
        except UnicodeDecodeError:
            raise TenantSecretError(f"secret {name!r} is binary, not UTF-8 text") from None
    return parse_tenant_secret(name, text)
