"""Walking OData collections page by page, one request in flight, nothing accumulated."""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Generator, Iterator, Mapping
from typing import Literal

from avian_workers.microsoft._errors import UnexpectedResponseError
from avian_workers.microsoft.transport import Api, ApiResponse, JsonObject, QueryParams, TenantHttp


def follow_next_links(
    http: TenantHttp,
    api: Api,
    url: str,
    *,
    params: QueryParams | None = None,
    headers: Mapping[str, str] | None = None,
) -> Iterator[ApiResponse]:
    """Every response of a collection, following `@odata.nextLink` (which carries the query)."""
    next_url: str | None = url
    next_params = params
    while next_url is not None:
        response = http.get(api, next_url, params=next_params, headers=headers)
        yield response
        link = response.body.get("@odata.nextLink")
        next_url = link if isinstance(link, str) and link else None
        next_params = None


def page_items(response: ApiResponse, path: str) -> list[JsonObject]:
    """The `value` list of a collection page, checked to hold JSON objects only."""
    value = response.body.get("value")
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise UnexpectedResponseError(
            f"{path} answered {response.status} without a 'value' list of objects",
            status=response.status,
            path=path,
        )
    return value


type _Handoff[T] = (
    tuple[Literal["page"], T] | tuple[Literal["end"], None] | tuple[Literal["error"], BaseException]
)


def read_ahead[T](pages: Iterator[T]) -> Generator[T]:
    """`pages`, with the next one requested while the caller is still storing this one.

    A tenant's pages are sequential round trips; without this, storing each page adds to the
    tenant's time on top of the latency. At most two pages are held: the caller's and the one
    fetched ahead, which waits until the caller takes it before the one after is requested.
    The source runs in its own thread with the caller's context (log binding, flow run), and
    its error reaches the caller after the pages before it.
    """
    handoff: queue.Queue[_Handoff[T]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def produce() -> None:
        try:
            for page in pages:
                handoff.put(("page", page))
                handoff.join()  # taken by the caller: only now request the next page
                if stop.is_set():
                    return
            handoff.put(("end", None))
        except BaseException as exc:  # the caller re-raises it in its own thread
            handoff.put(("error", exc))
        finally:
            close = getattr(pages, "close", None)
            if close is not None:
                close()

    context = contextvars.copy_context()
    producer = threading.Thread(target=context.run, args=(produce,), name="read-ahead", daemon=True)
    producer.start()
    try:
        while True:
            item = handoff.get()
            handoff.task_done()
            if item[0] == "end":
                return
            if item[0] == "error":
                raise item[1]
            yield item[1]
    finally:
        stop.set()
        while producer.is_alive():  # unblock a producer waiting to hand over a page
            try:
                handoff.get(timeout=0.05)
                handoff.task_done()
            except queue.Empty:
                pass
