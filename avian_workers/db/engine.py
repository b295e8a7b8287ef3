"""Engines and sessions for the platform database, configured from Settings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from avian_workers.settings import Settings


def make_engine(settings: Settings, *, pool_size: int | None = None) -> Engine:
    """An engine for DATABASE_URL with bounded connect and statement timeouts."""
    statement_ms = int(settings.db_statement_timeout_seconds * 1000)
    return create_engine(
        settings.sqlalchemy_url,
        pool_size=pool_size or settings.db_pool_size,
        max_overflow=2,
        pool_pre_ping=True,
        connect_args={
            "connect_timeout": max(1, round(settings.db_connect_timeout_seconds)),
            "options": f"-c statement_timeout={statement_ms} -c timezone=UTC",
            "application_name": f"avian-workers:{settings.worker_type or 'cli'}",
        },
    )


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """A session whose work commits on success and rolls back on any error."""
    factory = sessionmaker(engine, expire_on_commit=False)
    with factory.begin() as session:
        yield session


def psycopg_connection(conn: Connection) -> psycopg.Connection[tuple[Any, ...]]:
    """The psycopg connection under `conn`, for what SQLAlchemy cannot ask for (binary results,
    COPY); its statements run in `conn`'s transaction."""
    driver = conn.connection.driver_connection
    if not isinstance(driver, psycopg.Connection):
        raise TypeError("needs the psycopg driver (postgresql+psycopg://)")
    return driver
