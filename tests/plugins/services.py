"""Real services for the tests: a fresh PostgreSQL database, an isolated Redis prefix, moto, Prefect.

PostgreSQL and Redis already run on the machine; a missing one fails the tests with a message
saying so (never a silent skip). Everything else is started here and stopped at session end.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import redis
from sqlalchemy import Engine, text

from avian_workers.db.engine import make_engine
from avian_workers.db.migrate import upgrade
from avian_workers.db.models import PLATFORM_TABLES, WORKER_TABLES
from avian_workers.settings import Settings, load_settings

ADMIN_DSN = os.environ.get(
    "AVIAN_TEST_POSTGRES_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_BASE_URL = os.environ.get("AVIAN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def session_env() -> Iterator[pytest.MonkeyPatch]:
    """Environment shared by the whole run; tests layer their own changes with monkeypatch."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NODE_ENV", "test")
        mp.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        mp.setenv("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_REGION", "ca-central-1")
        mp.setenv("AWS_DEFAULT_REGION", "ca-central-1")
        for name in ("WORKER_TYPE", "DATABASE_URL", "REDIS_URL", "AWS_ENDPOINT_URL", "IMAP_HOST"):
            mp.delenv(name, raising=False)
        yield mp


@pytest.fixture(scope="session")
def postgres_url(session_env: pytest.MonkeyPatch) -> Iterator[str]:
    """A database of our own for this test session, migrated to head, dropped afterwards."""
    name = f"avian_test_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        admin = psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {ADMIN_DSN}: {exc}", pytrace=False)
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    session_env.setenv("DATABASE_URL", url)
    upgrade(load_settings())
    yield url
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_prefix(session_env: pytest.MonkeyPatch) -> Iterator[str]:
    """REDIS_URL and a key prefix of our own; our keys are deleted afterwards."""
    client = redis.Redis.from_url(REDIS_BASE_URL, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_BASE_URL}: {exc}", pytrace=False)
    prefix = f"avian-test:{os.getpid()}:{secrets.token_hex(4)}:"
    session_env.setenv("REDIS_URL", REDIS_BASE_URL)
    session_env.setenv("REDIS_KEY_PREFIX", prefix)
    yield prefix
    _delete_prefixed(client, prefix)
    client.close()


def _delete_prefixed(client: redis.Redis, prefix: str) -> None:
    batch = list(client.scan_iter(match=f"{prefix}*", count=1000))
    for start in range(0, len(batch), 1000):
        client.delete(*batch[start : start + 1000])


@pytest.fixture
def redis_client(redis_prefix: str) -> Iterator[redis.Redis]:
    """A client on the test Redis; every key under this run's prefix is removed after the test."""
    client = redis.Redis.from_url(REDIS_BASE_URL)
    yield client
    _delete_prefixed(client, redis_prefix)
    client.close()


@pytest.fixture
def settings(postgres_url: str, redis_prefix: str) -> Settings:
    """Settings as a worker would read them in this test's environment."""
    return load_settings()


@pytest.fixture(scope="session")
def engine(postgres_url: str) -> Iterator[Engine]:
    engine = make_engine(load_settings(), pool_size=4)
    yield engine
    engine.dispose()


@pytest.fixture
def db(engine: Engine) -> Iterator[Engine]:
    """The test database, emptied after the test."""
    yield engine
    tables = ", ".join([f'"{t}"' for t in PLATFORM_TABLES] + list(WORKER_TABLES))
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture(scope="session")
def moto_server(session_env: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's server (Secrets Manager, ECS, ...) on loopback; AWS_ENDPOINT_URL points at it."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    session_env.setenv("AWS_ENDPOINT_URL", url)
    yield url
    server.stop()


@pytest.fixture
def moto_reset(moto_server: str) -> Iterator[str]:
    """moto with no state left over from earlier tests."""
    import urllib.request

    yield moto_server
    reset = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")
    urllib.request.urlopen(reset, timeout=10).close()


@pytest.fixture(scope="session")
def prefect_server(session_env: pytest.MonkeyPatch) -> Iterator[Any]:
    """A Prefect test server for flow runs (one per session: it takes seconds to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield None
