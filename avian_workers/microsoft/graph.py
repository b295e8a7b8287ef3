"""Microsoft Graph: Intune devices and compliance, security alerts and Secure Score."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import quote

from avian_workers.microsoft._paging import follow_next_links, page_items
from avian_workers.microsoft.transport import JsonObject, TenantHttp

MANAGED_DEVICES_PATH = "/v1.0/deviceManagement/managedDevices"
COMPLIANCE_POLICIES_PATH = "/v1.0/deviceManagement/deviceCompliancePolicies"
ALERTS_PATH = "/v1.0/security/alerts_v2"
SECURE_SCORES_PATH = "/v1.0/security/secureScores"

# Without it Graph hides enum members added after v1.0 shipped behind "unknownFutureValue".
PREFER_UNKNOWN_ENUM_MEMBERS = {"Prefer": "include-unknown-enum-members"}


class GraphClient:
    """One tenant's Graph data, page by page."""

    def __init__(self, http: TenantHttp) -> None:
        self._http = http

    def managed_devices(self) -> Iterator[list[JsonObject]]:
        """Pages of Intune managed devices."""
        yield from self._collection(MANAGED_DEVICES_PATH)

    def compliance_policies(self) -> Iterator[list[JsonObject]]:
        """Pages of device compliance policies."""
        yield from self._collection(COMPLIANCE_POLICIES_PATH)

    def policy_device_statuses(self, policy_id: str) -> Iterator[list[JsonObject]]:
        """Pages of one policy's per-device statuses (devices are named, not identified)."""
        path = f"{COMPLIANCE_POLICIES_PATH}/{quote(policy_id, safe='')}/deviceStatuses"
        yield from self._collection(path)

    def alerts_updated_since(self, since: datetime) -> AlertSweep:
        """Alerts whose `lastUpdateDateTime` is at or after `since`, oldest first."""
        return AlertSweep(self._http, since)

    def latest_secure_score(self) -> JsonObject | None:
        """The tenant's most recent Secure Score, or None when it has none yet."""
        url = self._http.url("graph", SECURE_SCORES_PATH)
        response = self._http.get("graph", url, params={"$top": 1})
        scores = page_items(response, SECURE_SCORES_PATH)
        return scores[0] if scores else None

    def _collection(self, path: str) -> Iterator[list[JsonObject]]:
        url = self._http.url("graph", path)
        for response in follow_next_links(self._http, "graph", url):
            page = page_items(response, path)
            if page:
                yield page


class AlertSweep:
    """One incremental pass over alerts_v2.

    `complete` turns true only once `pages()` has run to the end with every page answered
    200; a 206 (partial content) page means some alerts may be missing, so a caller must not
    advance its watermark past this sweep.
    """

    def __init__(self, http: TenantHttp, since: datetime) -> None:
        if since.tzinfo is None:
            raise ValueError("since must be timezone-aware")
        self._http = http
        self._since = since
        self._complete = False

    @property
    def complete(self) -> bool:
        return self._complete

    @property
    def odata_filter(self) -> str:
        """The OData filter this sweep sends."""
        return f"lastUpdateDateTime ge {odata_datetime(self._since)}"

    def pages(self) -> Iterator[list[JsonObject]]:
        """Pages of alerts ordered by `lastUpdateDateTime` ascending."""
        self._complete = False
        every_page_whole = True
        url = self._http.url("graph", ALERTS_PATH)
        params = {"$filter": self.odata_filter, "$orderby": "lastUpdateDateTime asc"}
        for response in follow_next_links(
            self._http, "graph", url, params=params, headers=PREFER_UNKNOWN_ENUM_MEMBERS
        ):
            every_page_whole = every_page_whole and response.status == 200
            page = page_items(response, ALERTS_PATH)
            if page:
                yield page
        self._complete = every_page_whole


def odata_datetime(moment: datetime) -> str:
    """An OData DateTimeOffset literal in UTC, e.g. 2024-12-09T10:00:00.123456Z."""
    if moment.tzinfo is None:
        raise ValueError("an OData datetime must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
