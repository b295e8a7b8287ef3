"""The simulator's Outlook tokens and their RFC 7662 introspection (Exchange Online's check)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable

import httpx
import pytest

from avian_workers.simulator import (
    IMAP_ROLE,
    INTROSPECTION_PATH,
    Faults,
    MicrosoftSimulator,
    TenantSpec,
)
from tests.avian_workers.simulator.conftest import (
    DEFENDER_SCOPE,
    GRAPH_SCOPE,
    access_token,
    bearer,
)
from tests.plugins.microsoft_simulator import OUTLOOK_SCOPE, MicrosoftSimulatorHandle

INACTIVE = {"active": False}


def introspect(
    http: httpx.Client, simulator: MicrosoftSimulatorHandle, token: str
) -> httpx.Response:
    """POST the token as Dovecot's oauth2 passdb does (introspection_mode = post)."""
    return http.post(
        INTROSPECTION_PATH,
        data={
            "token": token,
            "client_id": simulator.introspection_client_id,
            "client_secret": simulator.introspection_client_secret,
        },
    )


def claims_of(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    decoded: dict[str, object] = json.loads(base64.urlsafe_b64decode(payload + "==="))
    return decoded


def test_outlook_scope_gives_an_app_only_token_for_exchange_online(
    microsoft_simulator: MicrosoftSimulatorHandle, http: httpx.Client
) -> None:
    tenant = microsoft_simulator.add_tenant(mailbox="alerts@contoso.example")

    claims = claims_of(access_token(http, tenant, OUTLOOK_SCOPE))

    assert claims["aud"] == "https://outlook.office365.com"
    assert (claims["appid"], claims["tid"]) == (tenant.spec.client_id, tenant.spec.tenant_id)


def test_introspection_names_the_mailbox_an_outlook_token_may_open(
    microsoft_simulator: MicrosoftSimulatorHandle, http: httpx.Client
) -> None:
    tenant = microsoft_simulator.add_tenant(mailbox="alerts@contoso.example")
    token = access_token(http, tenant, OUTLOOK_SCOPE)

    response = introspect(http, microsoft_simulator, token)

    body = response.json()
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert (body["active"], body["username"], body["scope"]) == (
        True,
        "alerts@contoso.example",
        IMAP_ROLE,
    )
    assert (body["client_id"], body["tid"], body["token_type"]) == (
        tenant.spec.client_id,
        tenant.spec.tenant_id,
        "Bearer",
    )
    assert body["exp"] == claims_of(token)["exp"]


def revoke(simulator: MicrosoftSimulatorHandle, token: str) -> str:
    simulator.simulator.revoke_token(token)
    return token


@pytest.mark.parametrize(
    "why",
    ["graph token", "defender token", "no mailbox granted", "revoked", "forged", "not a jwt"],
)
def test_introspection_answers_only_inactive_for_a_token_that_opens_no_mailbox(
    microsoft_simulator: MicrosoftSimulatorHandle, http: httpx.Client, why: str
) -> None:
    tenant = microsoft_simulator.add_tenant(mailbox="alerts@contoso.example")
    tokens: dict[str, Callable[[], str]] = {
        "graph token": lambda: access_token(http, tenant, GRAPH_SCOPE),
        "defender token": lambda: access_token(http, tenant, DEFENDER_SCOPE),
        "no mailbox granted": lambda: access_token(
            http, microsoft_simulator.add_tenant(), OUTLOOK_SCOPE
        ),
        "revoked": lambda: revoke(microsoft_simulator, access_token(http, tenant, OUTLOOK_SCOPE)),
        "forged": lambda: access_token(http, tenant, OUTLOOK_SCOPE)[:-4] + "AAAA",
        "not a jwt": lambda: "opaque-password-like-value",
    }

    response = introspect(http, microsoft_simulator, tokens[why]())

    assert (response.status_code, response.json()) == (200, INACTIVE)


def test_introspection_reports_a_token_inactive_after_its_allowed_uses(
    microsoft_simulator: MicrosoftSimulatorHandle, http: httpx.Client
) -> None:
    tenant = microsoft_simulator.add_tenant(
        mailbox="alerts@contoso.example", faults=Faults(token_max_uses=2)
    )
    token = access_token(http, tenant, OUTLOOK_SCOPE)

    answers = [introspect(http, microsoft_simulator, token).json()["active"] for _ in range(3)]

    assert answers == [True, True, False]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(key: bytes, claims: dict[str, object]) -> str:
    """A token signed as the simulator signs its own (HS256 JWT), with exactly these claims."""
    header = b64url(json.dumps({"typ": "JWT", "alg": "HS256"}).encode())
    payload = b64url(json.dumps(claims).encode())
    signature = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(signature)}"


