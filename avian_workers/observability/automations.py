"""Prefect automations that watch the workers: the CloudWatch alarms of
`infra/cloudwatch-alarms.yaml`, for operators who live in the Prefect UI.

Per worker, matched on flow runs of the flow named like the worker (so deployment runs and
`avian-workers run` runs that report to the API both count):

- failed: a flow run entered Failed, Crashed or TimedOut;
- too long: a flow run was Running and reached no final state within the worker's
  `max_duration` (measured from the first Running, across retries);
- no run: no flow run started Running within two schedule intervals. Scheduled and Late runs
  do not count, or a stopped work pool would never be noticed: the scheduler keeps creating them.

`sync_automations` makes the server hold exactly these: created when missing, updated when they
differ, left alone when equal, matched by name. Automations tagged `MANAGED_TAG` that are no
longer wanted (a renamed one, a duplicate) are deleted; other automations are never touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

from prefect.automations import (
    AutomationCore,
    DoNothing,
    EventTrigger,
    Posture,
    SendNotification,
)
from prefect.client.orchestration import get_client
from prefect.events.actions import ActionTypes
from prefect.events.filters import AutomationFilter, AutomationFilterName, AutomationFilterTags
from prefect.events.schemas.automations import Automation
from prefect.exceptions import ObjectNotFound

from avian_workers.settings import WorkerType

MANAGED_TAG = "managed-by:avian-workers"
NAME_PREFIX = "avian-workers"

FAILED_STATES = ("Failed", "Crashed", "TimedOut")
FINAL_STATES = ("Completed", "Failed", "Crashed", "Cancelled", "TimedOut")

# Intervals in which a schedule may produce no run before "no run" fires.
MISSED_INTERVALS_TOLERATED = 2


@dataclass(frozen=True)
class RunExpectation:
    """How often a worker runs (its deployment's schedule) and how long a run may take."""

    interval: timedelta
    max_duration: timedelta

    @property
    def silence_window(self) -> timedelta:
        """Without any run for this long, the worker counts as not running."""
        return self.interval * MISSED_INTERVALS_TOLERATED


# Schedules of prefect.yaml; a run should end well before the next one is due.
RUN_EXPECTATIONS: Mapping[WorkerType, RunExpectation] = {
    WorkerType.EDR_POLLING: RunExpectation(
        interval=timedelta(minutes=15), max_duration=timedelta(minutes=12)
    ),
    WorkerType.EMAIL_ALERTS: RunExpectation(
        interval=timedelta(minutes=5), max_duration=timedelta(minutes=4)
    ),
    WorkerType.METRICS_AGGREGATION: RunExpectation(
        interval=timedelta(days=1), max_duration=timedelta(hours=1)
    ),
}

_RUN_LINK = "{{ flow_run|ui_url }}"


@dataclass(frozen=True)
class SyncResult:
    """Names of the automations `sync_automations` created, updated, kept or deleted."""

    created: tuple[str, ...]
    updated: tuple[str, ...]
    unchanged: tuple[str, ...]
    deleted: tuple[str, ...]


def automation_name(worker: WorkerType, condition: str) -> str:
    return f"{NAME_PREFIX} {worker.value}: {condition}"


def desired_automations(notification_block_id: UUID | None = None) -> list[AutomationCore]:
    """The three automations of every worker, notifying through the block when one is given."""
    automations: list[AutomationCore] = []
    for worker, expected in RUN_EXPECTATIONS.items():
        flow_runs = {"prefect.resource.id": "prefect.flow-run.*"}
        of_worker = {"prefect.resource.role": "flow", "prefect.resource.name": worker.value}
        limit = _describe(expected.max_duration)
        window = _describe(expected.silence_window)
        automations += [
            AutomationCore(
                name=automation_name(worker, "run failed"),
                description=f"A flow run of {worker.value} ended Failed, Crashed or TimedOut.",
                tags=[MANAGED_TAG],
                trigger=EventTrigger(
                    match=flow_runs,
                    match_related=of_worker,
                    expect={f"prefect.flow-run.{state}" for state in FAILED_STATES},
                    posture=Posture.Reactive,
                    threshold=1,
                    within=timedelta(0),
                ),
                actions=_notify(
                    notification_block_id,
                    subject=f"{worker.value} run failed",
                    body=(
                        "Flow run {{ flow_run.name }} of " + worker.value + " ended "
                        "{{ flow_run.state.name }}: {{ flow_run.state.message }}\n" + _RUN_LINK
                    ),
                ),
            ),
            AutomationCore(
                name=automation_name(worker, "run too long"),
                description=f"A flow run of {worker.value} has been running for more than {limit}.",
                tags=[MANAGED_TAG],
                trigger=EventTrigger(
                    match=flow_runs,
                    match_related=of_worker,
                    after={"prefect.flow-run.Running"},
                    expect={f"prefect.flow-run.{state}" for state in FINAL_STATES},
                    for_each={"prefect.resource.id"},
                    posture=Posture.Proactive,
                    threshold=1,
                    within=expected.max_duration,
                ),
                actions=_notify(
                    notification_block_id,
                    subject=f"{worker.value} run takes too long",
                    body=(
                        "Flow run {{ flow_run.name }} of " + worker.value + " has been running "
                        f"for more than {limit}.\n" + _RUN_LINK
                    ),
                ),
            ),
            AutomationCore(
                name=automation_name(worker, "no run"),
                description=f"No flow run of {worker.value} started in {window}.",
                tags=[MANAGED_TAG],
                trigger=EventTrigger(
                    match=flow_runs,
                    match_related=of_worker,
                    expect={"prefect.flow-run.Running"},
                    posture=Posture.Proactive,
                    threshold=1,
                    within=expected.silence_window,
                ),
                actions=_notify(
                    notification_block_id,
                    subject=f"{worker.value} is not running",
                    body=(
                        f"No flow run of {worker.value} started in {window}. Check its deployment's "
                        "schedule, the work pool and its workers."
                    ),
                ),
            ),
        ]
    return automations


def _notify(block_id: UUID | None, *, subject: str, body: str) -> list[ActionTypes]:
    if block_id is None:
        return [DoNothing()]  # visible in the UI with its history of firings, no message sent
    return [SendNotification(block_document_id=block_id, subject=subject, body=body)]


def _describe(duration: timedelta) -> str:
    minutes = int(duration.total_seconds()) // 60
    if minutes % (24 * 60) == 0:
        days = minutes // (24 * 60)
        return f"{days} day" + ("s" if days != 1 else "")
    if minutes % 60 == 0:
        hours = minutes // 60
        return f"{hours} hour" + ("s" if hours != 1 else "")
    return f"{minutes} minutes"


# What makes two automations the same; ids, owners, timestamps and `enabled` do not: an
# operator may pause one in the UI (maintenance) and a later sync must not resume it.
_COMPARED_FIELDS = (
    "description",
    "tags",
    "trigger",
    "actions",
    "actions_on_trigger",
    "actions_on_resolve",
)


def _same(existing: Automation, desired: AutomationCore) -> bool:
    return all(getattr(existing, f) == getattr(desired, f) for f in _COMPARED_FIELDS)


def _replacement(desired: AutomationCore, enabled: bool) -> AutomationCore:
    """`desired` with every field marked as set: the client's update sends only set fields,
    which would drop the `type` discriminators of triggers and actions built in code. The
    owner is left unset: the update endpoint refuses it."""
    fields = desired.model_dump(mode="json", exclude={"owner_resource"})
    return AutomationCore.model_validate(fields | {"enabled": enabled})


def sync_automations(notification_block_id: UUID | None = None) -> SyncResult:
    """Create or update the workers' automations on the Prefect API, idempotently by name."""
    desired = {a.name: a for a in desired_automations(notification_block_id)}
    created: list[str] = []
    updated: list[str] = []
    unchanged: list[str] = []
    deleted: list[str] = []
    with get_client(sync_client=True) as client:
        if notification_block_id is not None:
            try:
                client.read_block_document(notification_block_id)
            except ObjectNotFound:
                raise LookupError(
                    f"notification block document {notification_block_id} does not exist"
                ) from None
        found: dict[UUID, Automation] = {}
        for query in (
            AutomationFilter(name=AutomationFilterName(any_=list(desired))),
            AutomationFilter(tags=AutomationFilterTags(any_=[MANAGED_TAG])),
        ):
            found |= {a.id: a for a in client.read_automations(automations=query) if a.id}
        kept: set[str] = set()
        for automation_id, existing in sorted(found.items(), key=lambda item: str(item[0])):
            wanted = desired.get(existing.name)
            if wanted is None or existing.name in kept:  # no longer wanted, or a duplicate
                client.delete_automation(automation_id)
                deleted.append(existing.name)
                continue
            kept.add(existing.name)
            if _same(existing, wanted):
                unchanged.append(existing.name)
            else:
                client.update_automation(automation_id, _replacement(wanted, existing.enabled))
                updated.append(existing.name)
        for name, automation in desired.items():
            if name not in kept:
                client.create_automation(automation)
                created.append(name)
    return SyncResult(
        created=tuple(created),
        updated=tuple(updated),
        unchanged=tuple(unchanged),
        deleted=tuple(deleted),
    )
