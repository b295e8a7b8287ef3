"""`avian-workers`: run a worker, migrate or check the database."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from avian_workers.settings import WORKER_TYPES, ConfigError, load_settings


def _parse_parameter(item: str) -> tuple[str, Any]:
    """`key=value` → (key, value); values that are JSON (numbers, lists, true) are decoded."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"parameter {item!r} must look like name=value")
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    if "," in raw and isinstance(value, str):
        value = [part.strip() for part in raw.split(",") if part.strip()]
    return key.lstrip("-").replace("-", "_"), value


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avian-workers", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run one worker's Prefect flow in this process")
    run.add_argument("worker", choices=WORKER_TYPES)
    run.add_argument(
        "parameters",
        nargs="*",
        type=_parse_parameter,
        metavar="name=value",
        help="flow parameters, e.g. start_date=2026-11-01 tenant_ids=<uuid>,<uuid>",
    )

    db = commands.add_parser("db", help="database schema")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("upgrade", help="create or upgrade the tables the workers need")
    db_commands.add_parser("check", help="list missing tables, columns and type mismatches")

    automations = commands.add_parser("automations", help="Prefect alerting automations")
    automation_commands = automations.add_subparsers(dest="automations_command", required=True)
    sync = automation_commands.add_parser(
        "sync", help="create or update the failure, duration and no-run automations"
    )
    sync.add_argument("--notification-block-id", type=UUID, default=None)

    from blocks import cli as blocks_cli

    blocks_cli.add_parser(commands)
    return parser


def _db(command: str) -> int:
    from avian_workers.db.check import find_schema_problems
    from avian_workers.db.engine import make_engine
    from avian_workers.db.migrate import upgrade

    settings = load_settings()
    settings.require("DATABASE_URL")
    if command == "upgrade":
        upgrade(settings)
        print("database is up to date")
        return 0
    engine = make_engine(settings, pool_size=1)
    try:
        problems = find_schema_problems(engine)
    finally:
        engine.dispose()
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s): run `avian-workers db upgrade` or fix the schema")
        return 1
    print("database has every table and column the workers need")
    return 0


def _sync_automations(notification_block_id: UUID | None) -> int:
    from avian_workers.observability.automations import sync_automations

    try:
        result = sync_automations(notification_block_id)
    except LookupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"automations: {len(result.created)} created, {len(result.updated)} updated, "
        f"{len(result.unchanged)} unchanged, {len(result.deleted)} deleted"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "run":
            from flows._runner import run_worker

            return run_worker(args.worker, dict(args.parameters))
        if args.command == "blocks":
            from blocks import cli as blocks_cli

            return blocks_cli.run(args)
        if args.command == "automations":
            return _sync_automations(args.notification_block_id)
        return _db(args.db_command)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
