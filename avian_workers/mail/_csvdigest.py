"""CSV digests: an attachment with one event per row and a header naming the columns."""

from __future__ import annotations

import csv
import io
from collections.abc import Collection
from dataclasses import dataclass

from avian_workers.mail._fields import MAX_VALUE_CHARS, field_key

_DELIMITERS = (",", ";", "\t")
_HEADER_SEARCH_LINES = 5
"""Lines the header may come after: a title ('SonicWall Log Digest') or Excel's 'sep=;'."""


class DigestError(ValueError):
    """A CSV digest that cannot be read completely."""


@dataclass(frozen=True)
class DigestRow:
    """One event of a digest: its 1-based data row number and its non-empty cells by column."""

    number: int
    fields: dict[str, str]


def digest_rows(text: str, event_columns: Collection[str], max_rows: int) -> list[DigestRow] | None:
    """The rows of a CSV digest, or None when `text` has no header naming an event column.

    Raises DigestError when the CSV is malformed or has more than `max_rows` rows: a digest
    is read entirely or not at all, so no event of it is silently lost.
    """
    lines = text.removeprefix("\ufeff").splitlines(keepends=True)
    start = _header_start(lines, event_columns)
    if start is None:
        return None
    first, delimiter = start
    reader = csv.reader(io.StringIO("".join(lines[first:])), delimiter=delimiter)
    rows: list[DigestRow] = []
    try:
        header: list[str] | None = None
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue
            if header is None:
                header = [field_key(cell) for cell in cells]
                if not set(header) & set(event_columns):
                    return None
                continue
            if len(rows) == max_rows:
                raise DigestError(f"more than {max_rows} rows")
            fields: dict[str, str] = {}
            for key, cell in zip(header, cells, strict=False):
                value = cell.strip()
                if key and value and key not in fields:
                    fields[key] = value[:MAX_VALUE_CHARS]
            rows.append(DigestRow(number=len(rows) + 1, fields=fields))
    except csv.Error as error:
        raise DigestError(f"malformed CSV at line {reader.line_num}: {error}") from error
    return rows


def _header_start(lines: list[str], event_columns: Collection[str]) -> tuple[int, str] | None:
    """Where the header is among the first lines, and the delimiter; None when none names an
    event column."""
    named: str | None = None
    for number, line in enumerate(lines[:_HEADER_SEARCH_LINES]):
        stripped = line.strip()
        if not stripped:
            continue
        if len(stripped) == 5 and stripped.lower().startswith("sep="):
            named = stripped[4]
            continue
        delimiter = named or max(_DELIMITERS, key=line.count)
        try:
            cells = next(csv.reader([line], delimiter=delimiter), [])
        except csv.Error:
            continue
        if {field_key(cell) for cell in cells} & set(event_columns):
            return number, delimiter
    return None
