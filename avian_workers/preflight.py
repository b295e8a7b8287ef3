"""Before any work: PostgreSQL and Redis must answer, or the run stops naming the one that did not."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable

import psycopg
import redis

from avian_workers.logs import redact_text
from avian_workers.settings import Settings


class ServiceUnavailableError(Exception):
    """A required service did not answer in time; the message names it (never its password)."""


def _check_postgres(settings: Settings, timeout: float) -> None:
    url = settings.sqlalchemy_url.set(drivername="postgresql")
    dsn = url.render_as_string(hide_password=False)
    with psycopg.connect(dsn, connect_timeout=max(1, int(timeout))) as conn:
        conn.execute("SELECT 1")


def _check_redis(settings: Settings, timeout: float) -> None:
    assert settings.redis_url is not None
    client = redis.Redis.from_url(
        settings.redis_url.get_secret_value(),
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
    )
    try:
        client.ping()
    finally:
        client.close()


def _describe(exc: BaseException) -> str:
    return redact_text(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)


def check_services(settings: Settings) -> None:
    """Raise ServiceUnavailableError unless PostgreSQL and Redis both answer within the preflight timeout."""
    timeout = settings.preflight_timeout_seconds
    checks: dict[str, Callable[[Settings, float], None]] = {
        "PostgreSQL (DATABASE_URL)": _check_postgres,
        "Redis (REDIS_URL)": _check_redis,
    }
    failures: list[str] = []
    # Both checks run at once so the total wait is one timeout, not two.
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(checks))
    try:
        futures = {name: pool.submit(check, settings, timeout) for name, check in checks.items()}
        for name, future in futures.items():
            try:
                future.result(timeout=timeout + 1)
            except concurrent.futures.TimeoutError:
                failures.append(f"{name} did not answer within {timeout:g}s")
            except Exception as exc:
                failures.append(f"{name} is unreachable: {_describe(exc)}")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    if failures:
        raise ServiceUnavailableError("; ".join(failures))
