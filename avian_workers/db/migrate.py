"""`db upgrade`: apply the Alembic migrations shipped with the workers."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from avian_workers.settings import Settings


def _script_location() -> Path:
    # A source checkout keeps migrations/ at the top; an installed wheel carries a copy inside.
    here = Path(__file__).resolve()
    for candidate in (here.parents[2] / "migrations", here.parents[1] / "_migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("the migrations directory is missing from this installation")


def alembic_config(settings: Settings) -> Config:
    """An Alembic config pointing at our migrations and DATABASE_URL."""
    config = Config()
    config.set_main_option("script_location", str(_script_location()))
    # Not used by env.py (it builds its own engine); kept for alembic commands that inspect it.
    config.attributes["settings"] = settings
    return config


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Bring the database to `revision`; safe to run again (no-op when already there)."""
    command.upgrade(alembic_config(settings), revision)


def current_revision_heads(settings: Settings) -> tuple[str, ...]:
    """The revisions this installation would upgrade to."""
    from alembic.script import ScriptDirectory

    return tuple(ScriptDirectory.from_config(alembic_config(settings)).get_heads())
