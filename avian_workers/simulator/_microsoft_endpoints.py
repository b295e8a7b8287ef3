"""Graph and Defender data endpoints of the simulator: they only compute, never wait."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response

from avian_workers.simulator._microsoft_alerts import with_evolvable_enums_hidden
from avian_workers.simulator._microsoft_http import (
    BadRequest,
    api_error,
    decode_skiptoken,
    encode_skiptoken,
    int_param,
    json_response,
    next_link,
    origin,
)
from avian_workers.simulator._microsoft_state import SimulatedTenant
from avian_workers.simulator._microsoft_values import JsonObject, parse_datetime_ticks

GRAPH_PREFIX = "/graph"
DEFENDER_PREFIX = "/defender"
_MAX_MACHINES_PAGE = 10_000
_MAX_VULNERABILITY_PAGE = 200_000
_DEFAULT_VULNERABILITY_PAGE = 50_000


def managed_devices(request: Request, tenant: SimulatedTenant) -> Response:
    data = tenant.data
    return _graph_collection(
        request,
        tenant,
        "deviceManagement/managedDevices",
        data.managed_device_count,
        lambda start, stop: [data.managed_device(j) for j in range(start, stop)],
    )


def policies(request: Request, tenant: SimulatedTenant) -> Response:
    data = tenant.data
    return _graph_collection(
        request,
        tenant,
        "deviceManagement/deviceCompliancePolicies",
        tenant.spec.policies,
        lambda start, stop: [data.policy(p) for p in range(start, stop)],
    )


def device_statuses(request: Request, tenant: SimulatedTenant) -> Response:
    policy_id = request.path_params["policy_id"]
    data = tenant.data
    try:
        p = data.policy_ids().index(policy_id)
    except ValueError:
        return api_error("graph", 404, "ResourceNotFound", f"No policy with id {policy_id}.")
    return _graph_collection(
        request,
        tenant,
        f"deviceManagement/deviceCompliancePolicies('{policy_id}')/deviceStatuses",
        data.status_count(p),
        lambda start, stop: list(data.device_statuses(p, start, stop)),
    )


def secure_scores(request: Request, tenant: SimulatedTenant) -> Response:
    data = tenant.data
    return _graph_collection(
        request,
        tenant,
        "security/secureScores",
        tenant.spec.secure_scores,
        lambda start, stop: [data.secure_score(day) for day in range(start, stop)],
    )


def _graph_collection(
    request: Request,
    tenant: SimulatedTenant,
    context: str,
    total: int,
    items: Callable[[int, int], list[JsonObject]],
) -> Response:
    """A Graph page: `$top` sets the page size (capped by the tenant), nextLink carries on."""
    query = request.query_params
    largest = tenant.spec.graph_page_size
    size = min(int_param(query.get("$top"), "$top", 1) or largest, largest)
    offset = decode_skiptoken(query.get("$skiptoken"))
    end = min(offset + size, total)
    body: JsonObject = {
        "@odata.context": f"{origin(request)}{GRAPH_PREFIX}/v1.0/$metadata#{context}",
        "value": items(offset, end),
    }
    if end < total:
        body["@odata.nextLink"] = next_link(request, {"$skiptoken": encode_skiptoken(end)})
    return json_response(200, body)


def alerts(request: Request, tenant: SimulatedTenant) -> Response:
    query = request.query_params
    low, high = _alert_filter(query.get("$filter"))
    order = (query.get("$orderby") or "lastUpdateDateTime desc").strip()
    if order not in {"lastUpdateDateTime asc", "lastUpdateDateTime desc", "lastUpdateDateTime"}:
        raise BadRequest(f"Unsupported $orderby '{order}': only lastUpdateDateTime is simulated.")
    selected = tenant.data.alerts_between(low, high)
    if order.endswith("desc"):
        selected = selected[::-1]
    size = min(
        int_param(query.get("$top"), "$top", 1) or tenant.spec.graph_page_size,
        tenant.spec.graph_page_size,
    )
    offset = int_param(query.get("$skip"), "$skip", 0) or 0
    end = min(offset + size, len(selected))
    wants_new_enums = "include-unknown-enum-members" in request.headers.get("prefer", "")
    page = [
        a.body if wants_new_enums else with_evolvable_enums_hidden(a.body)
        for a in selected[offset:end]
    ]
    status = 200
    if offset // size in tenant.faults.partial_alert_pages:
        status = 206  # some providers did not answer: the page misses alerts
        page = page[:-1] if len(page) > 1 else page
    body: JsonObject = {
        "@odata.context": f"{origin(request)}{GRAPH_PREFIX}/v1.0/$metadata#security/alerts_v2",
        "value": page,
    }
    if end < len(selected):
        body["@odata.nextLink"] = next_link(request, {"$skip": str(end)})
    headers = {"Preference-Applied": "include-unknown-enum-members"} if wants_new_enums else None
    return json_response(status, body, headers=headers)


def _alert_filter(text: str | None) -> tuple[int | None, int | None]:
    """Bounds (in ticks, inclusive) of a `lastUpdateDateTime ge|gt|le|lt|eq <datetime>` filter."""
    if not text:
        return None, None
    low: int | None = None
    high: int | None = None
    for clause in text.split(" and "):
        parts = clause.strip().split()
        if len(parts) != 3 or parts[0] != "lastUpdateDateTime":
            raise BadRequest(
                f"Invalid filter clause '{clause.strip()}': only lastUpdateDateTime is simulated."
            )
        _, operator, literal = parts
        try:
            ticks = parse_datetime_ticks(literal)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        if operator in {"ge", "gt", "eq"}:
            bound = ticks + (1 if operator == "gt" else 0)
            low = bound if low is None else max(low, bound)
        if operator in {"le", "lt", "eq"}:
            bound = ticks - (1 if operator == "lt" else 0)
            high = bound if high is None else min(high, bound)
        if operator not in {"ge", "gt", "le", "lt", "eq"}:
            raise BadRequest(f"Invalid filter operator '{operator}'.")
    return low, high


def machines(request: Request, tenant: SimulatedTenant) -> Response:
    query = request.query_params
    if "$filter" in query:
        raise BadRequest("Only $top and $skip are simulated on machines.")
    total = tenant.data.machine_count
    if total == 0:  # Defender's documented answer when it has no recent machines
        return api_error("defender", 404, "ResourceNotFound", "No machines found.")
    top = int_param(query.get("$top"), "$top", 1)
    if top is not None and top > _MAX_MACHINES_PAGE:
        raise BadRequest(f"$top may not exceed {_MAX_MACHINES_PAGE}.")
    skip = int_param(query.get("$skip"), "$skip", 0) or 0
    end = min(skip + (top or _MAX_MACHINES_PAGE), total)
    body: JsonObject = {
        "@odata.context": f"{origin(request)}{DEFENDER_PREFIX}/api/$metadata#Machines",
        "value": [tenant.data.machine(j) for j in range(skip, end)],
    }
    if top is None and end < total:  # with $top, Defender never sends a nextLink
        body["@odata.nextLink"] = next_link(request, {"$skip": str(end)})
    return json_response(200, body)


def vulnerabilities(request: Request, tenant: SimulatedTenant) -> Response:
    query = {k.lower(): v for k, v in request.query_params.items()}
    size = int_param(query.get("pagesize"), "pageSize", 1) or _DEFAULT_VULNERABILITY_PAGE
    if size > _MAX_VULNERABILITY_PAGE:
        raise BadRequest(f"pageSize may not exceed {_MAX_VULNERABILITY_PAGE}.")
    top = int_param(query.get("$top"), "$top", 1)
    offset = decode_skiptoken(query.get("$skiptoken"))
    total = tenant.data.vulnerability_row_count
    end = min(offset + (top or size), total)
    body: JsonObject = {
        "@odata.context": (
            f"{origin(request)}{DEFENDER_PREFIX}/api/$metadata"
            "#Collection(microsoft.windowsDefenderATP.api.AssetVulnerability)"
        ),
        "value": [tenant.data.vulnerability_row(r) for r in range(offset, end)],
    }
    if top is None and end < total:
        body["@odata.nextLink"] = next_link(
            request,
            {"pageSize": str(size), "$skiptoken": encode_skiptoken(end)},
            drop={"pagesize"},
        )
    return json_response(200, body)
