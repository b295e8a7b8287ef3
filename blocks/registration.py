"""Register the block types and create or update the block documents, idempotently.

A document whose stored data already equals the desired data is left alone, so running the
registration again changes nothing. Every `AwsSecret` and the tenant block reference the one
`avian-aws` credentials document, so changing the region or credentials there changes them for all.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from prefect.blocks.core import Block
from prefect.client.orchestration import PrefectClient, get_client
from prefect.utilities.asyncutils import run_coro_as_sync
from prefect_aws import AwsClientParameters, AwsCredentials
from prefect_aws.secrets_manager import AwsSecret
from pydantic import SecretStr

from avian_workers.settings import ImapAuth, ImapTlsMode
from blocks._documents import InvalidBlockDocumentError, load_optional
from blocks.mailbox import AvianMailbox
from blocks.names import DEFAULT_BLOCK_NAMES, BlockNames
from blocks.tenant_credentials import AvianTenantCredentials

BLOCK_TYPES: tuple[type[Block], ...] = (
    AwsCredentials,
    AwsSecret,
    AvianTenantCredentials,
    AvianMailbox,
)


@dataclass(frozen=True)
class AwsSpec:
    """The `avian-aws` document; leave the keys empty on AWS so the ECS task role is used."""

    region: str
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None


@dataclass(frozen=True)
class MailboxSpec:
    """The `avian-mailbox` document; a `*_secret_name` makes that secret an AwsSecret reference."""

    host: str
    user: str
    port: int = 993
    tls: ImapTlsMode = "implicit"
    auth: ImapAuth = "password"
    password: SecretStr | None = None
    password_secret_name: str | None = None
    oauth_tenant_id: str | None = None
    oauth_client_id: str | None = None
    oauth_client_secret: SecretStr | None = None
    oauth_client_secret_secret_name: str | None = None
    oauth_scope: str = "https://outlook.office365.com/.default"
    inbox_folder: str = "INBOX"
    processed_folder: str = "Processed"
    review_folder: str = "Review"


@dataclass(frozen=True)
class RegistrationSpec:
    """Everything `register_blocks` writes; None means that document is not managed."""

    aws: AwsSpec
    tenant_secret_template: str = "edr/tenant/{tenant_id}"  # noqa: S105 - a name
    database_url_secret_name: str | None = None
    redis_url_secret_name: str | None = None
    mailbox: MailboxSpec | None = None


Action = Literal["created", "updated", "unchanged"]


@dataclass(frozen=True)
class BlockChange:
    """What registration did to one block document."""

    block_type_slug: str
    name: str
    action: Action

    @property
    def slug(self) -> str:
        """`<block type>/<document name>`, as `prefect block inspect` takes it."""
        return f"{self.block_type_slug}/{self.name}"


def register_blocks(
    spec: RegistrationSpec, names: BlockNames = DEFAULT_BLOCK_NAMES
) -> list[BlockChange]:
    """Register the block types, then create or update each document `spec` describes."""
    changes = run_coro_as_sync(_register(spec, names))
    assert changes is not None
    return changes


async def _register(spec: RegistrationSpec, names: BlockNames) -> list[BlockChange]:
    aws = _aws_credentials(spec.aws)
    async with get_client() as client:
        mailbox = spec.mailbox
        if mailbox is not None:
            stored = await _stored(AvianMailbox, names.mailbox, client)
            if isinstance(stored, AvianMailbox):
                mailbox = _keeping_stored_secret_sources(mailbox, stored)
            _mailbox(mailbox, *_mailbox_secrets(mailbox, aws))  # invalid: stop before any write
        for block_type in BLOCK_TYPES:
            await block_type.aregister_type_and_schema(client=client)
        writer = _Writer(client)
        aws = await writer.apply(names.aws_credentials, aws)
        await writer.apply(
            names.tenant_credentials,
            AvianTenantCredentials(
                secret_name_template=spec.tenant_secret_template, aws_credentials=aws
            ),
        )
        for name, secret_name in (
            (names.database_url, spec.database_url_secret_name),
            (names.redis_url, spec.redis_url_secret_name),
        ):
            if secret_name:
                await writer.apply(name, AwsSecret(aws_credentials=aws, secret_name=secret_name))
        if mailbox is not None:
            password_secret, client_secret_secret = _mailbox_secrets(mailbox, aws)
            if password_secret is not None:
                password_secret = await writer.apply(names.imap_password, password_secret)
            if client_secret_secret is not None:
                client_secret_secret = await writer.apply(
                    names.imap_oauth_client_secret, client_secret_secret
                )
            await writer.apply(
                names.mailbox, _mailbox(mailbox, password_secret, client_secret_secret)
            )
        return writer.changes


def _keeping_stored_secret_sources(spec: MailboxSpec, stored: AvianMailbox) -> MailboxSpec:
    """`spec`, where it names no secret, referring to the Secrets Manager secret already stored.

    Registering again without `--imap-password-secret` must not swap a password kept in
    Secrets Manager for whatever IMAP_PASSWORD the environment (or a stray .env) holds.
    """
    if spec.password_secret_name is None and stored.password_secret is not None:
        spec = replace(spec, password_secret_name=stored.password_secret.secret_name)
    if spec.oauth_client_secret_secret_name is None and stored.oauth_client_secret_secret:
        spec = replace(
            spec, oauth_client_secret_secret_name=stored.oauth_client_secret_secret.secret_name
        )
    return spec


class _Invalid:
    """A stored document that no longer validates (edited by hand): it will be replaced."""


_INVALID = _Invalid()


async def _stored[BlockT: Block](
    block_type: type[BlockT], name: str, client: PrefectClient
) -> BlockT | _Invalid | None:
    """The stored document, None when there is none, _INVALID when it no longer validates."""
    try:
        return await load_optional(block_type, name, client)
    except InvalidBlockDocumentError:
        return _INVALID


def _aws_credentials(spec: AwsSpec) -> AwsCredentials:
    return AwsCredentials(
        region_name=spec.region,
        aws_access_key_id=spec.access_key_id,
        aws_secret_access_key=spec.secret_access_key,
        aws_client_parameters=AwsClientParameters(endpoint_url=spec.endpoint_url),
    )


def _mailbox_secrets(
    spec: MailboxSpec, aws: AwsCredentials
) -> tuple[AwsSecret | None, AwsSecret | None]:
    """The AwsSecret documents the mailbox refers to (password, OAuth client secret)."""
    return (
        _aws_secret(aws, spec.password_secret_name),
        _aws_secret(aws, spec.oauth_client_secret_secret_name),
    )


def _aws_secret(aws: AwsCredentials, secret_name: str | None) -> AwsSecret | None:
    return AwsSecret(aws_credentials=aws, secret_name=secret_name) if secret_name else None


def _mailbox(
    spec: MailboxSpec, password_secret: AwsSecret | None, client_secret_secret: AwsSecret | None
) -> AvianMailbox:
    """The mailbox block; a secret kept in Secrets Manager is never also stored in the block."""
    return AvianMailbox(
        host=spec.host,
        port=spec.port,
        tls=spec.tls,
        user=spec.user,
        auth=spec.auth,
        # Only the secret the mailbox's auth uses is kept, and one in Secrets Manager only there.
        password=None if password_secret or spec.auth != "password" else spec.password,
        password_secret=password_secret,
        oauth_tenant_id=spec.oauth_tenant_id,
        oauth_client_id=spec.oauth_client_id,
        oauth_client_secret=(
            None if client_secret_secret or spec.auth != "xoauth2" else spec.oauth_client_secret
        ),
        oauth_client_secret_secret=client_secret_secret,
        oauth_scope=spec.oauth_scope,
        inbox_folder=spec.inbox_folder,
        processed_folder=spec.processed_folder,
        review_folder=spec.review_folder,
    )


class _Writer:
    """Saves documents that differ from what is stored and records what it did."""

    def __init__(self, client: PrefectClient) -> None:
        self._client = client
        self.changes: list[BlockChange] = []

    async def apply[BlockT: Block](self, name: str, desired: BlockT) -> BlockT:
        """The stored document when it already holds `desired`'s data, else `desired` saved."""
        existing = await _stored(type(desired), name, self._client)
        slug = desired.get_block_type_slug()
        if isinstance(existing, Block) and _fingerprint(existing) == _fingerprint(desired):
            self.changes.append(BlockChange(slug, name, "unchanged"))
            return existing
        await desired.asave(name, overwrite=True, client=self._client)
        self.changes.append(BlockChange(slug, name, "created" if existing is None else "updated"))
        return desired


def _fingerprint(block: Block) -> dict[str, Any]:
    """The document's data with secrets revealed and saved nested blocks as references."""
    fields = set(type(block).model_fields)
    data: dict[str, Any] = block.model_dump(
        mode="json", include=fields, context={"include_secrets": True}
    )
    for field in fields:
        nested = getattr(block, field)
        if isinstance(nested, Block) and nested._block_document_id is not None:
            data[field] = {"$ref": str(nested._block_document_id)}
    return data
