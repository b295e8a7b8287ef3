"""The workers' Prefect automations, synced against a real Prefect server."""

from collections.abc import Iterator
from datetime import timedelta
from uuid import UUID, uuid4

import pytest
from prefect.automations import AutomationCore, DoNothing, EventTrigger, Posture, SendNotification
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.events.schemas.automations import Automation
from prefect.events.schemas.events import ResourceSpecification

from avian_workers.observability.automations import (
    MANAGED_TAG,
    RUN_EXPECTATIONS,
    automation_name,
    sync_automations,
)
from avian_workers.settings import WorkerType

pytestmark = pytest.mark.usefixtures("prefect_server")

ALL_NAMES = {
    automation_name(worker, condition)
    for worker in WorkerType
    for condition in ("run failed", "run too long", "no run")
}


@pytest.fixture
def client() -> Iterator[SyncPrefectClient]:
    """A client on a server without automations, emptied again after the test."""
    with get_client(sync_client=True) as client:
        _delete_all(client)
        yield client
        _delete_all(client)


def _delete_all(client: SyncPrefectClient) -> None:
    for automation in client.read_automations():
        assert automation.id is not None
        client.delete_automation(automation.id)


def by_name(client: SyncPrefectClient) -> dict[str, Automation]:
    automations = client.read_automations()
    named = {a.name: a for a in automations}
    assert len(named) == len(automations), "two automations share a name"
    return named


def trigger_of(automation: Automation) -> EventTrigger:
    assert isinstance(automation.trigger, EventTrigger)
    return automation.trigger


def related_of(trigger: EventTrigger) -> dict[str, object]:
    assert isinstance(trigger.match_related, ResourceSpecification)
    related: dict[str, object] = trigger.match_related.model_dump()
    return related


def test_a_second_sync_finds_everything_in_place_and_changes_nothing(
    client: SyncPrefectClient,
) -> None:
    first = sync_automations()
    ids = {name: a.id for name, a in by_name(client).items()}
    second = sync_automations()

    assert set(first.created) == ALL_NAMES
    assert (first.updated, first.unchanged, first.deleted) == ((), (), ())
    assert set(second.unchanged) == ALL_NAMES
    assert (second.created, second.updated, second.deleted) == ((), (), ())
    assert {name: a.id for name, a in by_name(client).items()} == ids


@pytest.mark.parametrize("worker", list(WorkerType))
def test_failed_crashed_or_timed_out_runs_of_the_worker_fire_at_once(
    client: SyncPrefectClient, worker: WorkerType
) -> None:
    sync_automations()
    trigger = trigger_of(by_name(client)[automation_name(worker, "run failed")])
    assert trigger.posture == Posture.Reactive
    assert trigger.expect == {
        "prefect.flow-run.Failed",
        "prefect.flow-run.Crashed",
        "prefect.flow-run.TimedOut",
    }
    assert trigger.after == set()
    assert (trigger.threshold, trigger.within) == (1, timedelta(0))
    assert trigger.match.model_dump() == {"prefect.resource.id": "prefect.flow-run.*"}
    assert related_of(trigger) == {
        "prefect.resource.role": "flow",
        "prefect.resource.name": worker.value,
    }


@pytest.mark.parametrize("worker", list(WorkerType))
def test_a_run_without_a_final_state_within_the_limit_fires_per_run(
    client: SyncPrefectClient, worker: WorkerType
) -> None:
    sync_automations()
    trigger = trigger_of(by_name(client)[automation_name(worker, "run too long")])
    assert trigger.posture == Posture.Proactive
    assert trigger.after == {"prefect.flow-run.Running"}
    assert trigger.expect == {
        "prefect.flow-run.Completed",
        "prefect.flow-run.Failed",
        "prefect.flow-run.Crashed",
        "prefect.flow-run.Cancelled",
        "prefect.flow-run.TimedOut",
    }
    assert trigger.for_each == {"prefect.resource.id"}
    assert trigger.within == RUN_EXPECTATIONS[worker].max_duration
    assert related_of(trigger)["prefect.resource.name"] == worker.value


