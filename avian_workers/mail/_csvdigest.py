"""CSV digests: an attachment with one event per row and a header naming the columns."""

from __future__ import annotations

import csv
import io
from collections.abc import Collection
from dataclasses import dataclass

from avian_workers.mail._fields import MAX_VALUE_CHARS, field_key

_DELIMITERS = (",", ";", "\t")


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
    text = text.removeprefix("\ufeff")
    header_line = next((line for line in text.splitlines() if line.strip()), "")
    delimiter = max(_DELIMITERS, key=header_line.count)
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
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
