"""Block registration: create or update every document, idempotently, references not copies."""

from __future__ import annotations

import argparse
from dataclasses import replace

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import BlockDocumentUpdate
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_aws import AwsCredentials
from pydantic import SecretStr, ValidationError

from blocks.cli import add_parser, main
from blocks.mailbox import AvianMailbox
from blocks.names import DEFAULT_BLOCK_NAMES, BlockNames
from blocks.registration import AwsSpec, MailboxSpec, RegistrationSpec, register_blocks
from blocks.tenant_credentials import AvianTenantCredentials

MAILBOX = MailboxSpec(
    host="imap.example.com", user="alerts@example.com", password_secret_name="avian/imap-password"
)


def _spec(region: str = "ca-central-1", mailbox: MailboxSpec = MAILBOX) -> RegistrationSpec:
    return RegistrationSpec(
        aws=AwsSpec(region=region, endpoint_url="http://127.0.0.1:1"),
        tenant_secret_template="edr/tenant/{tenant_id}/microsoft-credentials",
        database_url_secret_name="avian/database-url",
        redis_url_secret_name="avian/redis-url",
        mailbox=mailbox,
    )


def _documents(suffix: str) -> dict[str, tuple[object, object]]:
    with get_client(sync_client=True) as client:
        return {
            d.name: (d.id, d.data)
            for d in client.read_block_documents(include_secrets=True)
            if d.name and d.name.endswith(suffix)
        }


def test_first_registration_creates_every_document(block_names: BlockNames) -> None:
    changes = register_blocks(_spec(), block_names)

    assert [(c.slug, c.action) for c in changes] == [
        (f"aws-credentials/{block_names.aws_credentials}", "created"),
        (f"avian-tenant-credentials/{block_names.tenant_credentials}", "created"),
        (f"aws-secret/{block_names.database_url}", "created"),
        (f"aws-secret/{block_names.redis_url}", "created"),
        (f"aws-secret/{block_names.imap_password}", "created"),
        (f"avian-mailbox/{block_names.mailbox}", "created"),
    ]


def test_registering_again_changes_nothing(block_names: BlockNames) -> None:
    suffix = block_names.aws_credentials.rsplit("-", 1)[1]
    register_blocks(_spec(), block_names)
    before = _documents(suffix)

    changes = register_blocks(_spec(), block_names)

    assert {c.action for c in changes} == {"unchanged"}
    assert _documents(suffix) == before


def test_a_new_region_updates_only_the_credentials_every_block_refers_to(
    block_names: BlockNames,
) -> None:
    register_blocks(_spec(region="ca-central-1"), block_names)

    changes = register_blocks(_spec(region="us-east-1"), block_names)

    assert {c.name: c.action for c in changes} == {
        block_names.aws_credentials: "updated",
        block_names.tenant_credentials: "unchanged",
        block_names.database_url: "unchanged",
        block_names.redis_url: "unchanged",
        block_names.imap_password: "unchanged",
        block_names.mailbox: "unchanged",
    }
    tenant = AvianTenantCredentials.load(block_names.tenant_credentials)
    assert tenant.aws_credentials.region_name == "us-east-1"


def test_the_mailbox_refers_to_the_password_secret_document(block_names: BlockNames) -> None:
    register_blocks(
        _spec(mailbox=replace(MAILBOX, password=SecretStr("also-in-the-environment"))), block_names
    )

    mailbox = AvianMailbox.load(block_names.mailbox)

    assert mailbox.password is None  # kept in Secrets Manager only, never copied into the block
    assert mailbox.password_secret is not None
    assert mailbox.password_secret._block_document_name == block_names.imap_password
    assert mailbox.password_secret.secret_name == "avian/imap-password"


def test_a_password_without_a_secret_name_is_stored_encrypted_in_the_mailbox(
    block_names: BlockNames,
) -> None:
    register_blocks(
        _spec(mailbox=replace(MAILBOX, password_secret_name=None, password=SecretStr("in-block"))),
        block_names,
    )

    mailbox = AvianMailbox.load(block_names.mailbox)

    assert mailbox.password_secret is None
    assert mailbox.password is not None
    assert mailbox.password.get_secret_value() == "in-block"


