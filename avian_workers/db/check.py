"""`db check`: does a live database have every table, column and type the workers need, and may
the workers' role do what they do there?"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, inspect, text
from sqlalchemy.dialects import postgresql

from avian_workers.db.models import Base

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class SchemaProblem:
    """One difference between the live database and what the workers need."""

    table: str
    column: str | None
    problem: str

    def __str__(self) -> str:
        where = f"{self.table}.{self.column}" if self.column else self.table
        return f"{where}: {self.problem}"


def _type_name(type_: object) -> str:
    compile_ = getattr(type_, "compile")  # noqa: B009 - every SQLAlchemy type has it
    return str(compile_(dialect=_DIALECT)).upper().replace(" ", "")


def find_schema_problems(engine: Engine) -> list[SchemaProblem]:
    """Every missing table, missing column and type mismatch, in a stable order."""
    inspector = inspect(engine)
    problems: list[SchemaProblem] = []
    for table in sorted(Base.metadata.sorted_tables, key=lambda t: t.fullname):
        if not inspector.has_table(table.name, schema=table.schema):
            problems.append(SchemaProblem(table.fullname, None, "table is missing"))
            continue
        live = {c["name"]: c for c in inspector.get_columns(table.name, schema=table.schema)}
        for column in table.columns:
            found = live.get(column.name)
            if found is None:
                problems.append(SchemaProblem(table.fullname, column.name, "column is missing"))
                continue
            expected, actual = _type_name(column.type), _type_name(found["type"])
            if expected != actual:
                problems.append(
                    SchemaProblem(
                        table.fullname,
                        column.name,
                        f"type is {actual}, the workers need {expected}",
                    )
                )
            if not column.nullable and found["nullable"] and not column.primary_key:
                problems.append(
                    SchemaProblem(table.fullname, column.name, "is nullable, expected NOT NULL")
                )
    return problems + _privilege_problems(engine)


def _privilege_problems(engine: Engine) -> list[SchemaProblem]:
    with engine.connect() as conn:
        database, may_stage = conn.execute(
            text(
                "SELECT current_database(), has_database_privilege(current_database(), 'TEMPORARY')"
            )
        ).one()
    if may_stage:
        return []
    return [
        SchemaProblem(
            f"database {database}",
            None,
            "the workers' role may not create temporary tables (GRANT TEMPORARY ON DATABASE):"
            " metrics-aggregation stages each day's rollup rows in one",
        )
    ]
