"""HTTP answers in Microsoft's shapes, and the OData paging helpers of the simulator."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Literal
from urllib.parse import quote, urlencode

import orjson
from starlette.requests import Request
from starlette.responses import Response

from avian_workers.simulator._microsoft_values import JsonObject

Api = Literal["identity", "graph", "defender"]
RetryAfterForm = Literal["seconds", "http-date", "absent"]
_OPAQUE_SAFE = "$:',()"


class BadRequest(Exception):  # noqa: N818 - an HTTP answer, not a failure of the simulator
    """The request is malformed: answered 400 with the message."""


def json_response(
    status: int,
    body: object,
    *,
    headers: Mapping[str, str] | None = None,
    cache_control: str | None = None,
) -> Response:
    all_headers = {"Date": format_datetime(datetime.now(UTC), usegmt=True), **(headers or {})}
    if cache_control:
        all_headers["Cache-Control"] = cache_control
    return Response(orjson.dumps(body), status, headers=all_headers, media_type="application/json")


def aadsts_error(status: int, error: str, code: int, text: str) -> Response:
    now = datetime.now(UTC)
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
    return json_response(
        status,
        {
            "error": error,
            "error_description": (
                f"AADSTS{code}: {text} Trace ID: {trace} Correlation ID: {correlation} "
                f"Timestamp: {stamp}"
            ),
            "error_codes": [code],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": f"https://login.microsoftonline.com/error?code={code}",
        },
    )


def unknown_tenant_text(tenant_id: str) -> str:
    return (
        f"Tenant '{tenant_id}' not found. Check to make sure you have the correct tenant ID and "
        "are signing into the correct cloud."
    )


def api_error(
    api: Api, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    if api == "defender":
        error: JsonObject = {"code": code, "message": message, "target": str(uuid.uuid4())}
    else:
        error = {
            "code": code,
            "message": message,
            "innerError": {
                "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": str(uuid.uuid4()),
                "client-request-id": str(uuid.uuid4()),
            },
        }
    return json_response(status, {"error": error}, headers=headers)


def unauthorized(api: Api, message: str) -> Response:
    code = "Unauthorized" if api == "defender" else "InvalidAuthenticationToken"
    return api_error(api, 401, code, message, headers={"WWW-Authenticate": 'Bearer realm=""'})


def throttled(api: Api, form: RetryAfterForm, seconds: int) -> Response:
    now = datetime.now(UTC).replace(microsecond=0)
    headers = {"Date": format_datetime(now, usegmt=True)}
    if form == "seconds":
        headers["Retry-After"] = str(seconds)
    elif form == "http-date":
        later = datetime.fromtimestamp(now.timestamp() + seconds, UTC)
        headers["Retry-After"] = format_datetime(later, usegmt=True)
    message = (
        "Rate limit is exceeded. Try again later."
        if api == "defender"
        else "Too many requests. Please retry after some time."
    )
    return api_error(api, 429, "TooManyRequests", message, headers=headers)


def origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def next_link(request: Request, updates: Mapping[str, str], drop: Iterable[str] = ()) -> str:
    dropped = {d.lower() for d in drop} | {k.lower() for k in updates}
    params = [(k, v) for k, v in request.query_params.multi_items() if k.lower() not in dropped]
    params += list(updates.items())
    query = urlencode(params, quote_via=quote, safe=_OPAQUE_SAFE)
    return f"{origin(request)}{request.url.path}?{query}"


def encode_skiptoken(offset: int) -> str:
    return b64(f"offset:{offset}".encode())


def decode_skiptoken(token: str | None) -> int:
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        label, _, value = text.partition(":")
        if label != "offset":
            raise ValueError(text)
        return int(value)
    except ValueError:
        raise BadRequest("Invalid $skiptoken.") from None


def int_param(value: str | None, name: str, minimum: int) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"Invalid value '{value}' for {name}.") from None
    if number < minimum:
        raise BadRequest(f"{name} must be at least {minimum}.")
    return number


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def delay(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)
