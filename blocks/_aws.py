"""Read the text of an `AwsSecret` block synchronously, with errors that name the secret, never its value."""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError
from prefect_aws import AwsCredentials
from prefect_aws.secrets_manager import AwsSecret

from avian_workers.logs import register_secret

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient


class BlockSecretError(Exception):
    """A secret a block points at is missing or unreadable; the message names it."""


def secrets_manager_client(
    credentials: AwsCredentials, default_region: str | None = None
) -> SecretsManagerClient:
    """A Secrets Manager client of `credentials`, in `default_region` when they name none.

    A credentials block made by hand may leave the region empty; botocore would then look only
    at AWS_DEFAULT_REGION, not at the AWS_REGION the workers are configured with.
    """
    if not credentials.region_name and default_region:
        credentials = credentials.model_copy(update={"region_name": default_region})
    client: SecretsManagerClient = credentials.get_secrets_manager_client()
    return client


def read_secret_text(secret: AwsSecret, default_region: str | None = None) -> str:
    """The secret's value (SecretString, or SecretBinary as UTF-8), masked in every later log line.

    `AwsSecret.read_secret` dispatches to a coroutine inside async code and logs each read; the
    workers read their secrets once at start-up from sync code, so the client is called directly.
    """
    client = secrets_manager_client(secret.aws_credentials, default_region)
    name = secret.secret_name
    try:
        response = client.get_secret_value(SecretId=name)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "Unknown")
        if code == "ResourceNotFoundException":
            raise BlockSecretError(f"secret {name!r} does not exist") from None
        raise BlockSecretError(f"secret {name!r} could not be read: {code}") from None
    except BotoCoreError as exc:
        raise BlockSecretError(f"secret {name!r} could not be read: {exc}") from None
    if "SecretString" in response:
        value = response["SecretString"]
    elif "SecretBinary" in response:
        try:
            value = response["SecretBinary"].decode("utf-8")
        except UnicodeDecodeError:
            raise BlockSecretError(f"secret {name!r} is binary, not UTF-8 text") from None
    else:
        raise BlockSecretError(f"secret {name!r} has no value")
    value = value.strip()
    if not value:
        raise BlockSecretError(f"secret {name!r} is empty")
    register_secret(value)
    return value
