"""Progress of a long step: throttled artifact updates, a final 100, bars and log lines."""

import io
import json
import sys
import threading
from typing import Any

import pytest
from rich.console import Console

from avian_workers.logs import configure_logging, get_logger
from avian_workers.observability.progress import (
    ProgressReporter,
    ProgressSnapshot,
    Throttle,
    prefect_progress_artifact,
    terminal_progress,
)

ANSI_ESCAPE = "\x1b["


class RecordedArtifact:
    """An artifact writer that keeps what it was sent (stands in for the Prefect API)."""

    def __init__(self) -> None:
        self.created: list[tuple[float, str]] = []
        self.updates: list[tuple[float, str]] = []

    def create(self, percent: float, description: str) -> None:
        self.created.append((percent, description))

    def update(self, percent: float, description: str) -> None:
        self.updates.append((percent, description))


class RefusingArtifact:
    """An artifact writer whose API answers with an error."""

    def create(self, percent: float, description: str) -> None:
        raise RuntimeError("503 from the Prefect API")

    def update(self, percent: float, description: str) -> None:
        raise RuntimeError("503 from the Prefect API")


class StuckArtifact:
    """An artifact writer whose API never answers until the test lets it go."""

    def __init__(self) -> None:
        self.released = threading.Event()

    def create(self, percent: float, description: str) -> None:
        return None

    def update(self, percent: float, description: str) -> None:
        self.released.wait()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def reporter(
    total: int | None = 10,
    *,
    artifact: Any = None,
    clock: Clock | None = None,
    artifact_seconds: float = 5.0,
    log_seconds: float = 60.0,
    label: str = "days aggregated",
) -> ProgressReporter:
    """A reporter without its background thread: the test calls publish_if_due itself."""
    return ProgressReporter(
        label,
        total,
        artifact=artifact,
        artifact_seconds=artifact_seconds,
        log_seconds=log_seconds,
        tick_seconds=None,
        clock=clock or Clock(),
    )


# --- plain logic ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("done", "total", "percent"),
    [(0, 40, 0), (12, 40, 30), (399, 400, 99), (41, 40, 100), (0, 0, 100), (7, None, 0)],
)
def test_percent_is_whole_capped_at_100_and_an_empty_step_is_complete(
    done: int, total: int | None, percent: int
) -> None:
    assert ProgressSnapshot("tenants polled", done, total).percent == percent


def test_description_names_the_counts_and_says_when_a_step_stopped_short() -> None:
    assert ProgressSnapshot("tenants polled", 12, 40).describe() == "12 of 40 tenants polled"
    assert ProgressSnapshot("messages processed", 7, None).describe() == "7 messages processed"
    assert (
        ProgressSnapshot("tenants polled", 12, 40).describe(final=True)
        == "stopped after 12 of 40 tenants polled"
    )
    assert ProgressSnapshot("days aggregated", 3, 3).describe(final=True) == (
        "3 of 3 days aggregated"
    )
    assert ProgressSnapshot("messages processed", 0, None).describe(final=True, failed=True) == (
        "stopped after 0 messages processed"
    )


def test_throttle_publishes_a_change_only_once_the_interval_has_passed() -> None:
    throttle = Throttle(interval=5.0, last_value=0, last_at=0.0)
    assert not throttle.due(0, 100.0)  # unchanged: never
    assert not throttle.due(1, 4.9)  # changed, too soon
    assert throttle.due(1, 5.0)
    throttle.mark(1, 5.0)
    assert not throttle.due(2, 9.0)
    assert throttle.due(2, 10.0)


def test_ten_thousand_units_make_at_most_one_artifact_update_per_whole_percent() -> None:
    artifact = RecordedArtifact()
    progress = reporter(10_000, artifact=artifact, artifact_seconds=0.0).start()
    for _ in range(10_000):
        progress.advance()
        progress.publish_if_due()
    progress.finish()

    assert artifact.created == [(0.0, "0 of 10000 days aggregated")]
    assert len(artifact.updates) <= 101
    percents = [percent for percent, _ in artifact.updates]
    assert percents == sorted(percents)
    assert artifact.updates[-1] == (100.0, "10000 of 10000 days aggregated")


def test_artifact_updates_wait_for_the_interval_and_the_end_is_always_100() -> None:
    artifact, clock = RecordedArtifact(), Clock()
    progress = reporter(10, artifact=artifact, clock=clock, artifact_seconds=5.0).start()
    progress.advance(3)
    clock.now = 4.0
    progress.publish_if_due()
    assert artifact.updates == []
    clock.now = 5.0
    progress.publish_if_due()
    assert artifact.updates == [(30.0, "3 of 10 days aggregated")]
    progress.advance(2)
    clock.now = 6.0  # within the interval, yet the end of the step is published at once
    progress.finish()
    assert artifact.updates[-1] == (100.0, "stopped after 5 of 10 days aggregated")
    progress.finish()  # a second finish changes nothing
    assert len(artifact.updates) == 2


def test_expect_sets_the_total_and_counts_again_from_zero() -> None:
    artifact = RecordedArtifact()
    progress = reporter(None, artifact=artifact, artifact_seconds=0.0).start()
    progress.expect(400)
    progress.advance(200)
    progress.expect(200)  # a retried step: what is left
    progress.advance(100)
    assert progress.snapshot() == ProgressSnapshot("days aggregated", 100, 200)
    progress.publish_if_due()
    assert artifact.updates == [(50.0, "100 of 200 days aggregated")]


