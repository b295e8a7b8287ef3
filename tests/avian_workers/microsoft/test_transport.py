"""TenantHttp retry rules, scripted through httpx's MockTransport and a virtual clock."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator

import httpx
import pytest

from avian_workers.microsoft import (
    DefenderClient,
    GraphClient,
    HttpPolicy,
    MicrosoftEndpoints,
    MicrosoftError,
    PermissionMissingError,
    RetriesExhaustedError,
    RetryBudgetExceededError,
    TenantAuthError,
    TenantHttp,
    TokenRejectedError,
    UnexpectedResponseError,
)
from tests.avian_workers.microsoft.conftest import PATIENT, FakeClock

ENDPOINTS = MicrosoftEndpoints(
    graph_base_url="https://graph.test", defender_base_url="https://defender.test/base"
)
OK = httpx.Response(200, json={"value": []})


class NumberedTokens:
    """A token source handing out token-1, token-2 ...: a new one only when forced."""

    def __init__(self) -> None:
        self.issued = 0
        self.forced = 0

    def token(self, scope: str, force_refresh: bool = False) -> str:
        if force_refresh or self.issued == 0:
            self.issued += 1
            self.forced += force_refresh
        return f"token-{self.issued}"


class Script:
    """Answers requests from a list (the last answer repeats) and records them."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def tokens() -> NumberedTokens:
    return NumberedTokens()


@pytest.fixture
def make_http(clock: FakeClock, tokens: NumberedTokens) -> Iterator[Callable[..., TenantHttp]]:
    opened: list[TenantHttp] = []

    def _make(
        handler: Callable[[httpx.Request], httpx.Response], policy: HttpPolicy = PATIENT
    ) -> TenantHttp:
        http = TenantHttp(
            tokens,
            ENDPOINTS,
            policy,
            transport=httpx.MockTransport(handler),
            clock=clock,
            sleep=clock.sleep,
        )
        opened.append(http)
        return http

    yield _make
    for http in opened:
        http.close()


def graph_get(http: TenantHttp) -> int:
    return http.get("graph", http.url("graph", "/v1.0/security/secureScores")).status


def test_429_waits_for_retry_after_seconds(
    make_http: Callable[..., TenantHttp], clock: FakeClock
) -> None:
    script = Script(httpx.Response(429, headers={"Retry-After": "7"}), OK)

    assert graph_get(make_http(script)) == 200
    assert clock.sleeps == [7.0]


def test_429_waits_until_the_retry_after_date_counted_from_the_response_date(
    make_http: Callable[..., TenantHttp], clock: FakeClock
) -> None:
    throttled = httpx.Response(
        429,
        headers={
            "Date": "Mon, 09 Dec 2024 10:00:00 GMT",
            "Retry-After": "Mon, 09 Dec 2024 10:00:12 GMT",
        },
    )

    assert graph_get(make_http(Script(throttled, OK))) == 200
    assert clock.sleeps == [12.0]


def test_429_without_retry_after_backs_off_exponentially_with_full_jitter(
    make_http: Callable[..., TenantHttp], clock: FakeClock
) -> None:
    script = Script(*[httpx.Response(429)] * 4, OK)

    assert graph_get(make_http(script)) == 200
    ceilings = [min(PATIENT.backoff_max, PATIENT.backoff_base * 2**n) for n in range(4)]
    assert len(clock.sleeps) == 4
    assert all(0 <= wait <= ceiling for wait, ceiling in zip(clock.sleeps, ceilings, strict=True))


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retried(
    make_http: Callable[..., TenantHttp], clock: FakeClock, status: int
) -> None:
    script = Script(httpx.Response(status), httpx.Response(status), OK)

    assert graph_get(make_http(script)) == 200
    assert len(script.requests) == 3
    assert len(clock.sleeps) == 2


@pytest.mark.parametrize(
    "failure",
    [httpx.ReadTimeout("slow"), httpx.ConnectTimeout("slow"), httpx.ConnectError("refused")],
)
def test_timeouts_and_connection_errors_are_retried(
    make_http: Callable[..., TenantHttp], failure: Exception
) -> None:
    script = Script(failure, OK)

    assert graph_get(make_http(script)) == 200
    assert len(script.requests) == 2


