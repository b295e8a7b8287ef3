"""Labelled values in alert bodies: "Key: Value" lines, with keys normalised to snake_case."""

from __future__ import annotations

import re

MAX_FIELDS = 100
MAX_VALUE_CHARS = 1000

_LABEL = re.compile(r"[^\W\d_][\w ./()&#'-]{0,47}")
_NOT_WORD = re.compile(r"[\W_]+")
_MAX_LABEL_WORDS = 6


def field_key(label: str) -> str:
    """`Serial Number` -> `serial_number`, `S/N` -> `s_n`, `srcMac` -> `srcmac`."""
    return _NOT_WORD.sub("_", label.lower()).strip("_")


def labelled_fields(text: str) -> dict[str, str]:
    """The "Label: value" lines of `text` by normalised label; the first of a repeated label wins.

    A label starts with a letter (any script), is at most six words and holds no `=` or quote, so prose,
    numbered steps ("3. Select device serial number: ...") and log lines are not read as labels.
    Section headings ("Device Information:") have no value and are skipped.
    """
    fields: dict[str, str] = {}
    for line in text.splitlines():
        label, colon, value = line.partition(":")
        if not colon:
            continue
        label = label.strip()
        value = value.strip()
        if not value or not _LABEL.fullmatch(label) or len(label.split()) > _MAX_LABEL_WORDS:
            continue
        key = field_key(label)
        if key and key not in fields:
            fields[key] = value[:MAX_VALUE_CHARS]
            if len(fields) >= MAX_FIELDS:
                break
    return fields
