"""AvianMailbox: the alert inbox, its password or OAuth client secret in the block or in Secrets Manager."""

from __future__ import annotations

from typing import Any

import pytest
from prefect_aws import AwsCredentials
from prefect_aws.secrets_manager import AwsSecret
from pydantic import SecretStr, ValidationError

from avian_workers.logs import MASK, redact_text
from blocks._aws import BlockSecretError
from blocks.mailbox import AvianMailbox


def _mailbox(**overrides: Any) -> AvianMailbox:
    fields: dict[str, Any] = {"host": "imap.example.com", "user": "alerts@example.com"}
    return AvianMailbox(**(fields | overrides))


def test_password_auth_needs_a_password() -> None:
    with pytest.raises(ValidationError, match="exactly one of password and password_secret"):
        _mailbox()


def test_password_auth_refuses_two_passwords(moto_credentials: AwsCredentials) -> None:
    with pytest.raises(ValidationError, match="exactly one of password and password_secret"):
        _mailbox(
            password=SecretStr("stored"),
            password_secret=AwsSecret(aws_credentials=moto_credentials, secret_name="imap"),
        )


def test_xoauth2_needs_the_app_registration() -> None:
    with pytest.raises(ValidationError, match="oauth_tenant_id and oauth_client_id"):
        _mailbox(auth="xoauth2", oauth_client_secret=SecretStr("client-secret"))


def test_xoauth2_needs_one_client_secret() -> None:
    with pytest.raises(ValidationError, match="exactly one of oauth_client_secret"):
        _mailbox(auth="xoauth2", oauth_tenant_id="tenant", oauth_client_id="client")


def test_imap_settings_carry_every_imap_field() -> None:
    mailbox = _mailbox(
        port=143,
        tls="starttls",
        password=SecretStr("stored-imap-password"),
        inbox_folder="Alerts",
        processed_folder="Alerts/Done",
        review_folder="Alerts/Review",
    )

    imap = mailbox.imap_settings()

    assert {k: v for k, v in imap.items() if k != "imap_password"} == {
        "imap_host": "imap.example.com",
        "imap_port": 143,
        "imap_tls": "starttls",
        "imap_user": "alerts@example.com",
        "imap_auth": "password",
        "imap_oauth_tenant_id": None,
        "imap_oauth_client_id": None,
        "imap_oauth_client_secret": None,
        "imap_oauth_scope": "https://outlook.office365.com/.default",
        "imap_inbox_folder": "Alerts",
        "imap_processed_folder": "Alerts/Done",
        "imap_review_folder": "Alerts/Review",
    }
    assert imap["imap_password"].get_secret_value() == "stored-imap-password"


def test_a_stored_password_is_masked_in_later_log_lines() -> None:
    _mailbox(password=SecretStr("stored-password-to-mask")).imap_settings()

    assert redact_text("login stored-password-to-mask") == f"login {MASK}"


def test_the_password_is_read_from_secrets_manager(
    secretsmanager: Any, moto_credentials: AwsCredentials
) -> None:
    secretsmanager.create_secret(Name="avian/imap-password", SecretString="password-in-aws\n")
    mailbox = _mailbox(
        password_secret=AwsSecret(
            aws_credentials=moto_credentials, secret_name="avian/imap-password"
        )
    )

    imap = mailbox.imap_settings()

    assert imap["imap_password"].get_secret_value() == "password-in-aws"
    assert redact_text("login password-in-aws") == f"login {MASK}"


def test_the_oauth_client_secret_is_read_from_secrets_manager(
    secretsmanager: Any, moto_credentials: AwsCredentials
) -> None:
    secretsmanager.create_secret(Name="avian/imap-oauth", SecretBinary=b"client-secret-in-aws")
    mailbox = _mailbox(
        auth="xoauth2",
        oauth_tenant_id="tenant",
        oauth_client_id="client",
        oauth_client_secret_secret=AwsSecret(
            aws_credentials=moto_credentials, secret_name="avian/imap-oauth"
        ),
    )

    imap = mailbox.imap_settings()

    assert imap["imap_password"] is None
    assert imap["imap_oauth_client_secret"].get_secret_value() == "client-secret-in-aws"


def test_a_missing_password_secret_is_an_error_naming_it(
    moto_credentials: AwsCredentials,
) -> None:
    mailbox = _mailbox(
        password_secret=AwsSecret(aws_credentials=moto_credentials, secret_name="avian/nothing")
    )

    with pytest.raises(BlockSecretError, match="'avian/nothing' does not exist"):
        mailbox.imap_settings()
