"""What the flows call at start-up: credentials from Prefect blocks where they exist, else the environment.

Precedence: a block document that exists on the Prefect API the worker talks to wins over the
environment variable it replaces (`avian-database-url` over DATABASE_URL, `avian-redis-url` over
REDIS_URL, `avian-mailbox` over every IMAP_* variable, `avian-tenant-credentials` over
AWS_REGION/TENANT_SECRET_NAME_TEMPLATE for tenant secrets). A missing block means the environment
is used. Without a Prefect API (PREFECT_API_URL unset, the legacy `WORKER_TYPE` mode) no block is
looked up at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import httpx
from prefect.client.orchestration import get_client
from prefect.settings import get_current_settings
from prefect.utilities.asyncutils import run_coro_as_sync
from prefect_aws.secrets_manager import AwsSecret
from pydantic import SecretStr, ValidationError

from avian_workers.logs import register_secret
from avian_workers.secrets_manager import (
    TenantCredentials,
    fetch_tenant_credentials,
    secrets_client,
)
from avian_workers.settings import ConfigError, Settings, WorkerType
from blocks._aws import BlockSecretError, read_secret_text, secrets_manager_client
from blocks._documents import InvalidBlockDocumentError, load_optional
from blocks.mailbox import AvianMailbox
from blocks.names import DEFAULT_BLOCK_NAMES, BlockNames
from blocks.tenant_credentials import AvianTenantCredentials

TenantCredentialsProvider = Callable[[UUID], TenantCredentials]


@dataclass(frozen=True)
class _FoundBlocks:
    database_url: AwsSecret | None
    redis_url: AwsSecret | None
    mailbox: AvianMailbox | None


def prefect_api_configured() -> bool:
    """True when this process talks to a Prefect server or Cloud (where blocks live)."""
    return get_current_settings().api.url is not None


def settings_with_blocks(
    settings: Settings,
    worker: WorkerType | None = None,
    names: BlockNames = DEFAULT_BLOCK_NAMES,
) -> Settings:
    """`settings` with DATABASE_URL, REDIS_URL and IMAP_* taken from the blocks that exist.

    Only the blocks `worker` uses are read (the mailbox only for email-alerts), so a broken
    mailbox secret does not stop the other workers; without `worker`, all of them. Every value
    read is registered for log masking. A block whose secret is missing, a block document that
    no longer validates and a Prefect API that does not answer raise ConfigError naming the
    variable or the block, never a value.
    """
    if not prefect_api_configured():
        return settings
    with_mailbox = worker is None or worker is WorkerType.EMAIL_ALERTS
    try:
        found = run_coro_as_sync(_load_settings_blocks(names, with_mailbox=with_mailbox))
    except httpx.HTTPError as exc:
        raise ConfigError(
            f"PREFECT_API_URL: the Prefect API did not answer reading blocks ({exc!s:.200})"
        ) from None
    except InvalidBlockDocumentError as exc:
        raise ConfigError(f"{exc!s:.300}") from None
    assert found is not None
    updates: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for field, block, block_name in (
        ("database_url", found.database_url, names.database_url),
        ("redis_url", found.redis_url, names.redis_url),
    ):
        if block is not None:
            with _naming_block(field.upper(), block_name):
                updates[field] = SecretStr(_url_secret(block, settings.aws_region))
            sources[field] = block_name
    if found.mailbox is not None:
        with _naming_block("IMAP", names.mailbox):
            imap = found.mailbox.imap_settings(settings.aws_region)
        updates.update(imap)
        sources.update(dict.fromkeys(imap, names.mailbox))
    if not updates:
        return settings
    try:
        return Settings.model_validate({**settings.model_dump(), **updates})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, sources)) from None


def tenant_credentials_provider(
    settings: Settings, names: BlockNames = DEFAULT_BLOCK_NAMES
) -> TenantCredentialsProvider:
    """A function from AVIAN tenant id to its Microsoft app credentials.

    The `avian-tenant-credentials` block's template and AWS credentials when that block exists,
    else AWS_REGION, AWS_ENDPOINT_URL and TENANT_SECRET_NAME_TEMPLATE with boto3's credential chain.
    The function raises TenantSecretError naming the secret when one is missing or malformed.
    """
    block = (
        run_coro_as_sync(load_optional(AvianTenantCredentials, names.tenant_credentials))
        if prefect_api_configured()
        else None
    )
    if block is not None:
        client = secrets_manager_client(block.aws_credentials, settings.aws_region)
        template = block.secret_name_template
    else:
        client = secrets_client(settings)
        template = settings.tenant_secret_name_template

    def credentials_for(tenant_id: UUID) -> TenantCredentials:
        return fetch_tenant_credentials(client, template, tenant_id)

    return credentials_for


async def _load_settings_blocks(names: BlockNames, *, with_mailbox: bool) -> _FoundBlocks:
    async with get_client() as client:
        return _FoundBlocks(
            database_url=await load_optional(AwsSecret, names.database_url, client),
            redis_url=await load_optional(AwsSecret, names.redis_url, client),
            mailbox=(
                await load_optional(AvianMailbox, names.mailbox, client) if with_mailbox else None
            ),
        )


def _url_secret(block: AwsSecret, default_region: str) -> str:
    value = read_secret_text(block, default_region)
    password = urlsplit(value).password if "://" in value else None
    register_secret(password)  # the password alone can appear in a driver's error message
    return value


@contextmanager
def _naming_block(variable: str, block_name: str) -> Iterator[None]:
    """Turn a block's unreadable secret into ConfigError naming the variable and the block."""
    try:
        yield
    except BlockSecretError as exc:
        raise ConfigError(f"{variable}: block {block_name!r}: {exc}") from None


def _describe(error: ValidationError, sources: dict[str, str]) -> str:
    """Name each variable, its block and the problem, never the offending value."""
    problems = []
    for item in error.errors(include_input=False, include_url=False):
        field = str(item["loc"][0]) if item["loc"] else "?"
        message = item["msg"].removeprefix("Value error, ")
        origin = f" (from block {sources[field]!r})" if field in sources else ""
        problems.append(f"{field.upper()}{origin}: {message}")
    return "; ".join(problems)
