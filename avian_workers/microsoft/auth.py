"""Client-credentials tokens from Entra ID through MSAL: one confidential client per tenant.

MSAL talks over `requests`. When a CA bundle is given it is passed on every request, because
`requests` lets REQUESTS_CA_BUNDLE override a session's `verify` but not a per-request one.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import msal
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from avian_workers.microsoft._config import AppRegistration, MicrosoftEndpoints
from avian_workers.microsoft._errors import TenantAuthError

# What each AADSTS code means for whoever maintains the tenant's secret.
_AADSTS_MEANINGS: dict[int, str] = {
    7000215: "the client secret is wrong (store the secret's value, not its ID, and check it "
    "is the current one)",
    7000222: "the client secret has expired (create a new one in the app registration)",
    700016: "application {client_id} is not registered in tenant {tenant} (wrong client id or "
    "tenant id, or the app was never consented to there)",
    90002: "tenant {tenant} does not exist (check the Azure AD tenant id in the secret)",
    500011: "the API's service principal is missing from tenant {tenant} (the product is not "
    "licensed or the app was not consented to there)",
    70011: "the requested scope is invalid",
    7000112: "application {client_id} is disabled in tenant {tenant}",
}
_AADSTS_CODE = re.compile(r"AADSTS(\d+)")
_TENANT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*$")


class TokenProvider:
    """Tokens for one tenant's app registration, cached in memory by MSAL for the run."""

    def __init__(
        self,
        credentials: AppRegistration,
        endpoints: MicrosoftEndpoints,
        *,
        ca_bundle: str | None = None,
        timeout: float | tuple[float, float] = 30.0,
        http_retries: int = 3,
    ) -> None:
        self._credentials = credentials
        self._endpoints = endpoints
        self._session = _IdentitySession(
            ca_bundle=ca_bundle, timeout=timeout, http_retries=http_retries
        )
        self._app: msal.ConfidentialClientApplication | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"TokenProvider(tenant={self._credentials.azure_tenant_id!r}, "
            f"client_id={self._credentials.client_id!r})"
        )

    def token(self, scope: str, force_refresh: bool = False) -> str:
        """An access token for `scope`; `force_refresh` discards the cached one first."""
        app = self._application()
        if force_refresh:
            _forget_access_tokens(app, scope)
        try:
            result: dict[str, Any] = app.acquire_token_for_client(scopes=[scope])
        except requests.RequestException as exc:
            raise self._unreachable(exc) from None
        token = result.get("access_token")
        if isinstance(token, str) and token:
            return token
        raise self._refused(result)

    def close(self) -> None:
        self._session.close()

    def _application(self) -> msal.ConfidentialClientApplication:
        with self._lock:
            if self._app is None:
                self._app = self._build_application()
            return self._app

    def _build_application(self) -> msal.ConfidentialClientApplication:
        tenant = self._credentials.azure_tenant_id
        if not _TENANT_ID.match(tenant):
            raise TenantAuthError(f"Azure AD tenant id {tenant!r} is malformed")
        authority = f"{self._endpoints.authority_host.rstrip('/')}/{tenant}"
        try:
            # Building the app runs OIDC discovery of the tenant, so an unknown tenant fails
            # here. instance_discovery=False: never ask login.microsoftonline.com which hosts
            # are valid authorities; the configured host is trusted as is.
            return msal.ConfidentialClientApplication(
                self._credentials.client_id,
                client_credential=self._credentials.client_secret.get_secret_value(),
                authority=authority,
                validate_authority=True,
                instance_discovery=False,
                token_cache=msal.TokenCache(),
                http_client=self._session,
                app_name="avian-workers",
            )
        except requests.RequestException as exc:
            raise self._unreachable(exc) from None
        except ValueError as exc:
            # MSAL wraps the discovery answer (which names the AADSTS code) in a ValueError.
            detail = f"{exc} {exc.__context__ or ''}"
            code = _first_aadsts_code(detail)
            if code is not None:
                raise self._auth_error(code, error=None) from None
            raise TenantAuthError(
                self._scrub(f"tenant {tenant}: authority {authority} is unusable: {exc}")
            ) from None

    def _refused(self, result: dict[str, Any]) -> TenantAuthError:
        codes = result.get("error_codes")
        code = codes[0] if isinstance(codes, list) and codes and isinstance(codes[0], int) else None
        if code is None:
            code = _first_aadsts_code(str(result.get("error_description", "")))
        error = result.get("error")
        return self._auth_error(code, error=str(error) if error else None)

    def _auth_error(self, code: int | None, *, error: str | None) -> TenantAuthError:
        tenant = self._credentials.azure_tenant_id
        client_id = self._credentials.client_id
        meaning = _AADSTS_MEANINGS.get(code or 0, "Entra ID refused the token request")
        meaning = meaning.format(tenant=tenant, client_id=client_id)
        prefix = f"AADSTS{code}" if code is not None else "token request refused"
        suffix = f" ({error})" if error else ""
        message = f"{prefix}: {meaning}{suffix} [tenant {tenant}, client id {client_id}]"
        return TenantAuthError(self._scrub(message), aadsts_code=code, error=error)

    def _unreachable(self, exc: requests.RequestException) -> TenantAuthError:
        return TenantAuthError(
            self._scrub(
                f"identity endpoint {self._endpoints.authority_host} unreachable for tenant "
                f"{self._credentials.azure_tenant_id}: {type(exc).__name__}"
            )
        )

    def _scrub(self, text: str) -> str:
        secret = self._credentials.client_secret.get_secret_value()
        # Short values would mask ordinary words; real client secrets are 40 characters.
        return text.replace(secret, "[REDACTED]") if len(secret) >= 6 else text


class _IdentitySession(requests.Session):
    """The `requests` session MSAL uses: per-request CA bundle, timeouts and a few retries."""

    def __init__(
        self, *, ca_bundle: str | None, timeout: float | tuple[float, float], http_retries: int
    ) -> None:
        super().__init__()
        self._ca_bundle = ca_bundle
        self._timeout = timeout
        retry = Retry(
            total=http_retries,
            backoff_factor=0.5,
            status_forcelist=(429, 500, 502, 503, 504),
            allowed_methods=frozenset({"GET", "POST"}),
            raise_on_status=False,
        )
        adapter = HTTPAdapter(max_retries=retry)
        self.mount("https://", adapter)
        self.mount("http://", adapter)

    def request(  # type: ignore[override]
        self, method: str, url: str, *args: Any, **kwargs: Any
    ) -> requests.Response:
        if self._ca_bundle is not None:
            kwargs.setdefault("verify", self._ca_bundle)
        kwargs.setdefault("timeout", self._timeout)
        return super().request(method, url, *args, **kwargs)


def _forget_access_tokens(app: msal.ConfidentialClientApplication, scope: str) -> None:
    cache = app.token_cache
    stale = list(cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN, target=[scope]))
    for entry in stale:
        cache.remove_at(entry)


def _first_aadsts_code(text: str) -> int | None:
    match = _AADSTS_CODE.search(text)
    return int(match.group(1)) if match else None
