"""Block type: the IMAP inbox the email-alerts worker reads."""

from __future__ import annotations

from typing import Any, ClassVar

from prefect.blocks.core import Block
from prefect_aws.secrets_manager import AwsSecret
from pydantic import Field, SecretStr, model_validator

from avian_workers.logs import register_secret
from avian_workers.settings import ImapAuth, ImapTlsMode
from blocks._aws import read_secret_text


class AvianMailbox(Block):
    """Host, port, TLS mode, user, folders, and the password or OAuth client secret.

    Each secret is either an `AwsSecret` reference (preferred: the value stays in Secrets
    Manager) or a `SecretStr` stored encrypted in the block; exactly one of the two is set.
    """

    _block_type_name: ClassVar[str] = "AVIAN Mailbox"
    _block_type_slug: ClassVar[str] = "avian-mailbox"
    _description: ClassVar[str] = (
        "The alert inbox of the AVIAN email-alerts worker (IMAP). Replaces the IMAP_* "
        "environment variables when this block exists."
    )

    host: str = Field(description="IMAP server host name.")
    port: int = Field(default=993, ge=1, le=65535)
    tls: ImapTlsMode = Field(
        default="implicit", description="implicit (IMAPS, 993), starttls, or plain (tests only)."
    )
    user: str = Field(description="Login name of the alert inbox.")
    auth: ImapAuth = Field(
        default="password", description="password (LOGIN) or xoauth2 (Microsoft 365 app-only)."
    )
    password: SecretStr | None = Field(default=None, description="Password, kept in the block.")
    password_secret: AwsSecret | None = Field(
        default=None, description="Password, kept in AWS Secrets Manager."
    )
    oauth_tenant_id: str | None = Field(default=None, description="Entra ID tenant (xoauth2).")
    oauth_client_id: str | None = Field(default=None, description="App registration (xoauth2).")
    oauth_client_secret: SecretStr | None = Field(
        default=None, description="Client secret, kept in the block (xoauth2)."
    )
    oauth_client_secret_secret: AwsSecret | None = Field(
        default=None, description="Client secret, kept in AWS Secrets Manager (xoauth2)."
    )
    oauth_scope: str = "https://outlook.office365.com/.default"
    inbox_folder: str = "INBOX"
    processed_folder: str = "Processed"
    review_folder: str = "Review"

    @model_validator(mode="after")
    def _credentials_match_auth(self) -> AvianMailbox:
        if self.auth == "password":
            _exactly_one("password", self.password, "password_secret", self.password_secret)
        else:
            missing = [
                name for name in ("oauth_tenant_id", "oauth_client_id") if not getattr(self, name)
            ]
            if missing:
                raise ValueError(f"auth=xoauth2 needs {' and '.join(missing)}")
            _exactly_one(
                "oauth_client_secret",
                self.oauth_client_secret,
                "oauth_client_secret_secret",
                self.oauth_client_secret_secret,
            )
        return self

    def imap_settings(self, default_region: str | None = None) -> dict[str, Any]:
        """The `Settings` fields this block replaces, secrets read (and masked in logs).

        A referenced secret whose credentials name no region is read in `default_region`.
        """
        values: dict[str, Any] = {
            "imap_host": self.host,
            "imap_port": self.port,
            "imap_tls": self.tls,
            "imap_user": self.user,
            "imap_auth": self.auth,
            "imap_password": _secret_value(self.password, self.password_secret, default_region),
            "imap_oauth_tenant_id": self.oauth_tenant_id,
            "imap_oauth_client_id": self.oauth_client_id,
            "imap_oauth_client_secret": _secret_value(
                self.oauth_client_secret, self.oauth_client_secret_secret, default_region
            ),
            "imap_oauth_scope": self.oauth_scope,
            "imap_inbox_folder": self.inbox_folder,
            "imap_processed_folder": self.processed_folder,
            "imap_review_folder": self.review_folder,
        }
        return values


def _exactly_one(name: str, value: object, other_name: str, other: object) -> None:
    if (value is None) == (other is None):
        raise ValueError(f"set exactly one of {name} and {other_name}")


def _secret_value(
    stored: SecretStr | None, reference: AwsSecret | None, default_region: str | None
) -> SecretStr | None:
    if reference is not None:
        return SecretStr(read_secret_text(reference, default_region))
    if stored is not None:
        register_secret(stored.get_secret_value())
    return stored
