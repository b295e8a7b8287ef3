"""The block document names the workers look up (one Prefect workspace or server per environment)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BlockNames:
    """Names of the block documents; the defaults are what `python -m blocks register` creates."""

    aws_credentials: str = "avian-aws"
    tenant_credentials: str = "avian-tenant-credentials"
    database_url: str = "avian-database-url"
    redis_url: str = "avian-redis-url"
    mailbox: str = "avian-mailbox"
    imap_password: str = "avian-imap-password"  # noqa: S105 - a block name
    imap_oauth_client_secret: str = "avian-imap-oauth-client-secret"  # noqa: S105 - a block name


DEFAULT_BLOCK_NAMES = BlockNames()
