"""One tenant's HTTP client for Graph and Defender: tokens, retries, pacing and a retry budget.

Retry rules: 429 waits for `Retry-After` (seconds or HTTP date) or, without it, exponential
backoff with full jitter; 5xx and timeouts back off the same way; a 401 gets one fresh token
and the same request again, so paging resumes on the page that failed. Every wait and every
failed attempt is charged to the tenant's retry budget.
"""

from __future__ import annotations

import functools
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self

import httpx
import orjson
import structlog
import tenacity

from avian_workers.microsoft._config import Api, HttpPolicy, MicrosoftEndpoints
from avian_workers.microsoft._errors import (
    MicrosoftError,
    PermissionMissingError,
    RetriesExhaustedError,
    TenantAuthError,
    TokenRejectedError,
    UnexpectedResponseError,
)
from avian_workers.microsoft._pacing import (
    Clock,
    RetryBudget,
    Sleep,
    SlidingWindowLimiter,
    retry_after_seconds,
)

JsonObject = dict[str, Any]
QueryParams = Mapping[str, str | int]

_log = structlog.get_logger(__name__)

SCOPE_ONLY_AADSTS_CODES = frozenset({500011})
"""Token refusals that concern one API only: AADSTS500011, the API's service principal is missing
from the tenant (its product is not licensed there). Any other refusal concerns the app itself."""


class TokenSource(Protocol):
    """Where access tokens come from (`auth.TokenProvider` in production)."""

    def token(self, scope: str, force_refresh: bool = False) -> str: ...


@dataclass(frozen=True, slots=True)
class ApiResponse:
    """A successful (2xx) answer: its status (200, or 206 for a partial one) and JSON body."""

    status: int
    body: JsonObject


@dataclass(frozen=True, slots=True)
class _Target:
    base_url: httpx.URL
    scope: str
    limiter: SlidingWindowLimiter | None
    licensed_separately: bool = False
    """A tenant may lack this API's product (Defender for Endpoint), unlike Graph."""


class _RetryableError(Exception):
    """One attempt failed in a way another attempt may fix."""

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@functools.cache
def _tls_context(ca_bundle: str) -> ssl.SSLContext:
    """One verifying context per CA bundle, shared by every tenant's client."""
    # Building one parses the whole bundle (tens of ms of CPU); a context is thread-safe.
    return ssl.create_default_context(cafile=ca_bundle)


