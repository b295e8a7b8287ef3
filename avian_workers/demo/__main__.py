"""`python -m avian_workers.demo` (what `make demo` runs): see docs/demo.md.

Prefect reads its settings when it is first imported, so the environment it needs (its home
under the data directory, analytics off, a quiet console) is set here before anything imports
it; only then is the demo itself imported.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

DEFAULT_DATA_DIR = ".demo"
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


def prefect_environment(data_dir: Path, *, verbose: bool) -> dict[str, str]:
    """Prefect's settings for the demo; PREFECT_HOME only when no PREFECT_API_URL is set."""
    env = {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    }
    if not os.environ.get("PREFECT_API_URL"):
        env["PREFECT_HOME"] = str(data_dir / "prefect")
    if not verbose:
        # Run logs still reach the Prefect API (and its UI); the terminal shows the summary.
        env["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "CRITICAL"
    return env


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m avian_workers.demo",
        description="Run the three workers through Prefect on services started for the demo.",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("AVIAN_DEMO_DIR", DEFAULT_DATA_DIR)),
        help="where PostgreSQL, Redis, Prefect and the logs keep their data between runs "
        f"(default: $AVIAN_DEMO_DIR or {DEFAULT_DATA_DIR})",
    )
    parser.add_argument(
        "--days",
        type=int,
        default=3,
        help="finished UTC days the metrics backfill covers (default: 3)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show the workers' JSON log lines and Prefect's console output",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.days < 1:
        _parser().error("--days must be at least 1")
    data_dir: Path = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ.update(prefect_environment(data_dir, verbose=args.verbose))

    from rich.console import Console

    from avian_workers.demo.services import TemporaryPrefectServer, signals_ignored

    # Bound to the real stdout: the workers' output is redirected while they run.
    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 140, highlight=False)
    console.print(f"[bold]AVIAN workers demo[/]: data in {data_dir}")
    prefect = None
    try:
        if not os.environ.get("PREFECT_API_URL"):
            # It takes longest to start: launched before the demo's own (slow) imports.
            prefect = TemporaryPrefectServer(data_dir / "logs" / "prefect.log")
            prefect.start_in_background()
        from avian_workers.demo.run import DemoOptions, run_demo

        return run_demo(DemoOptions(data_dir, args.days, args.verbose), console, prefect)
    except KeyboardInterrupt:
        if prefect is not None:
            with signals_ignored():
                prefect.stop()  # already stopped, unless Ctrl-C came during the imports
        console.print("[yellow]Interrupted[/]: every service the demo started is stopped.")
        return EXIT_INTERRUPTED
    finally:
        if prefect is not None:
            prefect.stop()  # already stopped by the demo; here for an error during the imports


if __name__ == "__main__":
    sys.exit(main())
