import socket
import threading
import time

import pytest
import redis

from avian_workers.locks import hold
from avian_workers.redis_store import RedisKeys
from tests.plugins.services import REDIS_BASE_URL


def test_second_holder_is_refused_while_first_holds(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    key = RedisKeys(redis_prefix).lock("edr-tenant", "t1")
    with hold(redis_client, key, lease_seconds=5) as first:
        assert first is not None
        with hold(redis_client, key, lease_seconds=5) as second:
            assert second is None
    with hold(redis_client, key, lease_seconds=5) as again:
        assert again is not None


def test_concurrent_threads_never_hold_the_same_key(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    key = RedisKeys(redis_prefix).lock("metrics-day", "2026-11-27")
    inside = 0
    max_inside = 0
    acquired = 0
    guard = threading.Lock()
    start = threading.Barrier(16)

    def contend() -> None:
        nonlocal inside, max_inside, acquired
        client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        start.wait()
        for _ in range(20):
            with hold(client, key, lease_seconds=5, renew=False) as lease:
                if lease is None:
                    continue
                with guard:
                    inside += 1
                    acquired += 1
                    max_inside = max(max_inside, inside)
                time.sleep(0.001)
                with guard:
                    inside -= 1

    threads = [threading.Thread(target=contend) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max_inside == 1
    assert acquired >= 1


def test_lock_of_a_dead_holder_expires_after_its_lease(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    key = RedisKeys(redis_prefix).lock("mailbox", "inbox")
    # A holder that died: acquired without renewal and never released.
    assert redis_client.set(key, b"dead-holder-token", nx=True, px=300)
    with hold(redis_client, key, lease_seconds=5) as blocked:
        assert blocked is None
    time.sleep(0.4)
    with hold(redis_client, key, lease_seconds=5) as taken_over:
        assert taken_over is not None


def test_renewal_keeps_a_slow_holder_owning_the_lock(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    key = RedisKeys(redis_prefix).lock("edr-tenant", "slow")
    with hold(redis_client, key, lease_seconds=0.3) as lease:
        assert lease is not None
        time.sleep(1.0)  # three leases long
        assert not lease.lost
        assert redis_client.pttl(key) > 0


def test_renew_reports_loss_when_someone_else_took_the_key(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    key = RedisKeys(redis_prefix).lock("edr-tenant", "stolen")
    with hold(redis_client, key, lease_seconds=5, renew=False) as lease:
        assert lease is not None
        redis_client.set(key, b"another-owner")
        assert lease.renew() is False
        assert lease.lost
    assert redis_client.get(key) == b"another-owner"  # release never deletes a lock it lost


def cut_off(client: redis.Redis) -> None:
    """Redis stops answering this client: its connections now go to a closed port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    client.connection_pool.connection_kwargs.update(port=closed_port, socket_connect_timeout=0.2)
    client.connection_pool.reset()  # open connections go; new ones take the closed port


def test_redis_not_answering_within_the_lease_is_not_a_loss(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    key = RedisKeys(redis_prefix).lock("edr-tenant", "blip")
    client = redis.Redis(connection_pool=redis.ConnectionPool.from_url(REDIS_BASE_URL))
    with hold(client, key, lease_seconds=30, renew=False) as lease:
        assert lease is not None
        cut_off(client)
        assert lease.renew() is True
        assert not lease.lost


def test_redis_not_answering_for_a_whole_lease_loses_the_lock(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    key = RedisKeys(redis_prefix).lock("edr-tenant", "outage")
    client = redis.Redis(connection_pool=redis.ConnectionPool.from_url(REDIS_BASE_URL))
    with hold(client, key, lease_seconds=0.5) as lease:
        assert lease is not None
        cut_off(client)
        time.sleep(1.5)  # the renewer keeps trying, then gives the lease up

        assert lease.lost


def fail_while_redis_goes_away(client: redis.Redis, key: str) -> None:
    with hold(client, key, lease_seconds=5, renew=False):
        cut_off(client)
        raise ValueError("the holder's own error")


def test_a_release_redis_does_not_answer_keeps_the_holders_own_outcome(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    key = RedisKeys(redis_prefix).lock("mailbox", "release")
    client = redis.Redis(connection_pool=redis.ConnectionPool.from_url(REDIS_BASE_URL))

    with pytest.raises(ValueError, match="the holder's own error"):
        fail_while_redis_goes_away(client, key)
