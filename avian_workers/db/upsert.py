"""Bulk, idempotent upserts on the contract's unique keys.

A rerun with the same rows must leave the table exactly as it was, so an update only happens when
some column really changed (`WHERE ... IS DISTINCT FROM excluded...`): unchanged rows keep their
`updated_at` and produce no dead tuples.

A batch is one statement with one parameter: the rows as a JSON array (serialised in C by
orjson), unpacked by PostgreSQL's `jsonb_to_recordset` into the table's column types. Sent as an
executemany, every row cost a statement execution and per-row parameter handling in SQLAlchemy
and psycopg, several times the CPU of the insert itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from operator import itemgetter
from typing import Any

import orjson
from sqlalchemy import (
    Connection,
    Table,
    Text,
    and_,
    bindparam,
    cast,
    column,
    func,
    or_,
    select,
    tuple_,
)
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.sql.elements import ColumnElement

Merge = Callable[[ColumnElement[Any], ColumnElement[Any]], ColumnElement[Any]]
"""The value an upsert writes to a column, from (stored column, incoming value)."""


def _table(target: Table | type[DeclarativeBase]) -> Table:
    if isinstance(target, Table):
        return target
    table = target.__table__
    assert isinstance(table, Table)
    return table


def dedupe_on_key(rows: Iterable[Mapping[str, Any]], key: Sequence[str]) -> list[dict[str, Any]]:
    """Keep the last row per key: PostgreSQL refuses to update one row twice in a statement."""
    key_of = itemgetter(*key)
    by_key: dict[Any, dict[str, Any]] = {}
    for row in rows:
        by_key[key_of(row)] = dict(row)
    return list(by_key.values())


def _json_default(value: object) -> str:
    # Decimal travels as its exact text; PostgreSQL reads it into numeric without float error.
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} cannot be sent as JSON")


def rows_json(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows as one JSON array for `jsonb_to_recordset` (UUIDs, datetimes, Decimals included)."""
    return orjson.dumps(rows, default=_json_default).decode()


def upsert(
    conn: Connection,
    target: Table | type[DeclarativeBase],
    rows: Iterable[Mapping[str, Any]],
    *,
    key: Sequence[str],
    update: Sequence[str] | None = None,
    touch: str | None = "updated_at",
    returning: Sequence[str] = (),
    merge: Mapping[str, Merge] | None = None,
) -> list[tuple[Any, ...]]:
    """Insert `rows` or update the existing row with the same `key`; returns `returning` columns.

    `update` defaults to every column given in the rows except the key. `merge` gives, per
    updated column, the new value from the stored and the incoming one (e.g. GREATEST) where
    the incoming value must not simply win. `touch`, when the table has that column, is set to
    now() only on rows whose values changed. Rows returned are those inserted or changed
    (unchanged rows are not returned by PostgreSQL).
    """
    table = _table(target)
    batch = dedupe_on_key(rows, key)
    if not batch:
        return []
    names = list(batch[0])
    columns = update if update is not None else [c for c in names if c not in key]
    incoming = (
        func.jsonb_to_recordset(cast(bindparam("rows", type_=Text), JSONB))
        .table_valued(*(column(name, table.c[name].type) for name in names))
        .render_derived(name="incoming", with_types=True)
    )
    stmt = insert(table).from_select(names, select(*(incoming.c[name] for name in names)))
    excluded = stmt.excluded
    merge = merge or {}
    set_: dict[str, Any] = {
        name: merge[name](table.c[name], excluded[name]) if name in merge else excluded[name]
        for name in columns
    }
    changed: list[ColumnElement[bool]] = [
        table.c[name].is_distinct_from(value) for name, value in set_.items()
    ]
    if touch is not None and touch in table.c and touch not in set_:
        set_[touch] = func.now()
    if set_:
        stmt_final = stmt.on_conflict_do_update(
            index_elements=list(key), set_=set_, where=or_(*changed) if changed else None
        )
    else:
        stmt_final = stmt.on_conflict_do_nothing(index_elements=list(key))
    parameters = {"rows": rows_json(batch)}
    if returning:
        result = conn.execute(
            stmt_final.returning(*(table.c[name] for name in returning)), parameters
        )
        return [tuple(r) for r in result.all()]
    conn.execute(stmt_final, parameters)
    return []


def key_filter(
    table: Table, key: Sequence[str], values: Iterable[tuple[Any, ...]]
) -> ColumnElement[bool]:
    """`(k1, k2) IN (...)` for looking rows up by a composite key."""
    vals = list(values)
    if len(key) == 1:
        return table.c[key[0]].in_([v[0] for v in vals])
    return and_(tuple_(*(table.c[k] for k in key)).in_(vals))