def test_introspection_reports_an_expired_token_inactive() -> None:
    key = b"k" * 32
    spec = TenantSpec(str(uuid.uuid4()), "app", "secret", mailbox="alerts@contoso.example")
    simulator = MicrosoftSimulator([spec], signing_key=key, introspection_clients={"imap": "s"})
    now = int(time.time())
    claims: dict[str, object] = {
        "aud": "https://outlook.office365.com",
        "iss": f"https://sts.windows.net/{spec.tenant_id}/",
        "iat": now - 3600,
        "nbf": now - 3600,
        "appid": "app",
        "tid": spec.tenant_id,
    }
    expired = signed(key, claims | {"exp": now - 60, "jti": "expired"})
    current = signed(key, claims | {"exp": now + 60, "jti": "current"})

    async def ask(token: str) -> bool:
        transport = httpx.ASGITransport(app=simulator.app)
        async with httpx.AsyncClient(transport=transport, base_url="https://sim") as client:
            form = {"token": token, "client_id": "imap", "client_secret": "s"}
            active: bool = (await client.post(INTROSPECTION_PATH, data=form)).json()["active"]
            return active

    answers = [asyncio.run(ask(token)) for token in (expired, current)]

    assert answers == [False, True]


@pytest.mark.parametrize("caller", ["wrong secret", "unknown client"])
def test_introspection_needs_the_resource_servers_credentials(
    microsoft_simulator: MicrosoftSimulatorHandle, http: httpx.Client, caller: str
) -> None:
    tenant = microsoft_simulator.add_tenant(mailbox="alerts@contoso.example")
    token = access_token(http, tenant, OUTLOOK_SCOPE)
    form = {
        "token": token,
        "client_id": microsoft_simulator.introspection_client_id,
        "client_secret": "not-the-secret",
    }
    if caller == "unknown client":
        form |= {"client_id": "someone-else", "client_secret": "anything"}

    response = http.post(INTROSPECTION_PATH, data=form)

    assert (response.status_code, response.json()["error"]) == (401, "invalid_client")
    assert "active" not in response.json()


def test_graph_refuses_outlook_tokens_and_revoked_tokens(
    microsoft_simulator: MicrosoftSimulatorHandle, http: httpx.Client
) -> None:
    tenant = microsoft_simulator.add_tenant(mailbox="alerts@contoso.example")
    outlook, graph = access_token(http, tenant, OUTLOOK_SCOPE), access_token(http, tenant)
    scores = "/graph/v1.0/security/secureScores"

    before = http.get(scores, headers=bearer(graph)).status_code
    microsoft_simulator.simulator.revoke_token(graph)
    after = http.get(scores, headers=bearer(graph)).status_code

    assert http.get(scores, headers=bearer(outlook)).status_code == 401
    assert (before, after) == (200, 401)


def test_revoking_a_token_the_simulator_did_not_issue_is_an_error(
    microsoft_simulator: MicrosoftSimulatorHandle,
) -> None:
    with pytest.raises(ValueError, match="not a token this simulator issued"):
        microsoft_simulator.simulator.revoke_token("eyJ.forged.token")