def test_gives_up_after_the_allowed_attempts(make_http: Callable[..., TenantHttp]) -> None:
    script = Script(httpx.Response(503))

    with pytest.raises(RetriesExhaustedError, match="failed 5 times, last: HTTP 503"):
        graph_get(make_http(script))

    assert len(script.requests) == PATIENT.max_attempts


def test_retry_budget_stops_a_tenant_that_keeps_failing(
    make_http: Callable[..., TenantHttp], clock: FakeClock
) -> None:
    policy = HttpPolicy(max_attempts=10, retry_budget_seconds=10)
    script = Script(httpx.Response(429, headers={"Retry-After": "6"}))

    with pytest.raises(RetryBudgetExceededError):
        graph_get(make_http(script, policy))

    assert clock.sleeps == [6.0]


def test_retry_budget_is_shared_by_all_requests_of_the_tenant(
    make_http: Callable[..., TenantHttp], clock: FakeClock
) -> None:
    policy = HttpPolicy(max_attempts=10, retry_budget_seconds=10)
    throttled = httpx.Response(429, headers={"Retry-After": "6"})
    http = make_http(Script(throttled, OK, throttled), policy)
    graph_get(http)

    with pytest.raises(RetryBudgetExceededError):
        graph_get(http)

    assert http.retry_seconds_spent == 6.0
    assert clock.sleeps == [6.0]


def test_waiting_for_a_defender_slot_is_not_charged_to_the_retry_budget(
    make_http: Callable[..., TenantHttp], clock: FakeClock
) -> None:
    policy = HttpPolicy(max_attempts=3, backoff_max=0.01, defender_calls_per_minute=1)
    http = make_http(Script(OK, httpx.Response(503), OK), policy)
    machines = http.url("defender", "/api/machines")
    http.get("defender", machines)

    http.get("defender", machines)  # waits a minute for its slot, fails once, then succeeds

    assert clock.sleeps[0] == pytest.approx(60.0)
    assert http.retry_seconds_spent < 1.0


def test_retry_after_longer_than_the_budget_is_not_waited_for(
    make_http: Callable[..., TenantHttp], clock: FakeClock
) -> None:
    policy = HttpPolicy(retry_budget_seconds=300)
    script = Script(httpx.Response(429, headers={"Retry-After": "3600"}))

    with pytest.raises(RetryBudgetExceededError, match="next wait would be 3600"):
        graph_get(make_http(script, policy))

    assert clock.sleeps == []


def test_401_gets_a_fresh_token_and_repeats_the_same_request(
    make_http: Callable[..., TenantHttp], tokens: NumberedTokens
) -> None:
    script = Script(httpx.Response(401), OK)
    http = make_http(script)
    next_link = "https://graph.test/v1.0/deviceManagement/managedDevices?$skiptoken=page-3"

    http.get("graph", next_link)

    first, second = script.requests
    assert first.url == second.url
    assert first.headers["Authorization"] == "Bearer token-1"
    assert second.headers["Authorization"] == "Bearer token-2"
    assert tokens.forced == 1


def test_401_to_a_fresh_token_is_token_rejected(make_http: Callable[..., TenantHttp]) -> None:
    refused = httpx.Response(
        401, json={"error": {"code": "InvalidAuthenticationToken", "message": "Invalid audience."}}
    )

    with pytest.raises(
        TokenRejectedError, match="InvalidAuthenticationToken - Invalid audience"
    ) as caught:
        graph_get(make_http(Script(refused)))

    assert caught.value.api == "graph"
    # A failed cadenced task stores it in Prefect's result storage and reads it back.
    copy = pickle.loads(pickle.dumps(caught.value))  # noqa: S301 - our own object, round trip
    assert (str(copy), copy.api) == (str(caught.value), "graph")


def test_403_is_permission_missing_naming_the_path(make_http: Callable[..., TenantHttp]) -> None:
    forbidden = httpx.Response(
        403,
        json={"error": {"code": "Forbidden", "message": "Missing role SecurityEvents.Read.All"}},
    )

    with pytest.raises(PermissionMissingError, match=r"SecurityEvents\.Read\.All") as caught:
        graph_get(make_http(Script(forbidden)))

    assert caught.value.path == "/v1.0/security/secureScores"


