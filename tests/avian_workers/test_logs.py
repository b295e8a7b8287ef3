import io
import json
from typing import Any

import pytest

from avian_workers.logs import MASK, configure_logging, get_logger, redact, register_secret


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.fixture
def stream() -> io.StringIO:
    buffer = io.StringIO()
    configure_logging("debug", stream=buffer, mirror_to_prefect=False, context={"workerType": "x"})
    return buffer


def test_lines_have_the_contract_shape(stream: io.StringIO) -> None:
    get_logger().info("Starting worker: edr-polling", nodeEnv="test")
    (line,) = _lines(stream)
    assert line["level"] == "info"
    assert line["message"] == "Starting worker: edr-polling"
    assert line["workerType"] == "x"
    assert line["nodeEnv"] == "test"
    assert line["timestamp"].endswith("Z")
    assert len(line["timestamp"]) == len("2024-12-09T10:00:00.000Z")


def test_secrets_in_nested_fields_urls_and_text_never_survive(stream: io.StringIO) -> None:
    register_secret("registered-client-secret-value")
    get_logger().error(
        "connect to postgresql://app:pg-pass-123@db:5432/avian failed",
        config={
            "tenant": {"clientSecret": "cs-abc-xyz", "clientId": "visible-id"},
            "headers": [{"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig"}],
            "note": "token=tok-987654 and password: p@ss-word-here",
        },
        innocent_field="it was registered-client-secret-value all along",
        redis="rediss://:redis-pass-456@cache:6379/0",
        access_token="at-secret-1",
        raw=b"IMAP LOGIN user imap-pass-789",
    )
    text = stream.getvalue()
    for secret in (
        "pg-pass-123",
        "cs-abc-xyz",
        "eyJhbGciOiJIUzI1NiJ9",
        "tok-987654",
        "p@ss-word-here",
        "registered-client-secret-value",
        "redis-pass-456",
        "at-secret-1",
    ):
        assert secret not in text, secret
    assert "visible-id" in text
    assert MASK in text


def test_redact_does_not_mutate_its_input() -> None:
    original = {"password": "x-secret", "nested": {"token": "y-secret"}}
    redacted = redact(original)
    assert original == {"password": "x-secret", "nested": {"token": "y-secret"}}
    assert redacted == {"password": MASK, "nested": {"token": MASK}}


def test_exceptions_are_logged_redacted(stream: io.StringIO) -> None:
    try:
        raise RuntimeError("login failed for postgresql://u:exc-pass-321@h/db")
    except RuntimeError:
        get_logger().exception("boom")
    assert "exc-pass-321" not in stream.getvalue()


@pytest.mark.parametrize(
    "key",
    ["password", "pwd", "clientSecret", "refresh_token", "x-api-key", "APIKey", "cookies"],
)
def test_a_field_named_as_a_secret_is_masked(key: str) -> None:
    assert redact({key: "Sup3rS3cret!"}) == {key: MASK}


@pytest.mark.parametrize(
    "key", ["bypassed", "compass", "secretArn", "secret_name", "token_type", "tokenId"]
)
def test_a_field_that_only_contains_or_names_a_secret_word_is_kept(key: str) -> None:
    assert redact({key: "3"}) == {key: "3"}


def test_an_exception_name_before_its_message_is_not_taken_for_a_secret_key() -> None:
    text = (
        "TokenRejectedError: graph GET /v1.0/security/alerts_v2 answered 401 to a fresh token"
        " (InvalidAuthenticationToken - Access token validation failure. Invalid audience.)"
    )

    assert redact(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "token: opaque-value-123",
        "client_secret_error=hunter2",
        "X-Api-Key-Exception: abc123def",
        "refresh_token_error=abc",
        "TokenError=abc123def",
        "TokenRejectedError: client_secret=hunter2",
        "ClientSecretError: password:hunter2",
        "TenantSecretError: client_secret: abc123def",
    ],
)
def test_secret_keys_that_merely_end_like_an_exception_are_still_masked(text: str) -> None:
    assert redact(text).endswith(MASK)


def test_a_pwd_pair_in_free_text_is_masked() -> None:
    assert redact("login pwd=Sup3rS3cret! failed") == f"login pwd={MASK} failed"
