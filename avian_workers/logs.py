"""JSON log lines on stdout in the platform's shape, mirrored into the Prefect run log, never a secret.

Every event goes through `redact` before it is rendered, so a password, client secret, token or
URL credential is masked whatever field (or nesting level) it sits in. Three layers catch them:
keys whose name says "secret", values that look like credentials (URL userinfo, bearer tokens,
JWTs, `password=` pairs), and the exact values registered with `register_secret` at run time
(a tenant's client secret, the IMAP password), which catches a secret even under an innocent key.
"""

from __future__ import annotations

import io
import logging
import re
import sys
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any, TextIO, cast

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

MASK = "[REDACTED]"

# A field is a secret when a word of its name is one of these (names split at _, -, and
# camelCase humps), unless its last word says it only names or describes one (`secret_name`,
# `secretArn`, `token_type`). Whole words, so `bypassed` or `compass` stay readable.
_SECRET_WORDS = frozenset(
    {
        "pass", "password", "passwd", "pwd", "passphrase", "secret", "token", "authorization",
        "authorisation", "apikey", "credential", "cookie", "assertion", "signature", "privatekey",
    }
)  # fmt: skip
_SECRET_WORD_PAIRS = frozenset({("api", "key"), ("private", "key")})
_REFERENCE_WORDS = frozenset({"name", "arn", "id", "type", "kind", "expires", "length"})
_KEY_WORD = re.compile(r"[A-Z]{2,}(?=[A-Z][a-z]|\b|[_\-\d])|[A-Z]?[a-z]+|[A-Z]+|\d+")

_URL_USERINFO = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
# An exception's class name is no key: "TokenRejectedError: graph GET ..." keeps its message.
# Only a bare CamelCase name before a colon; `client_secret_error=` is still a key, and so is a
# key inside the message ("TenantSecretError: client_secret: ...").
_SECRET_PAIR = re.compile(
    r"(?i)\b(?!(?-i:[A-Z][a-z]+(?:[A-Z][a-z]+)*(?:Error|Exception))\s*:)"
    # Bounded around the secret word: unbounded runs backtrack quadratically ("a-" * 500).
    r"(?P<key>[\w-]{0,60}?(?:password|passwd|pwd|secret|token|api[-_]?key)[\w-]{0,60})"
    r"(?P<sep>\s*[=:]\s*|\"\s*:\s*\")(?P<value>[^\s&\"',;}]+)"
)

_registered: set[str] = set()
_registered_lock = threading.Lock()
_registered_pattern: re.Pattern[str] | None = None

# Shorter values are too likely to occur in ordinary text to be masked everywhere.
_MIN_REGISTERED_LENGTH = 6


def register_secret(value: str | None) -> None:
    """Mask this exact value in every later log line, whatever field carries it."""
    global _registered_pattern  # noqa: PLW0603 - one compiled pattern shared by all threads
    if not value or len(value) < _MIN_REGISTERED_LENGTH:
        return
    with _registered_lock:
        if value in _registered:
            return
        _registered.add(value)
        ordered = sorted(_registered, key=len, reverse=True)
        _registered_pattern = re.compile("|".join(re.escape(v) for v in ordered))


def redact_text(text: str) -> str:
    """Mask credentials inside a free-text string."""
    pattern = _registered_pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    text = _JWT.sub(MASK, text)
    return _SECRET_PAIR.sub(lambda m: f"{m['key']}{m['sep']}{MASK}", text)


def _is_secret_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    words = [word.lower() for word in _KEY_WORD.findall(key)]
    if not words or words[-1] in _REFERENCE_WORDS:
        return False
    singular = [word.removesuffix("s") if len(word) > 4 else word for word in words]
    return any(word in _SECRET_WORDS for word in singular) or any(
        pair in _SECRET_WORD_PAIRS for pair in pairwise(singular)
    )


def redact(value: Any, _depth: int = 0) -> Any:
    """Return `value` with every secret masked; containers are copied, never mutated."""
    if _depth > 20:
        return MASK  # pathological nesting: masking beats risking a leak
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {
            key: MASK
            if _is_secret_key(key) and item not in (None, "")
            else redact(item, _depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(item, _depth + 1) for item in value]
    if isinstance(value, bytes | bytearray):
        return redact_text(bytes(value).decode("utf-8", "replace"))
    if value is None or isinstance(value, bool | int | float):
        return value
    # Anything else (exceptions, SecretStr, URLs, models) is logged by its redacted text.
    return redact_text(str(value))


def _redact_event(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    return {
        key: (MASK if _is_secret_key(key) and item not in (None, "") else redact(item))
        for key, item in event_dict.items()
    }


def _iso_utc_timestamp(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    now = datetime.now(UTC)
    event_dict["timestamp"] = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    return event_dict


def _event_to_message(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    event_dict["message"] = str(event_dict.pop("event", ""))
    return event_dict


_run_log = logging.getLogger("avian_workers.run")


def _mirror_to_prefect_run_log(_: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """Inside a flow or task run, send the (already redacted) event to the Prefect run log too."""
    try:
        from prefect.context import FlowRunContext, TaskRunContext
    except ImportError:  # pragma: no cover - prefect is a hard dependency
        return event_dict
    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return event_dict
    context = {k: v for k, v in event_dict.items() if k not in {"message", "level", "timestamp"}}
    suffix = " ".join(f"{k}={v}" for k, v in context.items())
    message = f"{event_dict.get('message', '')} {suffix}".rstrip()
    _run_log.log(logging.getLevelNamesMapping().get(method.upper(), logging.INFO), message)
    return event_dict


def _install_prefect_handler() -> None:
    if any(h.__class__.__name__ == "APILogHandler" for h in _run_log.handlers):
        return
    from prefect.logging.handlers import APILogHandler

    _run_log.addHandler(APILogHandler())
    _run_log.setLevel(logging.DEBUG)
    _run_log.propagate = False  # stdout already has the JSON line


class _CurrentStdout(io.TextIOBase):
    """Whatever `sys.stdout` is at write time, so a replaced (and later closed) stdout is never kept."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


def configure_logging(
    level: str = "info",
    *,
    stream: TextIO | None = None,
    context: Mapping[str, Any] | None = None,
    mirror_to_prefect: bool = True,
) -> None:
    """Set up structlog once per process: JSON lines on `stream` (stdout), optional Prefect mirror."""
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.format_exc_info,
        _redact_event,
        _event_to_message,
        _iso_utc_timestamp,
    ]
    if mirror_to_prefect:
        _install_prefect_handler()
        processors.append(_mirror_to_prefect_run_log)
    processors.append(structlog.processors.JSONRenderer(sort_keys=False))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.WriteLoggerFactory(file=stream or cast(TextIO, _CurrentStdout())),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    if context:
        structlog.contextvars.bind_contextvars(**context)


def get_logger(**initial: Any) -> structlog.typing.FilteringBoundLogger:
    """A logger bound to `initial` context."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(**initial)
    return logger


def bind(**context: Any) -> None:
    """Add context (e.g. workerType) to every later line of this thread or task."""
    structlog.contextvars.bind_contextvars(**context)
