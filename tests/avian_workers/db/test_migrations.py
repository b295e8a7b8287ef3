import os
import secrets
import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect, text

from avian_workers.db.check import find_schema_problems
from avian_workers.db.migrate import upgrade
from avian_workers.db.models import PLATFORM_TABLES, WORKERS_SCHEMA, Base
from avian_workers.mail.triage import NO_MESSAGE_ID_KEY
from avian_workers.settings import load_settings
from tests.plugins.services import ADMIN_DSN

CONTRACT_UNIQUE_KEYS = {
    ("tenants", ("domain",)),
    ("firewall_devices", ("serial_number",)),
    ("edr_devices", ("tenant_id", "microsoft_device_id")),
    ("edr_alerts", ("tenant_id", "microsoft_alert_id")),
    ("edr_vulnerabilities", ("tenant_id", "cve_id")),
    ("edr_compliance", ("tenant_id", "device_id")),
    ("firewall_metrics_rollup", ("device_id", "date")),
}


@pytest.fixture
def scratch_db() -> Iterator[str]:
    """An empty database for tests that migrate from nothing."""
    name = f"avian_scratch_{secrets.token_hex(4)}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "avian_workers.cli", "db", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _sqlalchemy(url: str) -> Engine:
    return create_engine(url.replace("postgresql://", "postgresql+psycopg://"))


def test_upgrade_on_empty_database_creates_every_contract_table(engine: Engine) -> None:
    names = set(inspect(engine).get_table_names())
    assert set(PLATFORM_TABLES) <= names


@pytest.mark.parametrize(("table", "columns"), sorted(CONTRACT_UNIQUE_KEYS))
def test_contract_unique_key_exists(engine: Engine, table: str, columns: tuple[str, ...]) -> None:
    uniques = {tuple(u["column_names"]) for u in inspect(engine).get_unique_constraints(table)}
    assert columns in uniques


def test_device_vulnerability_primary_key_is_the_pair(engine: Engine) -> None:
    pk = inspect(engine).get_pk_constraint("edr_device_vulnerabilities")
    assert pk["constrained_columns"] == ["device_id", "vulnerability_id"]


@pytest.mark.parametrize(
    ("table", "bad_values"),
    [
        ("edr_devices", "risk_score = 101"),
        ("edr_devices", "risk_score = -1"),
        ("edr_posture_scores", "score = 101"),
        ("firewall_metrics_rollup", "threats_blocked = -1"),
        ("firewall_metrics_rollup", "bandwidth_total_mb = -1"),
        ("firewall_alerts", "severity = 'warning'"),
        ("firewall_alerts", "source = 'sms'"),
        ("firewall_alerts", "acknowledged_at = now()"),
    ],
)
def test_contract_check_constraint_rejects(
    engine: Engine, db: Engine, table: str, bad_values: str
) -> None:
    with engine.begin() as conn:
        tenant = conn.execute(
            text("INSERT INTO tenants (name, domain) VALUES ('t', 'check.example') RETURNING id")
        ).scalar_one()
        device = conn.execute(
            text(
                "INSERT INTO firewall_devices (tenant_id, management_ip) VALUES (:t, '10.0.0.1') RETURNING id"
            ),
            {"t": tenant},
        ).scalar_one()
        edr_device = conn.execute(
            text(
                "INSERT INTO edr_devices (tenant_id, microsoft_device_id, device_name) "
                "VALUES (:t, 'm1', 'pc') RETURNING id"
            ),
            {"t": tenant},
        ).scalar_one()
        conn.execute(
            text("INSERT INTO edr_posture_scores (tenant_id, score) VALUES (:t, 50)"), {"t": tenant}
        )
        conn.execute(
            text("INSERT INTO firewall_metrics_rollup (device_id, date) VALUES (:d, '2026-11-01')"),
            {"d": device},
        )
        conn.execute(
            text(
                "INSERT INTO firewall_alerts (tenant_id, alert_type, severity, message, source) "
                "VALUES (:t, 'ips_alert', 'high', 'm', 'email')"
            ),
            {"t": tenant},
        )
    assert edr_device
    with pytest.raises(Exception, match="violates check constraint"), engine.begin() as conn:
        conn.execute(text(f"UPDATE {table} SET {bad_values}"))  # noqa: S608 - fixed test table


def _ours(name: str | None, type_: str, parent_names: object) -> bool:
    if type_ == "schema":
        return name in (None, "public", WORKERS_SCHEMA)
    return not (type_ == "table" and name == "alembic_version")


def test_models_and_migrations_describe_the_same_schema(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={"include_schemas": True, "compare_type": True, "include_name": _ours},
        )
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_upgrade_twice_changes_nothing_and_check_is_clean(scratch_db: str) -> None:
    first = _cli(scratch_db, "upgrade")
    assert first.returncode == 0, first.stderr
    eng = _sqlalchemy(scratch_db)
    with eng.connect() as conn:
        before = conn.execute(
            text(
                "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema IN ('public', 'avian_workers') ORDER BY 1, 2, 3"
            )
        ).all()
    second = _cli(scratch_db, "upgrade")
    assert second.returncode == 0, second.stderr
    with eng.connect() as conn:
        after = conn.execute(
            text(
                "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema IN ('public', 'avian_workers') ORDER BY 1, 2, 3"
            )
        ).all()
    eng.dispose()
    assert before == after
    check = _cli(scratch_db, "check")
    assert check.returncode == 0, check.stdout + check.stderr


