"""Bytes to text for mail bodies and headers, whatever charset the mail claims.

Mail lies about its charset (latin-1 bytes labelled utf-8) or names one Python does not know.
Decoding therefore tries the declared charset strictly, then utf-8 and cp1252 strictly, and
ends with latin-1, which maps every byte; a byte order mark overrules the declared charset. The
chain is deterministic and cheap; a statistical detector guesses badly on the short texts
alerts are, and the identifiers we need are ASCII.
"""

from __future__ import annotations

import codecs
import re
from email.errors import HeaderParseError
from email.header import Header, decode_header

_FALLBACK_CHARSETS = ("utf-8", "cp1252")
_LAST_RESORT_CHARSET = "latin-1"

# PostgreSQL text and jsonb reject NUL and lone surrogates; other C0 controls are noise.
_UNSTORABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_WHITESPACE = re.compile(r"\s+")
# decode_header is quadratic in the number of encoded words; real headers are far shorter.
_MAX_HEADER_CHARS = 8192


# A byte order mark says which Unicode encoding the bytes are in, whatever a header declares.
_BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def decode_bytes(data: bytes, declared: str | None) -> tuple[str, str]:
    """The text of `data` and the name of the charset that decoded it."""
    marked = next((charset for bom, charset in _BYTE_ORDER_MARKS if data.startswith(bom)), None)
    if marked is not None:
        declared = marked
    candidates = (declared, *_FALLBACK_CHARSETS) if declared else _FALLBACK_CHARSETS
    for charset in candidates:
        try:
            return data.decode(charset), charset
        except (UnicodeError, LookupError, ValueError):
            # UnicodeError: bytes invalid in this charset; LookupError: unknown name or
            # not a text codec ("base64"); ValueError: names Python cannot even look up.
            continue
    return data.decode(_LAST_RESORT_CHARSET), _LAST_RESORT_CHARSET


def storable(text: str) -> str:
    """`text` without the characters PostgreSQL cannot store (tabs and newlines stay)."""
    return _UNSTORABLE.sub(_replacement, text)


def _replacement(match: re.Match[str]) -> str:
    return "\ufffd" if "\ud800" <= match.group() <= "\udfff" else ""


def one_line(text: str) -> str:
    """`text` storable, with every run of whitespace (folding included) made one space."""
    return _WHITESPACE.sub(" ", storable(text)).strip()


def header_text(value: str | Header | None) -> str | None:
    """A header value with RFC 2047 encoded words decoded, on one line; None when absent."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value[:_MAX_HEADER_CHARS]
    try:
        chunks = decode_header(value)
    except HeaderParseError:
        # A broken encoded word (bad base64): the undecoded value still says something.
        return one_line(str(value))
    parts: list[str] = []
    for chunk, charset in chunks:
        if isinstance(chunk, bytes):
            declared = None if charset in (None, "unknown-8bit") else charset
            parts.append(decode_bytes(chunk, declared)[0])
        else:
            parts.append(chunk)
    return one_line("".join(parts))
