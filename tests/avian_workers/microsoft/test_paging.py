"""read_ahead: the next page is fetched while the caller stores this one, never more than one ahead."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterator

import pytest

from avian_workers.microsoft._paging import read_ahead

WAIT = 5.0

tenant_name: contextvars.ContextVar[str] = contextvars.ContextVar("tenant_name", default="none")


class Source:
    """Numbered pages that record how far the producer got and in which context."""

    def __init__(self, count: int, *, fail_after: int | None = None) -> None:
        self.count = count
        self.fail_after = fail_after
        self.requested: list[int] = []
        self.contexts: list[str] = []
        self.closed = threading.Event()
        self.requested_event = threading.Condition()

    def pages(self) -> Iterator[int]:
        try:
            for number in range(self.count):
                if self.fail_after is not None and number == self.fail_after:
                    raise RuntimeError(f"page {number} failed")
                with self.requested_event:
                    self.requested.append(number)
                    self.contexts.append(tenant_name.get())
                    self.requested_event.notify_all()
                yield number
        finally:
            self.closed.set()

    def wait_until_requested(self, number: int) -> bool:
        with self.requested_event:
            return self.requested_event.wait_for(lambda: number in self.requested, timeout=WAIT)


def test_every_page_arrives_in_order() -> None:
    assert list(read_ahead(Source(7).pages())) == list(range(7))


def test_the_next_page_is_requested_while_the_caller_holds_the_current_one() -> None:
    source = Source(3)
    pages = read_ahead(source.pages())

    assert next(pages) == 0
    # The caller has not asked for page 1 yet, and it is already being fetched.
    assert source.wait_until_requested(1)


def test_no_page_is_fetched_more_than_one_ahead_of_the_caller() -> None:
    source = Source(10)
    pages = read_ahead(source.pages())

    assert next(pages) == 0
    assert source.wait_until_requested(1)
    time.sleep(0.2)  # time enough for a producer that ran ahead to show it
    assert source.requested == [0, 1]
    assert next(pages) == 1
    assert source.wait_until_requested(2)
    time.sleep(0.2)
    assert source.requested == [0, 1, 2]


def test_an_error_reaches_the_caller_after_the_pages_before_it() -> None:
    pages = read_ahead(Source(5, fail_after=2).pages())

    assert next(pages) == 0
    assert next(pages) == 1
    with pytest.raises(RuntimeError, match="page 2 failed"):
        next(pages)


def test_a_caller_that_stops_early_stops_the_source() -> None:
    source = Source(100)
    pages = read_ahead(source.pages())
    assert next(pages) == 0

    pages.close()

    assert source.closed.wait(WAIT)
    assert len(source.requested) <= 2


def test_the_source_runs_in_the_callers_context() -> None:
    source = Source(2)
    token = tenant_name.set("contoso")
    try:
        assert list(read_ahead(source.pages())) == [0, 1]
    finally:
        tenant_name.reset(token)

    assert source.contexts == ["contoso", "contoso"]