def test_check_names_a_missing_contract_column_and_fails(scratch_db: str) -> None:
    assert _cli(scratch_db, "upgrade").returncode == 0
    eng = _sqlalchemy(scratch_db)
    with eng.begin() as conn:
        conn.execute(text("ALTER TABLE edr_alerts DROP COLUMN threat_name"))
        conn.execute(text("ALTER TABLE firewall_devices ALTER COLUMN management_ip TYPE text"))
    problems = [str(p) for p in find_schema_problems(eng)]
    eng.dispose()
    assert "edr_alerts.threat_name: column is missing" in problems
    assert any(p.startswith("firewall_devices.management_ip: type is TEXT") for p in problems)
    result = _cli(scratch_db, "check")
    assert result.returncode == 1
    assert "edr_alerts.threat_name: column is missing" in result.stdout


def test_existing_platform_database_keeps_its_tables_untouched(scratch_db: str) -> None:
    eng = _sqlalchemy(scratch_db)
    with eng.begin() as conn:
        # The platform's own tenants table, with a column the workers do not know about.
        conn.execute(
            text(
                "CREATE TABLE tenants (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), "
                "name varchar(255) NOT NULL, domain varchar(255) NOT NULL UNIQUE, settings jsonb NOT NULL "
                "DEFAULT '{}', is_active boolean NOT NULL DEFAULT true, billing_plan text, "
                "logo_url text, theme_color varchar(7), created_at timestamptz, updated_at timestamptz)"
            )
        )
        conn.execute(text("INSERT INTO tenants (name, domain) VALUES ('Acme', 'acme.example')"))
    assert _cli(scratch_db, "upgrade").returncode == 0
    columns = {c["name"] for c in inspect(eng).get_columns("tenants")}
    with eng.connect() as conn:
        rows = conn.execute(text("SELECT name FROM tenants")).scalars().all()
    assert "billing_plan" in columns
    assert rows == ["Acme"]
    assert inspect(eng).has_table("mail_ledger", schema=WORKERS_SCHEMA)
    eng.dispose()


def test_check_names_a_role_that_may_not_create_temporary_tables(scratch_db: str) -> None:
    assert _cli(scratch_db, "upgrade").returncode == 0
    role = f"avian_no_temp_{secrets.token_hex(4)}"
    database = scratch_db.rsplit("/", 1)[1]
    with psycopg.connect(scratch_db, autocommit=True) as admin:
        admin.execute(f'REVOKE TEMPORARY ON DATABASE "{database}" FROM PUBLIC')
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        as_role = _sqlalchemy(scratch_db.replace("://postgres@", f"://{role}@"))
        problems = [str(p) for p in find_schema_problems(as_role)]
        as_role.dispose()
        result = _cli(scratch_db.replace("://postgres@", f"://{role}@"), "check")
    finally:
        with psycopg.connect(scratch_db, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,)
            )
            admin.execute(f'DROP ROLE "{role}"')
    assert problems == [
        f"database {database}: the workers' role may not create temporary tables"
        " (GRANT TEMPORARY ON DATABASE): metrics-aggregation stages each day's rollup rows in one"
    ]
    assert result.returncode == 1
    assert "may not create temporary tables" in result.stdout


def test_ledger_rows_keyed_by_uid_are_renamed_to_the_key_of_their_bytes(
    scratch_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", scratch_db)
    upgrade(load_settings(), "0008")
    rows = [  # (message_key, raw_sha256, uidvalidity, uid, filed days ago)
        ("uid:7:1", "a" * 64, 7, 1, 3),  # handled before the upgrade
        # One message recorded twice under two UIDVALIDITYs: only one row can take the new key,
        # the one retention deletes last (filed last), though it is not the older row.
        ("uid:8:2", "b" * 64, 8, 2, 1),
        ("uid:7:5", "b" * 64, 7, 5, 30),
        ("<m1@example.com>", "c" * 64, 7, 3, 3),  # a Message-ID stays as it is
        ("uid:1:1", "d" * 64, 7, 4, 3),  # not its own position: not an old UID key
    ]
    eng = _sqlalchemy(scratch_db)
    with eng.begin() as conn:
        for key, sha, uidvalidity, uid, days in reversed(rows):
            conn.execute(
                text(
                    "INSERT INTO avian_workers.mail_ledger"
                    " (message_key, raw_sha256, mailbox, uidvalidity, uid, outcome, marked_at)"
                    " VALUES (:key, :sha, 'INBOX', :uidvalidity, :uid, 'alert',"
                    " now() - make_interval(days => :days))"
                ),
                {"key": key, "sha": sha, "uidvalidity": uidvalidity, "uid": uid, "days": days},
            )

    upgrade(load_settings())

    with eng.connect() as conn:
        keys = conn.execute(
            text("SELECT message_key, uid FROM avian_workers.mail_ledger ORDER BY uid")
        ).all()
    eng.dispose()
    assert [tuple(row) for row in keys] == [
        (NO_MESSAGE_ID_KEY, 1),
        (NO_MESSAGE_ID_KEY, 2),
        ("<m1@example.com>", 3),
        ("uid:1:1", 4),
        ("uid:7:5", 5),
    ]
