"""Shared fixtures: real PostgreSQL, Redis, Dovecot, moto, Prefect and the Microsoft simulator."""

from pathlib import Path

_plugins = ["tests.plugins.services"]
for _name in ("dovecot", "microsoft_simulator"):
    if (Path(__file__).parent / "plugins" / f"{_name}.py").exists():
        _plugins.append(f"tests.plugins.{_name}")
pytest_plugins = _plugins
