"""Bulk, idempotent upserts on the contract's unique keys.

A rerun with the same rows must leave the table exactly as it was, so an update only happens when
some column really changed (`WHERE ... IS DISTINCT FROM excluded...`): unchanged rows keep their
`updated_at` and produce no dead tuples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Table, and_, func, or_, tuple_
from sqlalchemy.dialects.postgresql import insert
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
    by_key: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        by_key[tuple(row[k] for k in key)] = dict(row)
    return list(by_key.values())


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
    columns = update if update is not None else [c for c in batch[0] if c not in key]
    stmt = insert(table)
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
    if returning:
        result = conn.execute(stmt_final.returning(*(table.c[name] for name in returning)), batch)
        return [tuple(r) for r in result.all()]
    conn.execute(stmt_final, batch)
    return []


def key_filter(
    table: Table, key: Sequence[str], values: Iterable[tuple[Any, ...]]
) -> ColumnElement[bool]:
    """`(k1, k2) IN (...)` for looking rows up by a composite key."""
    vals = list(values)
    if len(key) == 1:
        return table.c[key[0]].in_([v[0] for v in vals])
    return and_(tuple_(*(table.c[k] for k in key)).in_(vals))
