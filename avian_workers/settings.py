"""The one settings object: every host, port, timeout and knob comes from the environment here.

Variable names are the platform contract's (`WORKER_TYPE`, `DATABASE_URL`, `IMAP_HOST`, ...);
everything else is the field name in upper case. Invalid values never reach a worker: `load_settings`
turns a validation failure into `ConfigError`, whose message names each variable and what is wrong
without echoing the value (a URL may carry a password).
"""

from __future__ import annotations

import re
from enum import StrEnum
from functools import cached_property
from string import Formatter
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import URL, make_url

from avian_workers.logs import register_secret


class WorkerType(StrEnum):
    """The three workers, named as in the old ECS task definitions."""

    EDR_POLLING = "edr-polling"
    METRICS_AGGREGATION = "metrics-aggregation"
    EMAIL_ALERTS = "email-alerts"


WORKER_TYPES: tuple[str, ...] = tuple(w.value for w in WorkerType)

ImapTlsMode = Literal["implicit", "starttls", "plain"]
ImapAuth = Literal["password", "xoauth2"]


def check_secret_name_template(template: str) -> str:
    """`template` when its one placeholder is a plain `{tenant_id}`, else ValueError.

    A template that names no tenant (`{{tenant_id}}` is a literal) would give every tenant one
    secret, so one tenant's Microsoft data would be written under all of them.
    """
    try:
        fields = [
            (name, spec, conversion)
            for _, name, spec, conversion in Formatter().parse(template)
            if name is not None
        ]
    except ValueError as exc:
        raise ValueError(f"is not a valid template ({exc})") from None
    if fields != [("tenant_id", "", None)]:
        raise ValueError("must contain the placeholder {tenant_id} once, and no other placeholder")
    return template


_AWS_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d+")


class ConfigError(Exception):
    """Configuration is missing or invalid; the message names every offending variable."""


