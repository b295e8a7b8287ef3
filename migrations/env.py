"""Alembic environment: DATABASE_URL from Settings, version table in the workers' own schema."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, text

from avian_workers.db.engine import make_engine
from avian_workers.db.models import WORKERS_SCHEMA, Base
from avian_workers.settings import load_settings

VERSION_TABLE = "alembic_version"


def _run(connection: Connection) -> None:
    connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{WORKERS_SCHEMA}"'))
    # One migration at a time, even when two tasks start together on a fresh database.
    connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('avian_workers.migrations'))"))
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        version_table_schema=WORKERS_SCHEMA,
        include_schemas=True,
        compare_type=True,
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(load_settings(), pool_size=1)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline SQL generation is not supported; run `avian-workers db upgrade`")
run_migrations_online()
