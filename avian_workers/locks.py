"""Leased Redis locks so two runs never work on the same tenant, mailbox or day at once.

redis-py's `Lock` already does the hard part (random token, `SET NX PX`, Lua scripts that release
or extend only while the token still matches). This module adds what the workers need on top: a
non-blocking acquire that reports "held by someone else" instead of waiting, and a renewer thread
that keeps the lease alive while the holder works, so a crashed holder's lock expires after at
most one lease while a slow, healthy holder never loses it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import redis
from redis.exceptions import LockError, LockNotOwnedError

from avian_workers.logs import get_logger

_UNANSWERED = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


@dataclass
class Lease:
    """A held lock; `lost` turns true once the lock may be someone else's."""

    key: str
    lease_seconds: float
    _lock: redis.lock.Lock
    _stop: threading.Event = field(default_factory=threading.Event)
    _renewed_at: float = field(default_factory=time.monotonic)
    lost: bool = False

    def renew(self) -> bool:
        """Push the expiry a full lease ahead; False once the lock may no longer be ours.

        Redis not answering is not a loss while the last lease may still run: the next renewal
        tries again. Once a whole lease has passed since the last renewal that succeeded, the
        key may have expired and been taken, so the lease is lost.
        """
        try:
            self._lock.reacquire()
        except (LockNotOwnedError, LockError):
            self._lose("another holder has the lock")
            return False
        except _UNANSWERED as exc:
            if time.monotonic() - self._renewed_at < self.lease_seconds:
                return True
            self._lose(f"Redis did not answer for a whole lease ({type(exc).__name__})")
            return False
        self._renewed_at = time.monotonic()
        return True

    def _lose(self, reason: str) -> None:
        if not self.lost:
            get_logger().warning("Lock lost", lock=self.key, reason=reason)
        self.lost = True


def _renew_until_stopped(lease: Lease) -> None:
    interval = max(lease.lease_seconds / 3, 0.05)
    while not lease._stop.wait(interval):
        if not lease.renew():
            return


@contextmanager
def hold(
    client: redis.Redis, key: str, *, lease_seconds: float, renew: bool = True
) -> Iterator[Lease | None]:
    """Yield a Lease when `key` was free, or None when another holder has it (never waits)."""
    lock = client.lock(key, timeout=lease_seconds, blocking=False, thread_local=False)
    if not lock.acquire(blocking=False):
        yield None
        return
    lease = Lease(key=key, lease_seconds=lease_seconds, _lock=lock)
    renewer: threading.Thread | None = None
    if renew:
        renewer = threading.Thread(
            target=_renew_until_stopped, args=(lease,), name=f"lease:{key}", daemon=True
        )
        renewer.start()
    try:
        yield lease
    finally:
        lease._stop.set()
        if renewer is not None:
            renewer.join(timeout=5)
        try:
            lock.release()
        except (LockNotOwnedError, LockError):
            lease.lost = True
        except _UNANSWERED as exc:
            # The holder's own outcome matters more; the key expires with its lease anyway.
            get_logger().warning(
                "Lock not released: Redis did not answer; it expires with its lease",
                lock=key,
                error=type(exc).__name__,
            )