@pytest.mark.parametrize(
    ("worker", "window"),
    [
        (WorkerType.EDR_POLLING, timedelta(minutes=30)),
        (WorkerType.EMAIL_ALERTS, timedelta(minutes=10)),
        (WorkerType.METRICS_AGGREGATION, timedelta(days=2)),
    ],
)
def test_no_run_started_in_two_schedule_intervals_fires(
    client: SyncPrefectClient, worker: WorkerType, window: timedelta
) -> None:
    sync_automations()
    trigger = trigger_of(by_name(client)[automation_name(worker, "no run")])
    assert trigger.posture == Posture.Proactive
    assert trigger.expect == {"prefect.flow-run.Running"}  # Scheduled or Late runs do not count
    assert trigger.after == set()
    assert trigger.for_each == set()
    assert (trigger.threshold, trigger.within) == (1, window)
    assert related_of(trigger)["prefect.resource.name"] == worker.value


def test_without_a_notification_block_the_automations_only_record_firings(
    client: SyncPrefectClient,
) -> None:
    sync_automations()
    automations = by_name(client)
    assert set(automations) == ALL_NAMES
    for automation in automations.values():
        assert automation.actions == [DoNothing()]
        assert automation.tags == [MANAGED_TAG]
        assert automation.enabled


def test_a_notification_block_is_used_by_every_automation_and_can_be_removed_again(
    client: SyncPrefectClient,
) -> None:
    block_id = CustomWebhookNotificationBlock(
        name="operators", url="https://hooks.example.invalid/avian"
    ).save(f"avian-operators-{uuid4().hex[:8]}")
    sync_automations()

    with_block = sync_automations(notification_block_id=block_id)
    assert set(with_block.updated) == ALL_NAMES
    for automation in by_name(client).values():
        (action,) = automation.actions
        assert isinstance(action, SendNotification)
        assert action.block_document_id == block_id
        worker = automation.name.split(" ")[1].rstrip(":")
        assert worker in action.subject
        assert worker in action.body

    without = sync_automations()
    assert set(without.updated) == ALL_NAMES
    assert all(a.actions == [DoNothing()] for a in by_name(client).values())


def test_an_unknown_notification_block_is_refused_before_anything_changes(
    client: SyncPrefectClient,
) -> None:
    missing = UUID("00000000-0000-4000-8000-000000000001")
    with pytest.raises(LookupError, match=str(missing)):
        sync_automations(notification_block_id=missing)
    assert by_name(client) == {}


def test_a_drifted_automation_is_restored_and_paused_ones_stay_paused(
    client: SyncPrefectClient,
) -> None:
    sync_automations()
    automations = by_name(client)
    drifted = automations[automation_name(WorkerType.EDR_POLLING, "run too long")]
    paused = automations[automation_name(WorkerType.EMAIL_ALERTS, "run failed")]
    assert drifted.id is not None
    assert paused.id is not None
    changed = trigger_of(drifted).model_copy(update={"within": timedelta(hours=5)})
    client.update_automation(
        drifted.id,
        AutomationCore.model_validate(
            drifted.model_dump(mode="json", exclude={"id", "owner_resource"})
            | {"trigger": changed.model_dump()}
        ),
    )
    client.pause_automation(paused.id)
    client.pause_automation(drifted.id)

    result = sync_automations()

    assert result.updated == (drifted.name,)
    after = by_name(client)
    assert trigger_of(after[drifted.name]).within == timedelta(minutes=12)
    assert after[drifted.name].id == drifted.id
    assert not after[drifted.name].enabled
    assert not after[paused.name].enabled
    assert sum(a.enabled for a in after.values()) == len(ALL_NAMES) - 2


def test_stale_and_duplicate_managed_automations_go_and_other_automations_stay(
    client: SyncPrefectClient,
) -> None:
    sync_automations()

    def add(name: str, tags: list[str]) -> None:
        client.create_automation(
            AutomationCore(
                name=name,
                tags=tags,
                trigger=EventTrigger(expect={"prefect.flow-run.Failed"}),
                actions=[DoNothing()],
            )
        )

    duplicate = automation_name(WorkerType.METRICS_AGGREGATION, "no run")
    add("avian-workers edr-polling: renamed long ago", [MANAGED_TAG])
    add(duplicate, [MANAGED_TAG])
    add("someone else's automation", ["team-x"])

    result = sync_automations()

    assert sorted(result.deleted) == sorted(
        ["avian-workers edr-polling: renamed long ago", duplicate]
    )
    assert set(by_name(client)) == ALL_NAMES | {"someone else's automation"}