class TenantHttp:
    """GET requests to one tenant's Graph and Defender APIs; one per tenant run."""

    def __init__(
        self,
        tokens: TokenSource,
        endpoints: MicrosoftEndpoints,
        policy: HttpPolicy,
        *,
        ca_bundle: str | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        self._tokens = tokens
        self._policy = policy
        self._clock = clock
        self._sleep = sleep
        self._budget = RetryBudget(policy.retry_budget_seconds)
        self._targets: dict[Api, _Target] = {
            "graph": _Target(_base(endpoints.graph_base_url), endpoints.graph_scope, None),
            "defender": _Target(
                _base(endpoints.defender_base_url),
                endpoints.defender_scope,
                SlidingWindowLimiter(
                    policy.defender_calls_per_minute, 60.0, clock=clock, sleep=sleep
                ),
                licensed_separately=True,
            ),
        }
        self._client = httpx.Client(
            timeout=httpx.Timeout(policy.read_timeout, connect=policy.connect_timeout),
            verify=_tls_context(ca_bundle) if ca_bundle else True,
            transport=transport,
            headers={"Accept": "application/json", "User-Agent": "avian-workers"},
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    @property
    def retry_seconds_spent(self) -> float:
        """Seconds this tenant has lost to failed attempts and retry waits so far."""
        return self._budget.spent

    def url(self, api: Api, path: str) -> str:
        """The absolute URL of `path` (e.g. "/v1.0/security/alerts_v2") on `api`."""
        base = self._targets[api].base_url
        return str(base.copy_with(path=base.path.rstrip("/") + path))

    def get(
        self,
        api: Api,
        url: str,
        *,
        params: QueryParams | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ApiResponse:
        """GET `url` with retries; raises a `MicrosoftError` subclass when it cannot succeed."""
        target = self._targets[api]
        request_url = httpx.URL(url)
        if not _is_under(request_url, target.base_url):
            # A nextLink elsewhere must not receive this tenant's token.
            raise MicrosoftError(f"refusing to follow {request_url.host}: not under {api} base URL")
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_RetryableError),
            stop=tenacity.stop_after_attempt(self._policy.max_attempts),
            wait=self._wait,
            sleep=self._wait_within_budget,
            before_sleep=lambda state: _log_retry(api, request_url.path, state),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._attempt(api, target, request_url, params, headers)
        except _RetryableError as failure:
            raise RetriesExhaustedError(
                f"{api} GET {request_url.path} failed {self._policy.max_attempts} times, "
                f"last: {failure.reason}"
            ) from None
        raise AssertionError("tenacity ended without a result")  # pragma: no cover

    def _attempt(
        self,
        api: Api,
        target: _Target,
        url: httpx.URL,
        params: QueryParams | None,
        headers: Mapping[str, str] | None,
    ) -> ApiResponse:
        # Waiting for a Defender slot is pacing, not a retry: it is never charged to the budget.
        started, paced = self._clock(), 0.0
        try:
            paced += self._pace(target)
            response = self._send(target, url, params, headers, fresh_token=False)
            if response.status_code == 401:
                paced += self._pace(target)
                response = self._send(target, url, params, headers, fresh_token=True)
                if response.status_code == 401:
                    raise TokenRejectedError(
                        f"{api} GET {url.path} answered 401 to a fresh token "
                        f"({_error_summary(response)})",
                        api=api,
                    )
        except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            self._budget.record_loss(self._clock() - started - paced)
            raise _RetryableError(type(exc).__name__) from None
        status = response.status_code
        if status == 429 or status >= 500:
            self._budget.record_loss(self._clock() - started - paced)
            raise _RetryableError(
                f"HTTP {status}",
                retry_after=retry_after_seconds(
                    response.headers.get("Retry-After"),
                    response_date=response.headers.get("Date"),
                ),
            )
        if status == 403:
            raise PermissionMissingError(
                f"{api} GET {url.path} answered 403: {_error_summary(response)}", path=url.path
            )
        if not 200 <= status < 300:
            raise UnexpectedResponseError(
                f"{api} GET {url.path} answered {status}: {_error_summary(response)}",
                status=status,
                path=url.path,
            )
        try:
            # orjson parses the multi-megabyte pages several times faster than json.
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise UnexpectedResponseError(
                f"{api} GET {url.path} answered {status} with a body that is not JSON",
                status=status,
                path=url.path,
            ) from None
        if not isinstance(body, dict):
            raise UnexpectedResponseError(
                f"{api} GET {url.path} answered {status} with JSON that is not an object",
                status=status,
                path=url.path,
            )
        return ApiResponse(status=status, body=body)

    def _send(
        self,
        target: _Target,
        url: httpx.URL,
        params: QueryParams | None,
        headers: Mapping[str, str] | None,
        *,
        fresh_token: bool,
    ) -> httpx.Response:
        try:
            token = self._tokens.token(target.scope, force_refresh=fresh_token)
        except TenantAuthError as exc:
            if not target.licensed_separately or exc.aadsts_code not in SCOPE_ONLY_AADSTS_CODES:
                raise  # for Graph, whose principal always exists, 500011 is a mistyped scope
            # This API alone is out of reach (Defender for Endpoint not licensed): its datasets
            # are forbidden, the tenant's other APIs go on.
            raise PermissionMissingError(
                f"no token for {target.scope}: {exc}",
                path=url.path,
                summary=f"no token for {target.scope}: AADSTS{exc.aadsts_code}",
            ) from None
        request_headers = {**(headers or {}), "Authorization": f"Bearer {token}"}
        return self._client.get(url, params=params, headers=request_headers)

    @staticmethod
    def _pace(target: _Target) -> float:
        """Take a slot of the target's rate limit, if it has one; the seconds waited for it."""
        return target.limiter.acquire() if target.limiter is not None else 0.0

    def _wait(self, state: tenacity.RetryCallState) -> float:
        failure = state.outcome.exception() if state.outcome else None
        if isinstance(failure, _RetryableError) and failure.retry_after is not None:
            return failure.retry_after
        backoff = tenacity.wait_random_exponential(
            multiplier=self._policy.backoff_base, max=self._policy.backoff_max
        )
        return backoff(state)

    def _wait_within_budget(self, seconds: float) -> None:
        self._budget.reserve(seconds)
        self._sleep(seconds)


def _base(url: str) -> httpx.URL:
    parsed = httpx.URL(url)
    if parsed.scheme != "https":
        raise ValueError(f"{url} must use https: the requests carry bearer tokens")
    return parsed


def _is_under(url: httpx.URL, base: httpx.URL) -> bool:
    base_path = base.path.rstrip("/") + "/"
    return (
        url.scheme == base.scheme
        and url.host == base.host
        and url.port == base.port
        and (url.path + "/").startswith(base_path)
    )


def _error_summary(response: httpx.Response) -> str:
    """Microsoft's error code and message, short; bodies never echo credentials."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        # Not "code: message": a code such as InvalidAuthenticationToken would read as a secret
        # key to the log masking, and the message's first word would be masked.
        return f"{code} - {str(message)[:300]}" if message else str(code)
    return response.reason_phrase or f"HTTP {response.status_code}"


def _log_retry(api: Api, path: str, state: tenacity.RetryCallState) -> None:
    failure = state.outcome.exception() if state.outcome else None
    _log.warning(
        "Retrying Microsoft API request",
        api=api,
        path=path,
        attempt=state.attempt_number,
        reason=failure.reason if isinstance(failure, _RetryableError) else repr(failure),
        wait_seconds=round(state.upcoming_sleep, 3),
    )
