"""SonicOS log lines: `key=value` pairs, values with spaces in double quotes.

Example: `id=firewall sn=C0EAE4B2C3F1 time="2025-01-09 10:11:12 UTC" fw=203.0.113.9 pri=1
c=32 m=609 msg="IPS Prevention Alert: ..." src=198.51.100.7:443:X1 dst=10.0.0.5:51514:X0`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from avian_workers.mail._fields import MAX_FIELDS, MAX_VALUE_CHARS, field_key

# A pair starts after whitespace (so `?a=b` inside a URL is not one). A quoted value runs to the
# closing quote or, when that is missing, to the end of the line; no nested quantifiers.
_PAIR = re.compile(r'(?<!\S)([A-Za-z_][\w.-]{0,63})=(?:"([^"\r\n]*)"?|(\S*))')
_PORT = re.compile(r"[0-9]{1,5}")
_MIN_PAIRS = 3
_MAX_PAIRS = 4 * MAX_FIELDS  # repeated keys do not count towards MAX_FIELDS
_EVENT_KEYS = frozenset({"msg", "m"})
_SONICOS_KEYS = frozenset({"id", "sn", "fw", "pri", "time", "c"})


def log_line_fields(line: str) -> dict[str, str] | None:
    """The pairs of a SonicOS log line by normalised key, or None when `line` is not one.

    A log line has at least three pairs, an event (`msg=` or `m=`) and one of the keys every
    SonicOS line carries (`id`, `sn`, `fw`, `pri`, `time`, `c`).
    """
    if "=" not in line:
        return None
    fields: dict[str, str] = {}
    for count, match in enumerate(_PAIR.finditer(line)):
        if count == _MAX_PAIRS:
            break
        key = field_key(match.group(1))
        quoted, bare = match.group(2), match.group(3)
        value = (quoted if quoted is not None else bare).strip()
        if key and value and key not in fields:
            fields[key] = value[:MAX_VALUE_CHARS]
            if len(fields) >= MAX_FIELDS:
                break
    keys = fields.keys()
    if len(fields) < _MIN_PAIRS or not keys & _EVENT_KEYS or not keys & _SONICOS_KEYS:
        return None
    return fields


def endpoint(value: str) -> dict[str, Any]:
    """`198.51.100.7:443:X1` -> ip, port and interface; other shapes keep their text as `raw`."""
    parts = value.split(maxsplit=1)
    token = parts[0] if parts else value
    try:
        return {"ip": ipaddress.ip_address(token).compressed}
    except ValueError:
        pass
    ip_text, _, rest = token.partition(":")
    port_text, _, interface = rest.partition(":")
    try:
        result: dict[str, Any] = {"ip": ipaddress.ip_address(ip_text).compressed}
    except ValueError:
        return {"raw": value}
    if _PORT.fullmatch(port_text) and int(port_text) <= 65535:
        result["port"] = int(port_text)
    elif port_text:
        return {"raw": value}
    if interface:
        result["interface"] = interface
    return result