def test_advances_from_many_threads_are_all_counted() -> None:
    progress = reporter(8_000).start()
    threads = [
        threading.Thread(target=lambda: [progress.advance() for _ in range(1_000)])
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    progress.finish()
    assert progress.snapshot().done == 8_000


def test_the_background_thread_publishes_and_stops_at_finish() -> None:
    published = threading.Event()

    class Signalling(RecordedArtifact):
        def update(self, percent: float, description: str) -> None:
            super().update(percent, description)
            published.set()

    artifact = Signalling()
    progress = ProgressReporter(
        "tenants polled", 4, artifact=artifact, artifact_seconds=0.0, tick_seconds=0.01
    )
    with progress:
        progress.advance(2)
        assert published.wait(30)
    assert artifact.updates[0] == (50.0, "2 of 4 tenants polled")
    assert artifact.updates[-1] == (100.0, "stopped after 2 of 4 tenants polled")
    assert not any(t.name == "progress: tenants polled" for t in threading.enumerate())


def test_outside_a_flow_run_there_is_no_artifact_and_nothing_fails() -> None:
    assert prefect_progress_artifact("edr-polling-progress") is None
    with ProgressReporter("tenants polled", 2, artifact=None) as progress:
        progress.advance(2)
    assert progress.snapshot().done == 2


def test_an_artifact_the_api_refuses_is_dropped_without_failing_the_step() -> None:
    stream = io.StringIO()
    configure_logging("info", stream=stream, mirror_to_prefect=False)
    progress = reporter(2, artifact=RefusingArtifact(), artifact_seconds=0.0).start()
    progress.advance(2)
    progress.publish_if_due()
    progress.finish()
    warnings = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [w["message"] for w in warnings] == ["Progress artifact not updated"]


def test_a_prefect_api_that_does_not_answer_holds_the_finish_only_so_long() -> None:
    stream = io.StringIO()
    configure_logging("info", stream=stream, mirror_to_prefect=False)
    artifact = StuckArtifact()
    progress = ProgressReporter(
        "days aggregated", 2, artifact=artifact, tick_seconds=None, finish_seconds=0.2
    ).start()
    progress.advance(2)

    progress.finish()  # returns although the final update has not been answered

    artifact.released.set()
    warnings = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [w["message"] for w in warnings] == [
        "Progress artifact left behind: the Prefect API did not answer in time"
    ]


# --- log lines and the terminal ---------------------------------------------------------------


def test_without_a_terminal_a_progress_line_is_logged_at_most_once_per_interval() -> None:
    stream, clock = io.StringIO(), Clock()
    configure_logging("info", stream=stream, mirror_to_prefect=False)
    progress = reporter(40, clock=clock, log_seconds=60.0, label="tenants polled").start()
    progress.advance(12)
    clock.now = 59.0
    progress.publish_if_due()
    assert stream.getvalue() == ""
    clock.now = 60.0
    progress.publish_if_due()
    clock.now = 61.0
    progress.advance()
    progress.publish_if_due()
    progress.finish()
    (line,) = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert line["message"] == "Progress: 12 of 40 tenants polled"
    assert (line["done"], line["total"], line["percent"]) == (12, 40, 30)


def terminal(buffer: io.StringIO) -> Console:
    return Console(file=buffer, force_terminal=True, force_interactive=True, width=100)


def test_on_a_terminal_the_bar_shows_the_label_and_counts_and_no_log_line() -> None:
    screen, logs, clock = io.StringIO(), io.StringIO(), Clock()
    configure_logging("info", stream=logs, mirror_to_prefect=False)
    with terminal_progress(terminal(screen)):
        progress = reporter(3, clock=clock, log_seconds=1.0, label="tenants polled").start()
        progress.advance(2)
        clock.now = 10.0
        progress.publish_if_due()
        progress.advance()
        progress.finish()
    assert "tenants polled" in screen.getvalue()
    assert "3/3" in screen.getvalue()
    assert ANSI_ESCAPE in screen.getvalue()
    assert logs.getvalue() == ""


def test_a_console_that_is_not_a_terminal_shows_no_bar() -> None:
    screen = io.StringIO()
    with terminal_progress(Console(file=screen)), reporter(3, label="tenants polled") as progress:
        progress.advance(3)
    assert screen.getvalue() == ""


class FakeTerminalStdout(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_lines_on_a_terminal_stdout_print_whole_above_the_bar(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stdout, screen = FakeTerminalStdout(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", stdout)
    with terminal_progress(terminal(screen)):
        configure_logging("info", mirror_to_prefect=False)  # as a flow run does, inside
        get_logger().info("before the step")
        with reporter(2, label="days aggregated") as progress:
            get_logger().info("x" * 300)
            progress.advance(2)
        get_logger().info("after the step")
    (shown,) = [line for line in screen.getvalue().splitlines() if "xxx" in line]
    assert json.loads(shown[shown.index("{") :])["message"] == "x" * 300  # one line, unwrapped
    messages = [json.loads(line)["message"] for line in stdout.getvalue().splitlines()]
    assert messages == ["before the step", "after the step"]
    assert sys.stdout is stdout
