"""Typed failures of the Microsoft clients; no message ever carries a secret or a token."""

from __future__ import annotations

from avian_workers.microsoft._config import Api


class MicrosoftError(Exception):
    """Base of every failure raised by avian_workers.microsoft."""


class TenantAuthError(MicrosoftError):
    """Entra ID refused to issue a token (an AADSTS error), or could not be reached."""

    def __init__(self, message: str, *, aadsts_code: int | None = None, error: str | None = None):
        super().__init__(message)
        self.aadsts_code = aadsts_code
        self.error = error


class TokenRejectedError(MicrosoftError):
    """An API answered 401 even to a freshly issued token: the tenant's datasets on that API are
    out of reach (a wrong audience, the API not provisioned for the tenant), not those of the
    other API, whose tokens are its own."""

    def __init__(self, message: str, api: Api):
        super().__init__(message)
        self.api: Api = api
        """The API that rejected the token."""

    def __reduce__(self) -> tuple[type[TokenRejectedError], tuple[str, Api]]:
        return (type(self), (str(self), self.api))


class PermissionMissingError(MicrosoftError):
    """An API answered 403, or refused a token for its scope alone: this dataset is out of reach
    for the app registration, not the tenant's other datasets."""

    def __init__(self, message: str, *, path: str, summary: str | None = None):
        super().__init__(message)
        self.path = path
        self.summary = summary or f"403 on {path}: permission missing"
        """A short reason for run summaries."""


class UnexpectedResponseError(MicrosoftError):
    """An API answered with a status that no retry can fix (400, 404, 409 ...)."""

    def __init__(self, message: str, *, status: int, path: str):
        super().__init__(message)
        self.status = status
        self.path = path


class RetriesExhaustedError(MicrosoftError):
    """A request kept failing (429, 5xx, timeouts) for every allowed attempt."""


class RetryBudgetExceededError(MicrosoftError):
    """The tenant's retry budget is spent: its run stops instead of waiting any longer."""
