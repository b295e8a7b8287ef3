"""Microsoft Defender for Endpoint API: machines and software vulnerabilities, page by page."""

from __future__ import annotations

from collections.abc import Iterator

from avian_workers.microsoft._errors import UnexpectedResponseError
from avian_workers.microsoft._paging import follow_next_links, page_items
from avian_workers.microsoft.transport import JsonObject, TenantHttp

MACHINES_PATH = "/api/machines"
VULNERABILITIES_PATH = "/api/machines/SoftwareVulnerabilitiesByMachine"
MAX_MACHINES_PAGE = 10_000
MAX_VULNERABILITIES_PAGE = 200_000


class DefenderClient:
    """One tenant's Defender data; every call goes through the tenant's rate limiter."""

    def __init__(self, http: TenantHttp) -> None:
        self._http = http

    def machines(self, *, page_size: int = MAX_MACHINES_PAGE) -> Iterator[list[JsonObject]]:
        """Pages of machines.

        With `$top` Defender sends no nextLink, so pages are walked with `$skip` until one
        comes back shorter than asked.
        """
        if not 1 <= page_size <= MAX_MACHINES_PAGE:
            raise ValueError(f"page_size must be between 1 and {MAX_MACHINES_PAGE}")
        url = self._http.url("defender", MACHINES_PATH)
        skip = 0
        while True:
            try:
                response = self._http.get(
                    "defender", url, params={"$top": page_size, "$skip": skip}
                )
            except UnexpectedResponseError as exc:
                if exc.status == 404:  # Defender's answer when it has no (more) machines
                    return
                raise
            page = page_items(response, MACHINES_PATH)
            if page:
                yield page
            if len(page) < page_size:
                return
            skip += len(page)

    def vulnerabilities_by_machine(self, *, page_size: int = 10_000) -> Iterator[list[JsonObject]]:
        """Pages of the software-vulnerability export: one row per device, software and CVE.

        Rows whose software has no known CVE carry `cveId: null`.
        """
        if not 1 <= page_size <= MAX_VULNERABILITIES_PAGE:
            raise ValueError(f"page_size must be between 1 and {MAX_VULNERABILITIES_PAGE}")
        url = self._http.url("defender", VULNERABILITIES_PATH)
        for response in follow_next_links(
            self._http, "defender", url, params={"pageSize": page_size}
        ):
            page = page_items(response, VULNERABILITIES_PATH)
            if page:
                yield page