def test_registering_again_without_a_secret_name_keeps_the_stored_secret(
    block_names: BlockNames,
) -> None:
    register_blocks(_spec(), block_names)
    # Later, from a shell whose environment (or .env) happens to hold an IMAP_PASSWORD:
    again = replace(MAILBOX, password_secret_name=None, password=SecretStr("stale-env-password"))

    changes = register_blocks(_spec(mailbox=again), block_names)

    assert {c.action for c in changes} == {"unchanged"}
    mailbox = AvianMailbox.load(block_names.mailbox)
    assert mailbox.password is None
    assert mailbox.password_secret is not None
    assert mailbox.password_secret.secret_name == "avian/imap-password"


def test_an_oauth_mailbox_stores_no_password_from_the_environment(block_names: BlockNames) -> None:
    oauth = MailboxSpec(
        host="outlook.office365.com",
        user="alerts@example.com",
        auth="xoauth2",
        password=SecretStr("an-unrelated-imap-password"),
        oauth_tenant_id="entra-tenant",
        oauth_client_id="app-id",
        oauth_client_secret=SecretStr("client-secret"),
    )

    register_blocks(_spec(mailbox=oauth), block_names)

    mailbox = AvianMailbox.load(block_names.mailbox)
    assert mailbox.password is None
    assert mailbox.oauth_client_secret is not None


def test_a_stored_mailbox_that_no_longer_validates_is_replaced(block_names: BlockNames) -> None:
    register_blocks(_spec(), block_names)
    with get_client(sync_client=True) as client:  # as an edit in the UI could leave it
        document = client.read_block_document_by_name(block_names.mailbox, "avian-mailbox")
        client.update_block_document(
            document.id, BlockDocumentUpdate(data={**document.data, "port": "not a port"})
        )

    changes = register_blocks(_spec(), block_names)

    assert {c.name: c.action for c in changes}[block_names.mailbox] == "updated"
    assert AvianMailbox.load(block_names.mailbox).port == 993


def test_empty_credentials_leave_the_keys_to_the_task_role(block_names: BlockNames) -> None:
    register_blocks(_spec(), block_names)

    credentials = AwsCredentials.load(block_names.aws_credentials)

    assert credentials.aws_access_key_id is None
    assert credentials.aws_secret_access_key is None
    assert credentials.region_name == "ca-central-1"


def test_an_invalid_mailbox_stops_before_anything_is_written(block_names: BlockNames) -> None:
    suffix = block_names.aws_credentials.rsplit("-", 1)[1]

    with pytest.raises(ValidationError, match="exactly one of password and password_secret"):
        register_blocks(_spec(mailbox=replace(MAILBOX, password_secret_name=None)), block_names)

    assert _documents(suffix) == {}


def test_the_command_needs_a_prefect_api(capsys: pytest.CaptureFixture[str]) -> None:
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        exit_code = main(["register"])

    assert exit_code == 1
    assert "PREFECT_API_URL: not set" in capsys.readouterr().err


@pytest.mark.usefixtures("prefect_server")
def test_the_command_reports_an_invalid_mailbox_without_values(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IMAP_HOST", "imap.example.com")
    monkeypatch.setenv("IMAP_USER", "alerts@example.com")
    monkeypatch.setenv("IMAP_AUTH", "xoauth2")
    monkeypatch.setenv("IMAP_OAUTH_CLIENT_SECRET", "oauth-secret-value")

    exit_code = main(["register"])

    error = capsys.readouterr().err
    assert exit_code == 1
    assert "oauth_tenant_id and oauth_client_id" in error
    assert "oauth-secret-value" not in error
    with get_client(sync_client=True) as client:
        names = {d.name for d in client.read_block_documents()}
    assert DEFAULT_BLOCK_NAMES.aws_credentials not in names


def test_the_register_command_plugs_into_another_command_line() -> None:
    parser = argparse.ArgumentParser(prog="avian-workers")
    add_parser(parser.add_subparsers(dest="command", required=True))

    args = parser.parse_args(["blocks", "register", "--database-url-secret", "avian/db"])

    assert (args.command, args.blocks_command, args.database_url_secret) == (
        "blocks",
        "register",
        "avian/db",
    )
