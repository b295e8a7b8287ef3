import pytest
from pydantic import SecretStr

from avian_workers.logs import MASK, redact_text
from avian_workers.settings import (
    ConfigError,
    WorkerType,
    load_settings,
    register_configured_secrets,
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "IMAP_TLS", "NODE_ENV", "AVIAN_ENV", "WORKER_TYPE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir("/")  # no stray .env file


def test_contract_variable_names_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_TYPE", "email-alerts")
    monkeypatch.setenv("NODE_ENV", "staging")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db.internal:5432/avian")
    monkeypatch.setenv("REDIS_URL", "rediss://cache.internal:6379")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("IMAP_HOST", "imap.example.com")
    monkeypatch.setenv("IMAP_PORT", "1993")
    settings = load_settings()
    assert settings.worker_type is WorkerType.EMAIL_ALERTS
    assert settings.node_env == "staging"
    assert settings.sqlalchemy_url.drivername == "postgresql+psycopg"
    assert settings.sqlalchemy_url.host == "db.internal"
    assert settings.aws_region == "us-east-1"
    assert (settings.imap_host, settings.imap_port) == ("imap.example.com", 1993)


def test_region_defaults_to_ca_central_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    assert load_settings().aws_region == "ca-central-1"


def test_python_native_alias_for_node_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVIAN_ENV", "development")
    assert load_settings().node_env == "development"


@pytest.mark.parametrize(
    ("raw", "mode"),
    [("true", "implicit"), ("false", "plain"), ("starttls", "starttls"), ("TRUE", "implicit")],
)
def test_imap_tls_accepts_contract_booleans_and_starttls(
    monkeypatch: pytest.MonkeyPatch, raw: str, mode: str
) -> None:
    monkeypatch.setenv("IMAP_TLS", raw)
    assert load_settings().imap_tls == mode


def test_invalid_database_url_names_variable_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://root:hunter2secret@db/x")
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert "DATABASE_URL" in str(error.value)
    assert "hunter2secret" not in str(error.value)


def test_several_invalid_values_are_all_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAP_PORT", "not-a-port")
    monkeypatch.setenv("EDR_TENANT_CONCURRENCY", "0")
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert "IMAP_PORT" in str(error.value)
    assert "EDR_TENANT_CONCURRENCY" in str(error.value)


def test_email_worker_requires_mailbox_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("REDIS_URL", "redis://h:6379")
    settings = load_settings()
    with pytest.raises(ConfigError, match="IMAP_HOST: not set"):
        settings.require_for(WorkerType.EMAIL_ALERTS)
    settings.require_for(WorkerType.METRICS_AGGREGATION)


def test_secret_name_template_must_name_the_tenant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENANT_SECRET_NAME_TEMPLATE", "edr/tenant/static")
    with pytest.raises(ConfigError, match="TENANT_SECRET_NAME_TEMPLATE"):
        load_settings()


@pytest.mark.parametrize(
    "template",
    [
        "edr/tenant/{{tenant_id}}",  # a literal: every tenant would read one secret
        "edr/{env}/tenant/{tenant_id}",
        "edr/tenant/{0}",
        "edr/tenant/{tenant_id!r}",
        "edr/{tenant_id}/{tenant_id}",
        "edr/tenant/{tenant_id",
    ],
)
def test_secret_name_template_must_have_exactly_one_plain_tenant_placeholder(
    monkeypatch: pytest.MonkeyPatch, template: str
) -> None:
    monkeypatch.setenv("TENANT_SECRET_NAME_TEMPLATE", template)
    with pytest.raises(ConfigError, match="TENANT_SECRET_NAME_TEMPLATE"):
        load_settings()


def test_an_empty_variable_is_unset_so_its_default_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "")
    assert load_settings().aws_region == "ca-central-1"


def test_region_is_trimmed_and_must_look_like_a_region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", " us-west-2 ")
    assert load_settings().aws_region == "us-west-2"
    monkeypatch.setenv("AWS_REGION", "us west 2")
    with pytest.raises(ConfigError, match="AWS_REGION: must be an AWS region name"):
        load_settings()


def test_an_empty_password_is_not_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("REDIS_URL", "redis://h:6379")
    monkeypatch.setenv("IMAP_HOST", "imap.example.com")
    monkeypatch.setenv("IMAP_USER", "alerts@example.com")
    settings = load_settings().model_copy(update={"imap_password": SecretStr("")})
    with pytest.raises(ConfigError, match="IMAP_PASSWORD: not set"):
        settings.require_for(WorkerType.EMAIL_ALERTS)


def test_a_url_password_containing_at_signs_is_masked_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://avian:s3cr%40t@pw-at@db.internal:5432/avian")
    register_configured_secrets(load_settings())
    assert redact_text("auth failed for s3cr%40t@pw-at") == f"auth failed for {MASK}"
    assert redact_text("auth failed for s3cr@t@pw-at") == f"auth failed for {MASK}"
