"""Which processes are still alive, from /proc (zombies count as gone: they no longer run)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    state: str
    process_group: int
    session: int
    command: str


def process_info(pid: int) -> ProcessInfo | None:
    """The process `pid`, or None when it does not exist or is a zombie."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
        command = (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses.
    fields = stat[stat.rindex(")") + 2 :].split()
    state, process_group, session = fields[0], int(fields[2]), int(fields[3])
    if state in {"Z", "X"}:
        return None
    return ProcessInfo(pid, state, process_group, session, command.strip())


def living_processes() -> list[ProcessInfo]:
    found = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            info = process_info(int(entry.name))
            if info is not None:
                found.append(info)
    return found


def in_session(session: int) -> list[ProcessInfo]:
    """Every living process of a session (a process started with start_new_session=True and
    everything it started, unless something detached itself with setsid)."""
    return [p for p in living_processes() if p.session == session]


def in_group(group: int) -> list[ProcessInfo]:
    return [p for p in living_processes() if p.process_group == group]


def is_alive(pid: int) -> bool:
    return process_info(pid) is not None
