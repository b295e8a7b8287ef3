"""How far a run's long step has got: a Prefect progress artifact, a terminal bar, log lines.

A flow opens one `ProgressReporter` per long step (tenants polled, messages processed, days
aggregated) and calls `advance` as units finish, from any thread. The reporter drives:

* inside a flow run, a Prefect progress artifact (`<worker>-progress`): created at 0 when the
  step starts, updated by a background thread at most every PROGRESS_ARTIFACT_SECONDS and only
  when a whole percent changed (a 10,000-message run makes at most about a hundred API calls),
  and set to 100 when the step ends, finished or stopped (its description says which);
* under `terminal_progress` (the CLI, when stderr is a terminal) a rich progress bar, with log
  lines and Prefect's console lines printed above it;
* otherwise (ECS, CI) a structured "Progress" log line at most every PROGRESS_LOG_SECONDS.

Advancing only counts under a lock; every API call and log line happens in the reporter's own
thread, which carries the flow run's context (the caller may be a pool thread without one).
Progress is never worth failing a run: an artifact the API refuses is logged and dropped.
"""

from __future__ import annotations

import contextvars
import io
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Protocol, Self, TextIO, cast
from uuid import UUID

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from avian_workers.logs import get_logger

if TYPE_CHECKING:
    from prefect.futures import PrefectFuture

# Prefect is imported where it is used, so domain code can take a StepProgress without it.

__all__ = [
    "NO_PROGRESS",
    "ArtifactWriter",
    "ProgressReporter",
    "ProgressSnapshot",
    "StepProgress",
    "Throttle",
    "prefect_progress_artifact",
    "terminal_progress",
]


class StepProgress(Protocol):
    """What a long step reports as it goes (domain code sees only this)."""

    def expect(self, total: int) -> None:
        """`total` units are ahead; counting starts again (a retried step counts anew)."""

    def advance(self, count: int = 1) -> None:
        """`count` more units are finished."""


class _NoProgress:
    def expect(self, total: int) -> None:
        return None

    def advance(self, count: int = 1) -> None:
        return None


NO_PROGRESS: StepProgress = _NoProgress()
"""For callers that have nobody to report to."""