class RefusedTokens:
    """Entra ID answering AADSTS500011 (the API's service principal is missing) for any scope."""

    def token(self, scope: str, force_refresh: bool = False) -> str:
        raise TenantAuthError("AADSTS500011: service principal missing", aadsts_code=500011)


def test_a_defender_token_refused_as_unlicensed_forbids_defender_alone() -> None:
    with TenantHttp(
        RefusedTokens(), ENDPOINTS, PATIENT, transport=httpx.MockTransport(Script(OK))
    ) as http:
        with pytest.raises(PermissionMissingError, match="AADSTS500011") as caught:
            http.get("defender", http.url("defender", "/api/machines"))
        assert caught.value.summary.endswith("AADSTS500011")
        # Graph's principal exists in every tenant: there 500011 means a mistyped scope.
        with pytest.raises(TenantAuthError):
            graph_get(http)


def test_other_client_errors_are_unexpected_responses_without_retry(
    make_http: Callable[..., TenantHttp],
) -> None:
    script = Script(httpx.Response(400, json={"error": {"code": "BadRequest", "message": "no"}}))

    with pytest.raises(UnexpectedResponseError) as caught:
        graph_get(make_http(script))

    assert caught.value.status == 400
    assert len(script.requests) == 1


def test_a_body_that_is_not_json_is_an_unexpected_response(
    make_http: Callable[..., TenantHttp],
) -> None:
    with pytest.raises(UnexpectedResponseError, match="not JSON"):
        graph_get(make_http(Script(httpx.Response(200, text="<html>maintenance</html>"))))


def test_a_link_off_the_api_base_never_gets_the_token(make_http: Callable[..., TenantHttp]) -> None:
    script = Script(OK)
    http = make_http(script)

    with pytest.raises(MicrosoftError, match=r"refusing to follow elsewhere\.test"):
        http.get("graph", "https://elsewhere.test/v1.0/security/secureScores")
    with pytest.raises(MicrosoftError, match="refusing"):
        http.get("defender", "https://defender.test/other/api/machines")

    assert script.requests == []


def test_error_messages_never_carry_the_token(
    make_http: Callable[..., TenantHttp], tokens: NumberedTokens
) -> None:
    failures: list[MicrosoftError] = []
    for answer in (httpx.Response(401), httpx.Response(403), httpx.Response(503)):
        with pytest.raises(MicrosoftError) as caught:
            graph_get(make_http(Script(answer)))
        failures.append(caught.value)

    shown = " ".join(f"{failure} {failure!r}" for failure in failures)
    assert "token-" not in shown
    assert "Bearer" not in shown


def test_base_urls_must_use_https(tokens: NumberedTokens) -> None:
    with pytest.raises(ValueError, match="must use https"):
        TenantHttp(tokens, MicrosoftEndpoints(graph_base_url="http://graph.test"), PATIENT)


def test_defender_calls_stay_under_the_per_minute_budget(
    make_http: Callable[..., TenantHttp], clock: FakeClock
) -> None:
    stamps: list[float] = []

    def machines(request: httpx.Request) -> httpx.Response:
        stamps.append(clock())
        skip = int(request.url.params["$skip"])
        return httpx.Response(200, json={"value": [{"id": str(skip)}] if skip < 250 else []})

    pages = list(DefenderClient(make_http(machines)).machines(page_size=1))

    assert len(pages) == 250
    assert max(sum(1 for s in stamps if t <= s < t + 60) for t in stamps) == 100


def test_graph_calls_are_not_paced(make_http: Callable[..., TenantHttp], clock: FakeClock) -> None:
    def managed_devices(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params.get("page", "0"))
        body: dict[str, object] = {"value": [{"id": str(page)}]}
        if page < 149:
            body["@odata.nextLink"] = (
                f"https://graph.test/v1.0/deviceManagement/managedDevices?page={page + 1}"
            )
        return httpx.Response(200, json=body)

    pages = list(GraphClient(make_http(managed_devices)).managed_devices())

    assert len(pages) == 150
    assert clock.sleeps == []