class Settings(BaseSettings):
    """Configuration of all workers, read from the environment (and an optional `.env`)."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        case_sensitive=False,
        extra="ignore",
        populate_by_name=True,
        env_ignore_empty=True,  # AWS_REGION= is unset (the default applies), not a region ""
    )

    # Process
    worker_type: WorkerType | None = None
    node_env: Literal["production", "staging", "development", "test"] = Field(
        default="production", validation_alias=AliasChoices("NODE_ENV", "AVIAN_ENV")
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # A long step's Prefect progress artifact is updated at most this often; without a terminal
    # bar it also logs a progress line at most every progress_log_seconds (0: never).
    progress_artifact_seconds: float = Field(default=5.0, ge=0, le=3600)
    progress_log_seconds: float = Field(default=60.0, ge=0, le=24 * 3600)
    # How long a finishing step waits for its last artifact update before the run goes on.
    progress_finish_seconds: float = Field(default=10.0, gt=0, le=300)

    # Platform stores
    database_url: SecretStr | None = None
    db_pool_size: int = Field(default=10, ge=1, le=100)
    db_connect_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    db_statement_timeout_seconds: float = Field(default=300.0, gt=0)
    redis_url: SecretStr | None = None
    redis_key_prefix: str = ""
    redis_socket_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    preflight_timeout_seconds: float = Field(default=10.0, gt=0, le=15)
    lock_lease_seconds: int = Field(default=900, ge=5, le=24 * 3600)

    # AWS (boto3 also honours AWS_ENDPOINT_URL on its own; it is read here so tests and the demo
    # can point every client at one endpoint explicitly)
    aws_region: str = "ca-central-1"
    aws_endpoint_url: str | None = None
    tenant_secret_name_template: str = "edr/tenant/{tenant_id}"  # noqa: S105 - a name

    # TLS trust for outbound HTTPS (Microsoft APIs, IMAP): the standard variables, first one wins
    ca_bundle: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AVIAN_CA_BUNDLE", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"),
    )

    # Microsoft identity, Graph and Defender endpoints
    ms_authority_host: str = "https://login.microsoftonline.com"
    ms_graph_base_url: str = "https://graph.microsoft.com"
    ms_defender_base_url: str = "https://api.securitycenter.microsoft.com"
    ms_graph_scope: str = "https://graph.microsoft.com/.default"
    ms_defender_scope: str = "https://api.securitycenter.microsoft.com/.default"
    http_connect_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    http_read_timeout_seconds: float = Field(default=60.0, gt=0, le=600)
    http_max_attempts: int = Field(default=6, ge=1, le=20)
    http_backoff_base_seconds: float = Field(default=1.0, gt=0)
    http_backoff_max_seconds: float = Field(default=60.0, gt=0)
    tenant_retry_budget_seconds: float = Field(default=300.0, gt=0)
    defender_calls_per_minute: int = Field(default=100, ge=1, le=10_000)

    # EDR polling
    edr_tenant_concurrency: int = Field(default=8, ge=1, le=64)
    edr_alert_backfill_days: int = Field(default=7, ge=1, le=365)
    edr_alert_overlap_minutes: int = Field(default=10, ge=0, le=24 * 60)
    edr_vulnerability_refresh_hours: float = Field(default=6.0, gt=0)
    edr_secure_score_refresh_hours: float = Field(default=24.0, gt=0)
    # 2,500: a page of 10,000 machines is ~35 MB of parsed JSON per tenant in flight (x8 tenants);
    # 2,500 keeps a 20,000-device poll at ~33 Defender calls, well inside 100 calls/minute.
    edr_defender_page_size: int = Field(default=2_500, ge=1, le=10_000)
    edr_result_storage_block: str | None = None

    # Email alerts (IMAP_* names are the contract's)
    imap_host: str | None = None
    imap_port: int = Field(default=993, ge=1, le=65535)
    imap_user: str | None = None
    imap_password: SecretStr | None = None
    imap_tls: Annotated[ImapTlsMode, NoDecode] = "implicit"
    imap_auth: ImapAuth = "password"
    imap_oauth_tenant_id: str | None = None
    imap_oauth_client_id: str | None = None
    imap_oauth_client_secret: SecretStr | None = None
    imap_oauth_scope: str = "https://outlook.office365.com/.default"
    imap_connect_timeout_seconds: float = Field(default=15.0, gt=0, le=120)
    imap_read_timeout_seconds: float = Field(default=60.0, gt=0, le=600)
    imap_inbox_folder: str = "INBOX"
    imap_processed_folder: str = "Processed"
    imap_review_folder: str = "Review"
    imap_fetch_batch_size: int = Field(default=200, ge=1, le=5_000)
    alert_storm_window_minutes: int = Field(default=15, ge=0, le=24 * 60)
    # Filed ledger rows older than this are deleted. The ledger is what keeps a message from
    # becoming a second alert, so this must exceed the longest time after filing that the same
    # message can come back unread (a redelivered copy); unfiled rows are never deleted.
    email_ledger_retention_days: int = Field(default=365, ge=1)
    # Review records (with the raw mail) older than this are deleted, resolved or not; the mail
    # stays filed (in the review folder, or in the processed folder when other events of it
    # became alerts), and a review record never outlives its ledger row.
    email_review_retention_days: int = Field(default=90, ge=1)
    email_retention_batch_size: int = Field(default=5_000, ge=1)

    # Metrics aggregation
    metrics_late_days: int = Field(default=2, ge=0, le=30)
    metrics_retention_days: int = Field(default=365, ge=1)
    metrics_retention_batch_size: int = Field(default=5_000, ge=1)

    @field_validator("imap_tls", mode="before")
    @classmethod
    def _imap_tls_accepts_booleans(cls, value: object) -> object:
        """`IMAP_TLS=true|false` (the contract) maps to implicit TLS or plain text."""
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in {"true", "1", "yes", "on"}:
                return "implicit"
            if lowered in {"false", "0", "no", "off"}:
                return "plain"
            return lowered
        if isinstance(value, bool):
            return "implicit" if value else "plain"
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url_is_postgres(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        try:
            url = make_url(value.get_secret_value())
        except Exception as exc:  # sqlalchemy raises ArgumentError with the value in it
            raise ValueError(
                "is not a valid URL (expected postgresql://user:pass@host:5432/db)"
            ) from exc
        if url.get_backend_name() not in {"postgresql", "postgres"}:
            raise ValueError("must be a postgresql:// URL")
        if not url.database:
            raise ValueError("must name a database (postgresql://user:pass@host:5432/db)")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("aws_region")
    @classmethod
    def _region_name(cls, value: str) -> str:
        region = value.strip()
        if not _AWS_REGION.fullmatch(region):
            raise ValueError("must be an AWS region name such as ca-central-1")
        return region

    @field_validator("tenant_secret_name_template")
    @classmethod
    def _template_names_tenant(cls, value: str) -> str:
        return check_secret_name_template(value)

    @cached_property
    def sqlalchemy_url(self) -> URL:
        """DATABASE_URL with the psycopg 3 driver selected."""
        if self.database_url is None:
            raise ConfigError("DATABASE_URL: not set")
        url = make_url(self.database_url.get_secret_value())
        return url.set(drivername="postgresql+psycopg")

    def require(self, *variables: str) -> None:
        """Raise ConfigError naming every listed variable that is unset."""
        missing = [name for name in variables if not _is_set(getattr(self, name.lower()))]
        if missing:
            raise ConfigError("; ".join(f"{name}: not set" for name in missing))

    def require_for(self, worker: WorkerType) -> None:
        """Raise ConfigError unless everything `worker` needs is configured."""
        needed = ["DATABASE_URL", "REDIS_URL"]
        if worker is WorkerType.EMAIL_ALERTS:
            needed += ["IMAP_HOST", "IMAP_USER"]
            needed += (
                ["IMAP_PASSWORD"]
                if self.imap_auth == "password"
                else [
                    "IMAP_OAUTH_TENANT_ID",
                    "IMAP_OAUTH_CLIENT_ID",
                    "IMAP_OAUTH_CLIENT_SECRET",
                ]
            )
        self.require(*needed)


def _is_set(value: object) -> bool:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return value is not None and value != ""


def _describe(error: ValidationError) -> str:
    """Name each variable and the problem, never the offending value."""
    problems = []
    for item in error.errors(include_input=False, include_url=False):
        field = str(item["loc"][0]) if item["loc"] else "?"
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{field.upper()}: {message}")
    return "; ".join(problems)


def load_settings() -> Settings:
    """Read settings from the environment or raise ConfigError."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def register_configured_secrets(settings: Settings) -> None:
    """Mask every configured password and URL credential in all later log lines."""
    for secret in (
        settings.database_url,
        settings.redis_url,
        settings.imap_password,
        settings.imap_oauth_client_secret,
    ):
        if secret is None:
            continue
        value = secret.get_secret_value()
        register_secret(value)
        if "://" in value:  # the password inside a URL is a secret of its own, as written and
            password = _url_password(value)  # decoded (a driver's message may show either)
            register_secret(password)
            register_secret(unquote(password) if password else None)


def _url_password(url: str) -> str | None:
    try:
        return urlsplit(url).password  # the user info ends at the last "@", as in libpq
    except ValueError:  # e.g. an unclosed IPv6 bracket: the URL is refused where it is used
        return None