# --- pure logic -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ProgressSnapshot:
    """Units finished of a step, out of `total` when known."""

    label: str
    done: int
    total: int | None

    @property
    def percent(self) -> int:
        """Whole percent reached (0 while the total is unknown, 100 for an empty step)."""
        if self.total is None:
            return 0
        if self.total <= 0:
            return 100
        return min(100, self.done * 100 // self.total)

    def describe(self, *, final: bool = False, failed: bool = False) -> str:
        """E.g. '12 of 40 tenants polled'; 'stopped after ...' for a step that ended short."""
        text = f"{self.done} {self.label}"
        if self.total is not None:
            text = f"{self.done} of {self.total} {self.label}"
        short = failed or (self.total is not None and self.done < self.total)
        return f"stopped after {text}" if final and short else text


@dataclass
class Throttle:
    """Whether a value is worth publishing: it differs from the last one published, and at
    least `interval` seconds have passed since then."""

    interval: float
    last_value: object
    last_at: float

    def due(self, value: object, now: float) -> bool:
        return value != self.last_value and now - self.last_at >= self.interval

    def mark(self, value: object, now: float) -> None:
        self.last_value, self.last_at = value, now


# --- the Prefect artifact -------------------------------------------------------------------


class ArtifactWriter(Protocol):
    """Where the step's percentage is published (a Prefect progress artifact)."""

    def create(self, percent: float, description: str) -> None: ...

    def update(self, percent: float, description: str) -> None: ...


class _PrefectProgressArtifact:
    """A keyed progress artifact of the current flow (or task) run."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._id: UUID | None = None

    def create(self, percent: float, description: str) -> None:
        from prefect.artifacts import create_progress_artifact

        created = create_progress_artifact(percent, key=self.key, description=description)
        self._id = created if isinstance(created, UUID) else None  # sync call: an id

    def update(self, percent: float, description: str) -> None:
        from prefect.artifacts import update_progress_artifact

        if self._id is not None:
            update_progress_artifact(self._id, percent, description=description)


def prefect_progress_artifact(key: str) -> ArtifactWriter | None:
    """A progress artifact named `key` when running inside a flow run, else None."""
    from prefect.context import FlowRunContext, TaskRunContext

    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return None
    return _PrefectProgressArtifact(key)


# --- the reporter ---------------------------------------------------------------------------


class ProgressReporter:
    """One long step's progress; thread-safe; a context manager that starts and finishes it."""

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        artifact: ArtifactWriter | None = None,
        artifact_seconds: float = 5.0,
        log_seconds: float = 60.0,
        tick_seconds: float | None = 1.0,
        finish_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`tick_seconds` is how often the background thread looks (None: no thread);
        `finish_seconds` bounds how long finish() waits for the Prefect API."""
        self.label = label
        self._done = 0
        self._total = total
        self._lock = threading.Lock()
        self._artifact = artifact
        self._artifact_seconds = artifact_seconds
        self._log_seconds = log_seconds
        self._tick = tick_seconds
        self._finish_seconds = finish_seconds
        self._clock = clock
        self._artifact_throttle: Throttle | None = None
        self._log_throttle: Throttle | None = None
        self._display: _TerminalDisplay | None = None
        self._bar: TaskID | None = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = "new"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.finish(failed=exc_type is not None)

    def snapshot(self) -> ProgressSnapshot:
        with self._lock:
            return ProgressSnapshot(self.label, self._done, self._total)

    def start(self) -> Self:
        """Create the artifact at 0, show the bar (or plan log lines), start the publisher."""
        if self._state != "new":
            return self
        self._state = "open"
        now, first = self._clock(), self.snapshot()
        if self._artifact is not None:
            self._artifact_throttle = Throttle(
                self._artifact_seconds, self._artifact_value(first), now
            )
            self._write_artifact(first.percent, first.describe(), create=True)
        self._display = _Active.display
        if self._display is not None:
            self._bar = self._display.add(self.label, self._total)
        elif self._log_seconds > 0:
            self._log_throttle = Throttle(self._log_seconds, first.done, now)
        if self._tick is not None and (self._artifact is not None or self._log_throttle):
            context = contextvars.copy_context()  # the flow run's, for the API client and logs
            self._thread = threading.Thread(
                target=context.run,
                args=(self._publish_until_stopped,),
                name=f"progress: {self.label}",
                daemon=True,
            )
            self._thread.start()
        return self

    def expect(self, total: int) -> None:
        with self._lock:
            self._total, self._done = total, 0
            self._show()

    def advance(self, count: int = 1) -> None:
        with self._lock:
            self._done += count
            self._show()

    def count_done(self, futures: Iterable[PrefectFuture[Any]]) -> None:
        """Advance by one as each of `futures` finishes, in whatever order they do."""
        for future in futures:
            future.add_done_callback(lambda _: self.advance())

    def publish_if_due(self) -> None:
        """Publish what changed enough since the last time (the background thread's tick)."""
        snapshot, now = self.snapshot(), self._clock()
        throttle = self._artifact_throttle
        if throttle is not None and throttle.due(self._artifact_value(snapshot), now):
            throttle.mark(self._artifact_value(snapshot), now)
            self._write_artifact(snapshot.percent, snapshot.describe())
        if self._log_throttle is not None and self._log_throttle.due(snapshot.done, now):
            self._log_throttle.mark(snapshot.done, now)
            get_logger().info(
                f"Progress: {snapshot.describe()}",
                label=self.label,
                done=snapshot.done,
                total=snapshot.total,
                percent=snapshot.percent if snapshot.total is not None else None,
            )

    def finish(self, *, failed: bool = False) -> None:
        """The step is over: the artifact reads 100 and says how far it got; the bar stops."""
        if self._state != "open":
            self._state = "finished"
            return
        self._state = "finished"
        self._stopped.set()
        if self._display is not None and self._bar is not None:
            self._display.remove(self._bar)
        # The run's work is done: a Prefect API that is slow to answer (its client retries for
        # minutes) may delay the run by finish_seconds at most, then the update is left behind.
        deadline = time.monotonic() + self._finish_seconds
        if self._thread is not None:
            self._thread.join(self._finish_seconds)
            if self._thread.is_alive():
                self._give_up_on_artifact()
                return
        final = self.snapshot()
        if self._artifact is None:
            return
        last = threading.Thread(
            target=contextvars.copy_context().run,
            args=(self._write_artifact, 100.0, final.describe(final=True, failed=failed)),
            name=f"progress: {self.label} (final)",
            daemon=True,
        )
        last.start()
        last.join(max(0.0, deadline - time.monotonic()))
        if last.is_alive():
            self._give_up_on_artifact()

    def _give_up_on_artifact(self) -> None:
        self._artifact = None
        get_logger().warning(
            "Progress artifact left behind: the Prefect API did not answer in time",
            label=self.label,
            waitedSeconds=self._finish_seconds,
        )

    def _publish_until_stopped(self) -> None:
        assert self._tick is not None
        while not self._stopped.wait(self._tick):
            self.publish_if_due()

    def _show(self) -> None:
        """Move the bar to the current count (under the lock, so updates never go backwards)."""
        if self._display is not None and self._bar is not None:
            self._display.update(self._bar, self._done, self._total)

    @staticmethod
    def _artifact_value(snapshot: ProgressSnapshot) -> tuple[int, int | None]:
        return snapshot.percent, snapshot.total

    def _write_artifact(self, percent: float, description: str, *, create: bool = False) -> None:
        artifact = self._artifact
        if artifact is None:
            return
        try:
            if create:
                artifact.create(float(percent), description)
            else:
                artifact.update(float(percent), description)
        except Exception as exc:  # progress is never worth failing the run
            self._artifact = None
            get_logger().warning("Progress artifact not updated", error=str(exc))


# --- the terminal ---------------------------------------------------------------------------


class _Active:
    """The terminal display of this process while `terminal_progress` is open (one at most)."""

    display: _TerminalDisplay | None = None


class _TerminalDisplay:
    """rich progress bars on a terminal, live while at least one step is running."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        self._bars = 0
        self._rerouted: list[tuple[Console, Any]] = []

    @property
    def live(self) -> bool:
        return self._progress is not None

    def add(self, label: str, total: int | None) -> TaskID:
        with self._lock:
            if self._progress is None:
                self._progress = Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TaskProgressColumn(),
                    TimeElapsedColumn(),
                    console=self.console,
                    redirect_stdout=False,  # stdout keeps its JSON lines: see _ConsoleLines
                    redirect_stderr=False,
                )
                self._progress.start()
                self._reroute_prefect_console()
            self._bars += 1
            return self._progress.add_task(label, total=total)

    def update(self, bar: TaskID, done: int, total: int | None) -> None:
        progress = self._progress
        if progress is not None:
            progress.update(bar, completed=done, total=total)

    def remove(self, bar: TaskID) -> None:
        with self._lock:
            progress = self._progress
            if progress is None:
                return
            progress.stop_task(bar)
            self._bars -= 1
            if self._bars == 0:
                progress.stop()  # the last frame stays on screen
                self._progress = None
                self._restore_prefect_console()

    def print_line(self, line: str, *, ansi: bool) -> bool:
        """Print `line` above the bars; False when no bar is showing (write it yourself)."""
        progress = self._progress
        if progress is None:
            return False
        text = Text.from_ansi(line) if ansi else Text(line)
        # soft_wrap: a JSON log line longer than the terminal stays one line
        progress.console.print(text, soft_wrap=True, highlight=False)
        return True

    def _reroute_prefect_console(self) -> None:
        """Prefect's console log handler writes to the terminal with a console of its own: route
        it above the bars while they show, so its lines do not tear them."""
        from prefect.logging.handlers import PrefectConsoleHandler

        handlers = {
            handler
            for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
            if isinstance(logger, logging.Logger)
            for handler in logger.handlers
            if isinstance(handler, PrefectConsoleHandler)
        }
        for handler in handlers:
            original = handler.console.file
            if original.isatty():
                self._rerouted.append((handler.console, original))
                handler.console.file = cast("TextIO", _ConsoleLines(original, self, ansi=True))

    def _restore_prefect_console(self) -> None:
        for console, original in self._rerouted:
            console.file = original
        self._rerouted.clear()


class _ConsoleLines(io.TextIOBase):
    """A text stream whose lines go above the progress bars while they show, else to `file`."""

    def __init__(self, file: IO[str], display: _TerminalDisplay, *, ansi: bool) -> None:
        super().__init__()
        self._file = file
        self._display = display
        self._ansi = ansi
        self._partial = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            if not self._display.live:
                self._file.write(self._partial + text)
                self._partial = ""
                return len(text)
            *lines, self._partial = (self._partial + text).split("\n")
            for line in lines:
                if not self._display.print_line(line, ansi=self._ansi):
                    self._file.write(line + "\n")
            return len(text)

    def flush(self) -> None:
        with self._lock:
            if self._partial and not self._display.live:
                self._file.write(self._partial)
                self._partial = ""
            self._file.flush()

    def isatty(self) -> bool:
        return self._file.isatty()

    def fileno(self) -> int:
        return self._file.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._file, "encoding", "utf-8")


@contextmanager
def terminal_progress(console: Console | None = None) -> Iterator[None]:
    """While open, long steps show rich progress bars on `console` (default: stderr, and only
    when stderr is a terminal); JSON log lines on a terminal stdout are printed above them."""
    if _Active.display is not None:  # already shown by an outer caller
        yield
        return
    if console is None:
        if not sys.stderr.isatty():
            yield
            return
        console = Console(stderr=True)
    if not console.is_terminal:
        yield
        return
    display = _TerminalDisplay(console)
    stdout = sys.stdout
    # Our loggers write to whatever sys.stdout is at the time, so they reach the bars through
    # this swap; it passes lines through untouched whenever no bar is showing.
    if stdout.isatty():
        sys.stdout = cast("TextIO", _ConsoleLines(stdout, display, ansi=False))
    _Active.display = display
    try:
        yield
    finally:
        _Active.display = None
        sys.stdout = stdout
