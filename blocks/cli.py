"""`python -m blocks register`: create or update the workers' Prefect blocks from arguments or the environment.

Arguments win over the environment variables of the platform contract (AWS_REGION, IMAP_*,
TENANT_SECRET_NAME_TEMPLATE ...). Output names each block document and what happened to it,
never a value.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import httpx
from pydantic import SecretStr, ValidationError

from avian_workers.settings import ConfigError, Settings, load_settings
from blocks.registration import (
    AwsSpec,
    MailboxSpec,
    RegistrationSpec,
    register_blocks,
)
from blocks.resolve import prefect_api_configured

__all__ = ["add_parser", "main", "register_blocks", "run", "spec_from_args"]


type Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]


def add_parser(commands: Subcommands) -> None:
    """Add `blocks register` to another CLI's subcommands (dispatch with `run`)."""
    blocks = commands.add_parser("blocks", help="Prefect blocks holding the workers' credentials")
    _add_register(blocks.add_subparsers(dest="blocks_command", required=True))


def _add_register(commands: Subcommands) -> None:
    parser = commands.add_parser(
        "register",
        help="register the block types and create or update the block documents",
        description=__doc__,
    )
    aws = parser.add_argument_group(
        "AWS credentials (block avian-aws; empty keys: the ECS task role is used)"
    )
    aws.add_argument("--aws-region", help="default: AWS_REGION (ca-central-1)")
    aws.add_argument("--aws-endpoint-url", help="default: AWS_ENDPOINT_URL (tests, LocalStack)")
    aws.add_argument("--aws-access-key-id", help="only outside AWS; default: none")
    aws.add_argument("--aws-secret-access-key", help="only outside AWS; default: none")

    secrets = parser.add_argument_group("secrets (AWS Secrets Manager names)")
    secrets.add_argument(
        "--tenant-secret-template",
        help="default: TENANT_SECRET_NAME_TEMPLATE (edr/tenant/{tenant_id})",
    )
    secrets.add_argument(
        "--database-url-secret",
        metavar="NAME",
        help="secret holding DATABASE_URL (block avian-database-url)",
    )
    secrets.add_argument(
        "--redis-url-secret",
        metavar="NAME",
        help="secret holding REDIS_URL (block avian-redis-url)",
    )

    imap = parser.add_argument_group("mailbox (block avian-mailbox; created when a host is known)")
    imap.add_argument("--imap-host", help="default: IMAP_HOST")
    imap.add_argument("--imap-port", type=int, help="default: IMAP_PORT (993)")
    imap.add_argument(
        "--imap-tls", choices=["implicit", "starttls", "plain"], help="default: IMAP_TLS"
    )
    imap.add_argument("--imap-user", help="default: IMAP_USER")
    imap.add_argument("--imap-auth", choices=["password", "xoauth2"], help="default: IMAP_AUTH")
    imap.add_argument(
        "--imap-password-secret",
        metavar="NAME",
        help="secret holding the password (else IMAP_PASSWORD is stored encrypted in the block)",
    )
    imap.add_argument(
        "--imap-oauth-client-secret-secret",
        metavar="NAME",
        help="secret holding the OAuth client secret (else IMAP_OAUTH_CLIENT_SECRET is stored)",
    )


def spec_from_args(args: argparse.Namespace, settings: Settings) -> RegistrationSpec:
    """What to register: each argument, or the environment's value when it is not given."""
    secret_key = args.aws_secret_access_key
    return RegistrationSpec(
        aws=AwsSpec(
            region=args.aws_region or settings.aws_region,
            endpoint_url=args.aws_endpoint_url or settings.aws_endpoint_url,
            access_key_id=args.aws_access_key_id,
            secret_access_key=SecretStr(secret_key) if secret_key else None,
        ),
        tenant_secret_template=args.tenant_secret_template or settings.tenant_secret_name_template,
        database_url_secret_name=args.database_url_secret,
        redis_url_secret_name=args.redis_url_secret,
        mailbox=_mailbox_spec(args, settings),
    )


def _mailbox_spec(args: argparse.Namespace, settings: Settings) -> MailboxSpec | None:
    host = args.imap_host or settings.imap_host
    if not host:
        return None
    user = args.imap_user or settings.imap_user
    if not user:
        raise ConfigError("IMAP_USER: not set (needed with IMAP_HOST)")
    return MailboxSpec(
        host=host,
        user=user,
        port=args.imap_port or settings.imap_port,
        tls=args.imap_tls or settings.imap_tls,
        auth=args.imap_auth or settings.imap_auth,
        password=settings.imap_password,
        password_secret_name=args.imap_password_secret,
        oauth_tenant_id=settings.imap_oauth_tenant_id,
        oauth_client_id=settings.imap_oauth_client_id,
        oauth_client_secret=settings.imap_oauth_client_secret,
        oauth_client_secret_secret_name=args.imap_oauth_client_secret_secret,
        oauth_scope=settings.imap_oauth_scope,
        inbox_folder=settings.imap_inbox_folder,
        processed_folder=settings.imap_processed_folder,
        review_folder=settings.imap_review_folder,
    )


def run(args: argparse.Namespace) -> int:
    """Carry out a parsed `blocks` command; print one line per block document."""
    if not prefect_api_configured():
        return _fail(
            "configuration error: PREFECT_API_URL: not set (blocks live on the Prefect server or"
            " Cloud workspace the workers use: `prefect cloud login` or"
            " `prefect config set PREFECT_API_URL=...`)"
        )
    try:
        changes = register_blocks(spec_from_args(args, load_settings()))
    except ConfigError as exc:
        return _fail(f"configuration error: {exc}")
    except ValidationError as exc:
        return _fail(f"invalid block: {_describe(exc)}")
    except httpx.HTTPError as exc:
        return _fail(f"the Prefect API did not answer: {exc}")
    for change in changes:
        sys.stdout.write(f"{change.action:<9} {change.slug}\n")
    return 0


def _fail(message: str) -> int:
    sys.stderr.write(message + "\n")
    return 1


def _describe(error: ValidationError) -> str:
    """Fields and problems, never the values (they may be passwords)."""
    return "; ".join(
        f"{error.title}.{'.'.join(map(str, item['loc'])) or '*'}: "
        + item["msg"].removeprefix("Value error, ")
        for item in error.errors(include_input=False, include_url=False)
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m blocks", description=__doc__)
    _add_register(parser.add_subparsers(dest="blocks_command", required=True))
    return run(parser.parse_args(argv))
