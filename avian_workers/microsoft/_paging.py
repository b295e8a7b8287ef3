"""Walking OData collections page by page, one request in flight, nothing accumulated."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from avian_workers.microsoft._config import Api
from avian_workers.microsoft._errors import UnexpectedResponseError
from avian_workers.microsoft.transport import ApiResponse, JsonObject, QueryParams, TenantHttp


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
