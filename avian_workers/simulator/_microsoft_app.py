"""The simulator's ASGI app: Entra ID token issuing, admission of API calls and faults.

Outlook tokens (scope https://outlook.office365.com/.default) are checked by Exchange Online
when an app logs in to IMAP with XOAUTH2. The simulator offers that check as an RFC 7662
introspection endpoint, so a real IMAP server (Dovecot's oauth2 passdb) can stand in for
Exchange: it POSTs the token with its own client id and secret and gets `active` plus the
mailbox the token may open as `username`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from avian_workers.simulator._microsoft_data import Dataset, TenantSpec
from avian_workers.simulator._microsoft_endpoints import (
    DEFENDER_PREFIX,
    GRAPH_PREFIX,
    alerts,
    device_statuses,
    machines,
    managed_devices,
    policies,
    secure_scores,
    vulnerabilities,
)
from avian_workers.simulator._microsoft_http import (
    Api,
    BadRequest,
    aadsts_error,
    api_error,
    b64,
    delay,
    json_response,
    origin,
    throttled,
    unauthorized,
    unknown_tenant_text,
)
from avian_workers.simulator._microsoft_state import (
    Faults,
    RecordedRequest,
    SimulatedTenant,
    hits,
)
from avian_workers.simulator._microsoft_values import JsonObject

GRAPH_AUDIENCES = frozenset({"https://graph.microsoft.com", "00000003-0000-0000-c000-000000000000"})
DEFENDER_AUDIENCES = frozenset(
    {
        "https://api.securitycenter.microsoft.com",
        "https://api.security.microsoft.com",
        "https://securitycenter.onmicrosoft.com/windowsatpservice",
    }
)
OUTLOOK_AUDIENCES = frozenset(
    {
        "https://outlook.office365.com",
        "https://outlook.office.com",
        "00000002-0000-0ff1-ce00-000000000000",
    }
)
IMAP_ROLE = "IMAP.AccessAsApp"
INTROSPECTION_PATH = "/outlook/introspect"
_INACTIVE: JsonObject = {"active": False}


class MicrosoftSimulator:
    """Simulated tenants and the ASGI app that serves them."""

    def __init__(
        self,
        tenants: Iterable[TenantSpec] = (),
        *,
        admin_api: bool = False,
        signing_key: bytes | None = None,
        anchor: datetime | None = None,
        introspection_clients: Mapping[str, str] | None = None,
    ) -> None:
        """`signing_key` and `anchor` (default alert time) let several processes agree.

        `introspection_clients` maps the client ids of resource servers (an IMAP server) to
        the secrets they must send to the introspection endpoint.
        """
        self._tenants: dict[str, SimulatedTenant] = {}
        self._introspection_clients = dict(introspection_clients or {})
        self._signing_key = signing_key or secrets.token_bytes(32)
        self._anchor = anchor
        self._log: deque[RecordedRequest] = deque(maxlen=50_000)
        for spec in tenants:
            self.add_tenant(spec)
        self.app = Starlette(routes=self._routes(admin_api=admin_api))

    # -- configuration ------------------------------------------------------------------------

    def add_tenant(self, spec: TenantSpec, faults: Faults | None = None) -> SimulatedTenant:
        if spec.tenant_id in self._tenants:
            raise ValueError(f"tenant {spec.tenant_id} already exists")
        created = self._anchor or datetime.now(UTC)
        tenant = SimulatedTenant(spec, faults or Faults(), created=created)
        self._tenants[spec.tenant_id] = tenant
        return tenant

    def tenant(self, tenant_id: str) -> SimulatedTenant:
        return self._tenants[tenant_id]

    @property
    def tenants(self) -> list[SimulatedTenant]:
        return list(self._tenants.values())

    def set_faults(self, tenant_id: str, faults: Faults | None = None, **changes: Any) -> Faults:
        """Replace a tenant's faults (`faults`), or change some of them (`changes`)."""
        tenant = self._tenants[tenant_id]
        tenant.faults = Faults.from_mapping(changes, base=faults or tenant.faults)
        return tenant.faults

    def revoke_token(self, token: str) -> None:
        """Refuse this token from now on, before it expires (APIs and introspection alike)."""
        claims = self._token_claims(token)
        if claims is None or str(claims.get("tid")) not in self._tenants:
            raise ValueError("not a token this simulator issued")
        self._tenants[str(claims["tid"])].revoked_tokens.add(str(claims["jti"]))

    def requests(self, tenant_id: str | None = None) -> list[RecordedRequest]:
        """The requests answered so far (the latest 50,000), optionally of one tenant."""
        log = list(self._log)
        return log if tenant_id is None else [r for r in log if r.tenant_id == tenant_id]

    # -- tokens -----------------------------------------------------------------------------

    def _issue_token(self, tenant: SimulatedTenant, client_id: str, audience: str) -> str:
        now = int(time.time())
        claims = {
            "aud": audience,
            "iss": f"https://sts.windows.net/{tenant.spec.tenant_id}/",
            "iat": now,
            "nbf": now,
            "exp": now + tenant.faults.token_lifetime,
            "appid": client_id,
            "tid": tenant.spec.tenant_id,
            "jti": uuid.uuid4().hex,
            "ver": "1.0",
        }
        header = b64(orjson.dumps({"typ": "JWT", "alg": "HS256"}))
        payload = b64(orjson.dumps(claims))
        signature = hmac.new(self._signing_key, f"{header}.{payload}".encode(), hashlib.sha256)
        tenant.tokens_issued += 1
        return f"{header}.{payload}.{b64(signature.digest())}"

    def _token_claims(self, token: str) -> JsonObject | None:
        parts = token.split(".")
        if len(parts) != 3:
            return None
        header, payload, signature = parts
        expected = hmac.new(self._signing_key, f"{header}.{payload}".encode(), hashlib.sha256)
        if not hmac.compare_digest(b64(expected.digest()), signature):
            return None
        claims: JsonObject = orjson.loads(
            base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        )
        return claims

    # -- routing ------------------------------------------------------------------------------

    def _routes(self, *, admin_api: bool) -> list[Route]:
        g, d = GRAPH_PREFIX, DEFENDER_PREFIX
        api_routes: list[
            tuple[str, Api, Dataset, Callable[[Request, SimulatedTenant], Response]]
        ] = [
            (
                f"{g}/v1.0/deviceManagement/managedDevices",
                "graph",
                "managedDevices",
                managed_devices,
            ),
            (
                f"{g}/v1.0/deviceManagement/deviceCompliancePolicies",
                "graph",
                "compliancePolicies",
                policies,
            ),
            (
                f"{g}/v1.0/deviceManagement/deviceCompliancePolicies/{{policy_id}}/deviceStatuses",
                "graph",
                "compliancePolicies",
                device_statuses,
            ),
            (f"{g}/v1.0/security/alerts_v2", "graph", "alerts", alerts),
            (f"{g}/v1.0/security/secureScores", "graph", "secureScores", secure_scores),
            (
                f"{d}/api/machines/SoftwareVulnerabilitiesByMachine",
                "defender",
                "vulnerabilities",
                vulnerabilities,
            ),
            (f"{d}/api/machines", "defender", "machines", machines),
        ]
        routes = [
            Route(path, self._api_endpoint(api, dataset, produce), methods=["GET"])
            for path, api, dataset, produce in api_routes
        ]
        if admin_api:
            routes += [
                Route("/_simulator/tenants", self._admin_tenants, methods=["GET"]),
                Route("/_simulator/tenants/{tenant}/faults", self._admin_faults, methods=["PUT"]),
            ]
        routes += [
            Route(INTROSPECTION_PATH, self._introspect, methods=["POST"]),
            Route("/{tenant}/v2.0/.well-known/openid-configuration", self._openid_configuration),
            Route("/{tenant}/oauth2/v2.0/token", self._token, methods=["POST"]),
            Route("/{path:path}", self._not_found, methods=["GET", "POST", "PUT", "DELETE"]),
        ]
        return routes

    def _record(
        self, tenant: SimulatedTenant | None, api: Api, request: Request, status: int
    ) -> None:
        self._log.append(
            RecordedRequest(
                tenant_id=tenant.spec.tenant_id if tenant else None,
                api=api,
                method=request.method,
                path=request.url.path,
                query=request.url.query,
                status=status,
            )
        )

    # -- Entra ID -----------------------------------------------------------------------------

    async def _openid_configuration(self, request: Request) -> Response:
        tenant_id = request.path_params["tenant"]
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            response = aadsts_error(400, "invalid_tenant", 90002, unknown_tenant_text(tenant_id))
        else:
            await delay(tenant.faults.latency)
            issuer_base = origin(request)
            response = json_response(
                200,
                {
                    "token_endpoint": f"{issuer_base}/{tenant_id}/oauth2/v2.0/token",
                    "token_endpoint_auth_methods_supported": [
                        "client_secret_post",
                        "private_key_jwt",
                        "client_secret_basic",
                    ],
                    "jwks_uri": f"{issuer_base}/{tenant_id}/discovery/v2.0/keys",
                    "response_modes_supported": ["query", "fragment", "form_post"],
                    "subject_types_supported": ["pairwise"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "response_types_supported": [
                        "code",
                        "id_token",
                        "code id_token",
                        "id_token token",
                    ],
                    "scopes_supported": ["openid", "profile", "email", "offline_access"],
                    "issuer": f"{issuer_base}/{tenant_id}/v2.0",
                    "request_uri_parameter_supported": False,
                    "userinfo_endpoint": f"{issuer_base}/oidc/userinfo",
                    "authorization_endpoint": f"{issuer_base}/{tenant_id}/oauth2/v2.0/authorize",
                    "device_authorization_endpoint": f"{issuer_base}/{tenant_id}/oauth2/v2.0/devicecode",
                    "http_logout_supported": True,
                    "frontchannel_logout_supported": True,
                    "end_session_endpoint": f"{issuer_base}/{tenant_id}/oauth2/v2.0/logout",
                    "claims_supported": ["sub", "iss", "aud", "exp", "iat", "tid", "ver"],
                    "tenant_region_scope": "NA",
                    "cloud_instance_name": "microsoftonline.com",
                    "cloud_graph_host_name": "graph.windows.net",
                    "msgraph_host": "graph.microsoft.com",
                },
            )
        self._record(tenant, "identity", request, response.status_code)
        return response

    async def _token(self, request: Request) -> Response:
        tenant_id = request.path_params["tenant"]
        tenant = self._tenants.get(tenant_id)
        form = {
            k: v[0] for k, v in parse_qs((await request.body()).decode(errors="replace")).items()
        }
        response = self._token_response(tenant_id, tenant, form)
        if tenant is not None:
            await delay(tenant.faults.latency)
        self._record(tenant, "identity", request, response.status_code)
        return response

    def _token_response(
        self, tenant_id: str, tenant: SimulatedTenant | None, form: Mapping[str, str]
    ) -> Response:
        if tenant is None:
            return aadsts_error(400, "invalid_request", 90002, unknown_tenant_text(tenant_id))
        if form.get("grant_type") != "client_credentials":
            return aadsts_error(
                400,
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type "
                f"'{form.get('grant_type', '')}'. Only client_credentials is simulated.",
            )
        client_id = form.get("client_id", "")
        if client_id != tenant.spec.client_id:
            return aadsts_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{tenant_id}'. This can happen if the application has not been installed by "
                "the administrator of the tenant or consented to by any user in the tenant. "
                "You may have sent your authentication request to the wrong tenant.",
            )
        if not hmac.compare_digest(form.get("client_secret", ""), tenant.spec.client_secret):
            return aadsts_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is "
                "the client secret value, not the client secret ID, for a secret added to app "
                f"'{client_id}'.",
            )
        scopes = [
            s
            for s in form.get("scope", "").split()
            if s not in {"openid", "profile", "offline_access"}
        ]
        resources = {s.removesuffix("/.default") for s in scopes if s.endswith("/.default")}
        if len(scopes) != 1 or len(resources) != 1:
            return aadsts_error(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {form.get('scope', '')} is not valid. Client "
                "credential flows must have a scope value with /.default suffixed to the "
                "resource identifier (application ID URI).",
            )
        audience = resources.pop()
        unlicensed = DEFENDER_AUDIENCES if tenant.faults.defender_unlicensed else frozenset()
        if audience in unlicensed or audience not in (
            GRAPH_AUDIENCES | DEFENDER_AUDIENCES | OUTLOOK_AUDIENCES
        ):
            return aadsts_error(
                400,
                "invalid_resource",
                500011,
                f"The resource principal named {audience} was not found in the tenant named "
                f"{tenant_id}.",
            )
        return json_response(
            200,
            {
                "token_type": "Bearer",
                "expires_in": tenant.faults.token_lifetime,
                "ext_expires_in": tenant.faults.token_lifetime,
                "access_token": self._issue_token(tenant, client_id, audience),
            },
            cache_control="no-store, no-cache",
        )

    # -- Exchange Online's token check (RFC 7662 introspection) ---------------------------------

    async def _introspect(self, request: Request) -> Response:
        form = {
            k: v[0] for k, v in parse_qs((await request.body()).decode(errors="replace")).items()
        }
        tenant, response = self._introspection_response(form)
        if tenant is not None:
            await delay(tenant.faults.latency)
        self._record(tenant, "identity", request, response.status_code)
        return response

    def _introspection_response(
        self, form: Mapping[str, str]
    ) -> tuple[SimulatedTenant | None, Response]:
        """The RFC 7662 answer: the mailbox the token may open over IMAP, or `active: false`."""
        secret = self._introspection_clients.get(form.get("client_id", ""))
        if secret is None or not hmac.compare_digest(form.get("client_secret", ""), secret):
            return None, json_response(
                401,
                {
                    "error": "invalid_client",
                    "error_description": "Unknown resource server or wrong client secret.",
                },
            )
        claims = self._token_claims(form.get("token", ""))
        tenant = self._tenants.get(str(claims.get("tid"))) if claims else None
        if claims is None or tenant is None:
            return tenant, json_response(200, _INACTIVE, cache_control="no-store")
        token_id = str(claims["jti"])
        uses = tenant.use_token(token_id)
        max_uses = tenant.faults.token_max_uses
        if (
            claims.get("aud") not in OUTLOOK_AUDIENCES
            or int(claims["exp"]) <= time.time()
            or (max_uses and uses > max_uses)
            or token_id in tenant.revoked_tokens
            or tenant.spec.mailbox is None
        ):
            return tenant, json_response(200, _INACTIVE, cache_control="no-store")
        return tenant, json_response(
            200,
            {
                "active": True,
                "scope": IMAP_ROLE,
                "client_id": claims["appid"],
                "username": tenant.spec.mailbox,
                "token_type": "Bearer",
                "exp": claims["exp"],
                "iat": claims["iat"],
                "nbf": claims["nbf"],
                "sub": claims["appid"],
                "aud": claims["aud"],
                "iss": claims["iss"],
                "tid": claims["tid"],
            },
            cache_control="no-store",
        )

    # -- Graph and Defender ---------------------------------------------------------------------

    def _api_endpoint(
        self,
        api: Api,
        dataset: Dataset,
        produce: Callable[[Request, SimulatedTenant], Response],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            tenant, refusal = await self._admit(request, api, dataset)
            if refusal is None and tenant is not None:
                try:
                    response = produce(request, tenant)
                except BadRequest as exc:
                    response = api_error(api, 400, "BadRequest", str(exc))
            else:
                response = refusal or api_error(api, 500, "InternalServerError", "no tenant")
            self._record(tenant, api, request, response.status_code)
            return response

        return endpoint

    async def _admit(
        self, request: Request, api: Api, dataset: Dataset
    ) -> tuple[SimulatedTenant | None, Response | None]:
        """The tenant a request is for, or the refusal it gets (auth, then faults)."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        claims = self._token_claims(token) if scheme.lower() == "bearer" and token else None
        if claims is None:
            return None, unauthorized(api, "Access token validation failure. Invalid token.")
        audiences = GRAPH_AUDIENCES if api == "graph" else DEFENDER_AUDIENCES
        if claims.get("aud") not in audiences:
            return None, unauthorized(api, "Access token validation failure. Invalid audience.")
        tenant = self._tenants.get(str(claims.get("tid")))
        if tenant is None:
            return None, unauthorized(api, "The tenant of this token is unknown.")
        expired = int(claims["exp"]) <= time.time()
        uses = tenant.use_token(str(claims["jti"]))
        if expired or (tenant.faults.token_max_uses and uses > tenant.faults.token_max_uses):
            return tenant, unauthorized(api, "Lifetime validation failed, the token is expired.")
        if str(claims["jti"]) in tenant.revoked_tokens:
            return tenant, unauthorized(api, "The token has been revoked.")
        if api in tenant.faults.tokens_rejected_by:
            # As for a token of the wrong audience, or an API not provisioned for the tenant.
            return tenant, unauthorized(
                api, "Access token validation failure. The token is not valid for this API."
            )
        faults = tenant.faults
        await delay(faults.latency)
        tenant.api_calls += 1
        n = tenant.api_calls
        if hits(n, faults.throttle_every, faults.throttle_streak):
            return tenant, throttled(api, faults.retry_after, faults.retry_after_seconds)
        if hits(n, faults.unavailable_every, faults.unavailable_streak):
            return tenant, api_error(
                api, 503, "ServiceUnavailable", "The service is temporarily unavailable."
            )
        if api == "defender" and faults.defender_calls_per_minute > 0:
            wait = tenant.defender_wait(faults.defender_calls_per_minute, time.monotonic())
            if wait > 0:
                return tenant, throttled(api, "seconds", max(1, round(wait)))
        if dataset in faults.forbidden:
            return tenant, api_error(
                api,
                403,
                "Forbidden" if api == "defender" else "Authorization_RequestDenied",
                f"Missing application roles. API required roles: {_ROLES[dataset]}.",
            )
        return tenant, None

    # -- admin API (stand-alone use) ------------------------------------------------------------

    async def _admin_tenants(self, request: Request) -> Response:
        return json_response(
            200,
            [
                {
                    "tenantId": t.spec.tenant_id,
                    "clientId": t.spec.client_id,
                    "devices": t.spec.devices,
                    "alerts": len(t.data.alerts()),
                    "apiCalls": t.api_calls,
                    "faults": t.faults.to_json(),
                }
                for t in self._tenants.values()
            ],
        )

    async def _admin_faults(self, request: Request) -> Response:
        tenant_id = request.path_params["tenant"]
        if tenant_id not in self._tenants:
            return json_response(404, {"error": f"unknown tenant {tenant_id}"})
        try:
            changes = json.loads(await request.body() or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("the body must be a JSON object of fault settings")
            faults = self.set_faults(tenant_id, **changes)
        except (ValueError, TypeError) as exc:
            return json_response(400, {"error": str(exc)})
        return json_response(200, faults.to_json())

    async def _not_found(self, request: Request) -> Response:
        path = request.url.path
        api: Api = "graph" if path.startswith(GRAPH_PREFIX) else "defender"
        response = api_error(api, 404, "ResourceNotFound", f"{path} is not simulated.")
        self._record(None, api, request, response.status_code)
        return response


_ROLES: dict[Dataset, str] = {
    "machines": "Machine.Read.All",
    "vulnerabilities": "Vulnerability.Read.All",
    "managedDevices": "DeviceManagementManagedDevices.Read.All",
    "compliancePolicies": "DeviceManagementConfiguration.Read.All",
    "alerts": "SecurityAlert.Read.All",
    "secureScores": "SecurityEvents.Read.All",
}
