"""Per-tenant state of the Microsoft simulator: faults, counters and test handles."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime
from typing import Any

from avian_workers.simulator._microsoft_data import Dataset, TenantData, TenantSpec
from avian_workers.simulator._microsoft_http import Api, RetryAfterForm
from avian_workers.simulator._microsoft_values import (
    JsonObject,
    datetime_ticks,
    now_ticks,
    ticks_of,
)

DATASETS: tuple[Dataset, ...] = (
    "machines",
    "vulnerabilities",
    "managedDevices",
    "compliancePolicies",
    "alerts",
    "secureScores",
)
TOKEN_CHECKING_APIS: tuple[Api, ...] = ("graph", "defender")


@dataclass(frozen=True)
class Faults:
    """How one tenant misbehaves. API calls are numbered from 1 per tenant.

    Call n answers 429 when throttle_every > 0 and (n - 1) % throttle_every < throttle_streak
    (so every=4, streak=3 is a storm of three 429s then one success), and 503 by the same rule
    with the unavailable_* pair; 429 wins when both match.
    """

    latency: float = 0.0  # seconds added to every request, without blocking other requests
    throttle_every: int = 0
    throttle_streak: int = 1
    retry_after: RetryAfterForm = "seconds"
    retry_after_seconds: int = 1
    unavailable_every: int = 0
    unavailable_streak: int = 1
    token_lifetime: int = 3599  # expires_in of issued tokens, enforced
    token_max_uses: int = 0  # > 0: a token is refused (401, expired) after this many calls
    partial_alert_pages: frozenset[int] = frozenset()  # alerts_v2 pages (0-based) sent as 206
    forbidden: frozenset[Dataset] = frozenset()  # datasets answering 403
    defender_calls_per_minute: int = 0  # > 0: Defender answers 429 beyond this rolling rate
    defender_unlicensed: bool = False  # Defender's service principal is missing: no token for it
    tokens_rejected_by: frozenset[Api] = frozenset()  # APIs answering 401 even to fresh tokens

    def __post_init__(self) -> None:
        if self.latency < 0 or self.retry_after_seconds < 0 or self.token_lifetime < 1:
            raise ValueError("latency, retry_after_seconds and token_lifetime must be positive")
        if min(self.throttle_every, self.unavailable_every, self.token_max_uses) < 0:
            raise ValueError("fault frequencies must not be negative")
        if self.retry_after not in ("seconds", "http-date", "absent"):
            raise ValueError("retry_after must be 'seconds', 'http-date' or 'absent'")
        unknown = set(self.forbidden) - set(DATASETS)
        if unknown:
            raise ValueError(f"unknown datasets {sorted(unknown)}; known: {list(DATASETS)}")
        refusing = set(self.tokens_rejected_by) - set(TOKEN_CHECKING_APIS)
        if refusing:
            raise ValueError(f"unknown APIs {sorted(refusing)}; known: {list(TOKEN_CHECKING_APIS)}")
        object.__setattr__(self, "forbidden", frozenset(self.forbidden))
        object.__setattr__(self, "tokens_rejected_by", frozenset(self.tokens_rejected_by))
        object.__setattr__(self, "partial_alert_pages", frozenset(self.partial_alert_pages))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], base: Faults | None = None) -> Faults:
        """Faults from JSON/TOML values, on top of `base`; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown fault settings {sorted(unknown)}; known: {sorted(known)}")
        return replace(base or cls(), **dict(values))

    def to_json(self) -> JsonObject:
        data = asdict(self)
        data["forbidden"] = sorted(self.forbidden)
        data["partial_alert_pages"] = sorted(self.partial_alert_pages)
        data["tokens_rejected_by"] = sorted(self.tokens_rejected_by)
        return data


def hits(n: int, every: int, streak: int) -> bool:
    return every > 0 and (n - 1) % every < streak


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the simulator answered."""

    tenant_id: str | None
    api: Api
    method: str
    path: str
    query: str
    status: int


class SimulatedTenant:
    """A tenant's data, faults and counters, plus the handles tests use to change its data."""

    def __init__(self, spec: TenantSpec, faults: Faults, *, created: datetime) -> None:
        self.spec = spec
        self.data = TenantData(spec, created_ticks=datetime_ticks(created))
        self.faults = faults
        self.api_calls = 0
        self.tokens_issued = 0
        self._token_uses: dict[str, int] = {}
        self.revoked_tokens: set[str] = set()  # token ids (jti) no longer accepted
        self._defender_calls: deque[float] = deque()

    # -- what the tenant holds (for assertions) -------------------------------------------

    def machines(self) -> list[JsonObject]:
        return [self.data.machine(j) for j in range(self.data.machine_count)]

    def managed_devices(self) -> list[JsonObject]:
        return [self.data.managed_device(j) for j in range(self.data.managed_device_count)]

    def vulnerability_rows(self) -> list[JsonObject]:
        return [self.data.vulnerability_row(r) for r in range(self.data.vulnerability_row_count)]

    def compliance_policies(self) -> list[JsonObject]:
        return [self.data.policy(p) for p in range(self.spec.policies)]

    def device_statuses(self, policy_id: str) -> list[JsonObject]:
        return list(self.data.device_statuses(self.data.policy_ids().index(policy_id)))

    def alerts(self) -> list[JsonObject]:
        """Alerts oldest first (by lastUpdateDateTime, then id)."""
        return [alert.body for alert in self.data.alerts()]

    def secure_scores(self) -> list[JsonObject]:
        return [self.data.secure_score(day) for day in range(self.spec.secure_scores)]

    # -- changes a test can make ------------------------------------------------------------

    def add_alert(
        self,
        last_update: datetime | str,
        *,
        machine: int | None = None,
        severity: str = "medium",
    ) -> JsonObject:
        """Publish a new alert; an old `last_update` makes it a late arrival."""
        return self.data.add_alert(ticks_of(last_update), machine=machine, severity=severity)

    def update_alert(
        self, alert_id: str, last_update: datetime | str | None = None, **changes: Any
    ) -> JsonObject:
        """Change an alert (status="resolved" ...) and move its lastUpdateDateTime (default now)."""
        when = ticks_of(last_update) if last_update is not None else now_ticks()
        return self.data.update_alert(alert_id, when, **changes)

    # -- bookkeeping used by the server -------------------------------------------------------

    def use_token(self, token_id: str) -> int:
        uses = self._token_uses.get(token_id, 0) + 1
        self._token_uses[token_id] = uses
        return uses

    def defender_wait(self, limit: int, now: float) -> float:
        """Seconds until a Defender call fits the rolling-minute limit (0: record it now)."""
        calls = self._defender_calls
        while calls and calls[0] <= now - 60:
            calls.popleft()
        if len(calls) >= limit:
            return calls[0] + 60 - now
        calls.append(now)
        return 0.0
