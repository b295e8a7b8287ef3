"""The edr-polling flow end to end: the Microsoft simulator over TLS, moto Secrets Manager,
PostgreSQL, Redis and a Prefect server."""

from __future__ import annotations

import json
import pickle
import re
import secrets
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import redis
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import State
from prefect.filesystems import LocalFileSystem
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_TASKS_REFRESH_CACHE, temporary_settings
from sqlalchemy import Engine, func, select, text

from avian_workers.db.models import (
    EdrAlert,
    EdrCompliance,
    EdrDevice,
    EdrDeviceVulnerability,
    EdrPostureScore,
    EdrSecureScore,
    EdrVulnerability,
)
from avian_workers.edr.store import ALERTS, TenantRow, TenantStore
from avian_workers.edr.sync import DatasetReport
from avian_workers.microsoft import RetriesExhaustedError
from avian_workers.redis_store import RedisKeys
from avian_workers.simulator import Faults
from flows.edr_polling import (
    LOCK_SCOPE,
    DatasetError,
    PollingSummary,
    cadence_cache_key,
    edr_polling,
    fetched_this_period,
    storable_errors,
)
from tests.avian_workers.edr.tenants import (
    DEFENDER_PAGE_SIZE,
    EdrTenant,
    add_tenant_row,
    edr_tenant,
    put_secret,
)
from tests.plugins.microsoft_simulator import MicrosoftSimulatorHandle

pytestmark = pytest.mark.slow

VULNERABILITIES_PATH = "/defender/api/machines/SoftwareVulnerabilitiesByMachine"


@pytest.fixture
def world(
    microsoft_simulator_env: MicrosoftSimulatorHandle,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    *,
    db: Engine,
    redis_client: redis.Redis,
    moto_reset: str,
    prefect_server: None,
) -> MicrosoftSimulatorHandle:
    """Settings pointing the flow at the simulator, with small pages and quick backoff."""
    sim = microsoft_simulator_env
    monkeypatch.setenv("MS_AUTHORITY_HOST", sim.authority_host)
    monkeypatch.setenv("MS_GRAPH_BASE_URL", sim.graph_base_url)
    monkeypatch.setenv("MS_DEFENDER_BASE_URL", sim.defender_base_url)
    monkeypatch.setenv("HTTP_BACKOFF_BASE_SECONDS", "0.01")
    monkeypatch.setenv("HTTP_BACKOFF_MAX_SECONDS", "0.1")
    monkeypatch.setenv("EDR_DEFENDER_PAGE_SIZE", str(DEFENDER_PAGE_SIZE))
    block = f"edr-results-{secrets.token_hex(4)}"
    LocalFileSystem(basepath=str(tmp_path / "results")).save(block)
    monkeypatch.setenv("EDR_RESULT_STORAGE_BLOCK", f"local-file-system/{block}")
    return sim


def minutes_before(odata: str, minutes: int) -> str:
    """An OData timestamp `minutes` earlier, keeping its seven fractional digits."""
    whole, fraction = odata.removesuffix("Z").split(".")
    moment = datetime.fromisoformat(whole) - timedelta(minutes=minutes)
    return f"{moment.isoformat()}.{fraction}Z"


def poll(*tenants: EdrTenant) -> State[PollingSummary]:
    state: State[PollingSummary] = edr_polling(
        tenant_ids=[t.id for t in tenants], return_state=True
    )
    return state


def summary_of(state: State[PollingSummary]) -> dict[str, Any]:
    """Tenant name -> its report (a completed run's return value)."""
    summary: PollingSummary = state.result()
    return {report.tenant_name: report for report in summary.tenants}


def artifact_rows(state: State[Any]) -> list[dict[str, Any]]:
    """The run's table artifact."""
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["edr-polling"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
            )
        )
    data = artifact.data
    rows: list[dict[str, Any]] = json.loads(data) if isinstance(data, str) else data
    return rows


def counts(engine: Engine, tenant_id: uuid.UUID) -> dict[str, int]:
    """Rows per EDR table of one tenant."""
    with engine.connect() as conn:
        result = {
            model.__tablename__: conn.execute(
                select(func.count()).select_from(model).where(model.tenant_id == tenant_id)
            ).scalar_one()
            for model in (EdrDevice, EdrAlert, EdrVulnerability, EdrCompliance, EdrPostureScore)
        }
        result["edr_device_vulnerabilities"] = conn.execute(
            select(func.count())
            .select_from(EdrDeviceVulnerability)
            .join(EdrDevice)
            .where(EdrDevice.tenant_id == tenant_id)
        ).scalar_one()
        result["edr_secure_scores"] = conn.execute(
            select(func.count())
            .select_from(EdrSecureScore)
            .where(EdrSecureScore.tenant_id == tenant_id)
        ).scalar_one()
    return result


def expected_counts(tenant: EdrTenant, *, polls: int = 1) -> dict[str, int]:
    """What the simulated tenant holds, in rows of the EDR tables."""
    rows = tenant.simulated.vulnerability_rows()
    return {
        "edr_devices": tenant.simulated.spec.devices,
        "edr_alerts": len(tenant.simulated.alerts()),
        "edr_vulnerabilities": len({r["cveId"] for r in rows if r["cveId"]}),
        "edr_compliance": len(tenant.simulated.managed_devices()),
        "edr_posture_scores": polls,
        "edr_device_vulnerabilities": len(
            {(r["deviceId"], r["cveId"]) for r in rows if r["cveId"]}
        ),
        "edr_secure_scores": 1,
    }


def assert_complete(engine: Engine, tenant: EdrTenant, *, polls: int = 1) -> None:
    assert counts(engine, tenant.id) == expected_counts(tenant, polls=polls)


# --- Completeness and idempotence ----------------------------------------------------------


def test_every_dataset_spans_several_pages_and_arrives_complete(
    world: MicrosoftSimulatorHandle, db: Engine
) -> None:
    tenant = edr_tenant(db, world)

    state = poll(tenant)

    assert state.is_completed()
    report = summary_of(state)[tenant.name]
    assert report.outcome == "succeeded"
    pages = {d.dataset: d.pages for d in report.datasets}
    for dataset in ("defender devices", "intune devices", "alerts", "vulnerabilities"):
        assert pages[dataset] > 3, dataset
    policy_pages = [
        r
        for r in world.simulator.requests(tenant.simulated.spec.tenant_id)
        if r.path.endswith("/deviceCompliancePolicies")
    ]
    assert len(policy_pages) > 3
    assert_complete(db, tenant)


def test_devices_merge_and_alerts_and_vulnerabilities_link_to_the_right_devices(
    world: MicrosoftSimulatorHandle, db: Engine
) -> None:
    tenant = edr_tenant(db, world)
    assert poll(tenant).is_completed()

    with db.connect() as conn:
        devices = {
            row.id: row
            for row in conn.execute(select(EdrDevice).where(EdrDevice.tenant_id == tenant.id))
        }
        alert_devices = dict(
            conn.execute(
                select(EdrAlert.microsoft_alert_id, EdrAlert.device_id).where(
                    EdrAlert.tenant_id == tenant.id
                )
            ).all()
        )
        stored_links = set(
            conn.execute(
                select(EdrDeviceVulnerability.device_id, EdrVulnerability.cve_id).join(
                    EdrVulnerability
                )
            ).all()
        )
    key_of = {row.microsoft_device_id: device_id for device_id, row in devices.items()}
    machines = tenant.simulated.machines()
    managed = tenant.simulated.managed_devices()
    # Each Defender machine is one row under its own id, carrying Defender's columns ...
    for machine in machines:
        row = devices[key_of[machine["id"]]]
        assert row.device_name == machine["computerDnsName"]
    # ... an Intune device joined to a machine (Azure AD id or host name) adds Intune's columns
    # to that row, and one that Defender does not know is a row of its own.
    joined = 0
    for device in managed:
        host = device["deviceName"].lower()
        machine = next((m for m in machines if m["computerDnsName"].split(".")[0] == host), None)
        key = machine["id"] if machine else device["id"]
        row = devices[key_of[key]]
        assert row.primary_user == device["userPrincipalName"]
        assert row.intune_compliance_state == device["complianceState"]
        joined += machine is not None
    assert joined == len(machines) - len([m for m in machines if "-srv" in m["computerDnsName"]])
    # Alerts link to the device of their first device evidence; others have none.
    for alert in tenant.simulated.alerts():
        evidence = [e for e in alert["evidence"] if e["@odata.type"].endswith("deviceEvidence")]
        expected = key_of[evidence[0]["mdeDeviceId"]] if evidence else None
        assert alert_devices[alert["id"]] == expected, alert["id"]
    # Every vulnerability row links the CVE to the device of its machine.
    expected_links = {
        (key_of[r["deviceId"]], r["cveId"])
        for r in tenant.simulated.vulnerability_rows()
        if r["cveId"]
    }
    assert stored_links == expected_links


def test_a_second_run_leaves_identical_counts_and_no_duplicates(
    world: MicrosoftSimulatorHandle, db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDR_VULNERABILITY_REFRESH_HOURS", "0.00001")  # fetch on every run
    monkeypatch.setenv("EDR_SECURE_SCORE_REFRESH_HOURS", "0.00001")
    tenant = edr_tenant(db, world)

    assert poll(tenant).is_completed()
    first = counts(db, tenant.id)
    with db.connect() as conn:
        devices_before = conn.execute(text("SELECT * FROM edr_devices ORDER BY id")).all()
    second = poll(tenant)

    assert second.is_completed()
    report = summary_of(second)[tenant.name]
    assert {d.dataset: d.status for d in report.datasets}["vulnerabilities"] == "ok"
    assert counts(db, tenant.id) == {**first, "edr_posture_scores": 2}
    assert_complete(db, tenant, polls=2)
    with db.connect() as conn:
        assert conn.execute(text("SELECT * FROM edr_devices ORDER BY id")).all() == devices_before


def assert_cadenced_datasets_cached(
    world: MicrosoftSimulatorHandle,
    tenant: EdrTenant,
    state: State[PollingSummary],
    requests_before: int,
) -> list[Any]:
    """Vulnerabilities and Secure Score were reported cached and not requested; the requests
    of the tenant since `requests_before` are returned."""
    statuses = {d.dataset: d.status for d in summary_of(state)[tenant.name].datasets}
    assert (statuses["vulnerabilities"], statuses["secure score"]) == ("cached", "cached")
    later = world.simulator.requests(tenant.simulated.spec.tenant_id)[requests_before:]
    assert not [
        r for r in later if r.path in {VULNERABILITIES_PATH, "/graph/v1.0/security/secureScores"}
    ]
    return later


def test_vulnerabilities_and_secure_score_are_fetched_once_per_cadence(
    world: MicrosoftSimulatorHandle, db: Engine
) -> None:
    tenant = edr_tenant(db, world)
    assert poll(tenant).is_completed()
    requests_before = len(world.simulator.requests(tenant.simulated.spec.tenant_id))

    second = poll(tenant)

    later = assert_cadenced_datasets_cached(world, tenant, second, requests_before)
    assert later, "the other datasets are polled again"
    assert_complete(db, tenant, polls=2)


def test_the_cadence_holds_in_a_fresh_container_without_prefects_cache(
    world: MicrosoftSimulatorHandle, db: Engine
) -> None:
    tenant = edr_tenant(db, world)
    assert poll(tenant).is_completed()
    requests_before = len(world.simulator.requests(tenant.simulated.spec.tenant_id))

    # As on ECS without EDR_RESULT_STORAGE_BLOCK: no cached task result is ever found again.
    with temporary_settings(updates={PREFECT_TASKS_REFRESH_CACHE: True}):
        second = poll(tenant)

    assert_cadenced_datasets_cached(world, tenant, second, requests_before)


# --- Alerts incremental --------------------------------------------------------------------


def test_an_alert_updated_at_the_watermark_and_a_late_alert_are_both_stored(
    world: MicrosoftSimulatorHandle, db: Engine
) -> None:
    tenant = edr_tenant(db, world)
    assert poll(tenant).is_completed()
    newest = tenant.simulated.alerts()[-1]["lastUpdateDateTime"]
    state = TenantStore(db, tenant.id).sync_state(ALERTS)
    assert state is not None
    assert state.watermark is not None
    assert state.watermark.isoformat().startswith(newest[:19])

    tied = tenant.simulated.add_alert(newest)  # the same 7-digit time as the watermark
    late = tenant.simulated.add_alert(minutes_before(newest, 5))  # published after the poll
    assert poll(tenant).is_completed()

    with db.connect() as conn:
        stored = set(
            conn.execute(
                select(EdrAlert.microsoft_alert_id).where(EdrAlert.tenant_id == tenant.id)
            ).scalars()
        )
    assert {tied["id"], late["id"]} <= stored
    assert len(stored) == len(tenant.simulated.alerts())


def test_without_overlap_an_alert_tied_with_the_watermark_is_still_read(
    world: MicrosoftSimulatorHandle, db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDR_ALERT_OVERLAP_MINUTES", "0")
    tenant = edr_tenant(db, world)
    assert poll(tenant).is_completed()
    newest = tenant.simulated.alerts()[-1]["lastUpdateDateTime"]
    tied = tenant.simulated.add_alert(newest)
    requests_before = len(world.simulator.requests(tenant.simulated.spec.tenant_id))

    assert poll(tenant).is_completed()

    with db.connect() as conn:
        stored = conn.execute(
            select(EdrAlert.microsoft_alert_id).where(EdrAlert.microsoft_alert_id == tied["id"])
        ).all()
    assert len(stored) == 1
    alert_requests = [
        r
        for r in world.simulator.requests(tenant.simulated.spec.tenant_id)[requests_before:]
        if r.path.endswith("/security/alerts_v2")
    ]
    assert len(alert_requests) == 1  # only the newest alerts are read again, not the backfill


# --- Failures stay with their tenant -------------------------------------------------------


def test_a_tenant_with_a_bad_secret_fails_alone_and_the_artifact_names_the_failure(
    world: MicrosoftSimulatorHandle, db: Engine
) -> None:
    good = edr_tenant(db, world, name="Good One")
    wrong = edr_tenant(db, world, name="Wrong Secret", client_secret="not-the~secret-0123456789")
    also_good = edr_tenant(db, world, name="Good Two")
    missing = add_tenant_row(db, "No Secret")

    state = edr_polling(tenant_ids=[good.id, wrong.id, also_good.id, missing], return_state=True)

    assert state.is_completed()
    outcomes = {name: report.outcome for name, report in summary_of(state).items()}
    assert outcomes == {
        "Good One": "succeeded",
        "Good Two": "succeeded",
        "Wrong Secret": "failed",
        "No Secret": "failed",
    }
    rows = {row["tenant"]: row for row in artifact_rows(state)}
    assert set(rows) == set(outcomes)
    assert "AADSTS7000215" in rows["Wrong Secret"]["error"]
    assert "does not exist" in rows["No Secret"]["error"]
    assert rows["Good One"]["error"] == ""
    assert rows["Good One"]["alerts"] == len(good.simulated.alerts())
    assert {"duration (s)", "defender devices", "vulnerabilities", "posture"} <= set(
        rows["Good One"]
    )
    assert_complete(db, good)
    assert_complete(db, also_good)
    assert counts(db, wrong.id)["edr_devices"] == 0


def test_the_run_fails_when_every_tenant_failed(
    world: MicrosoftSimulatorHandle, db: Engine
) -> None:
    first = edr_tenant(db, world, name="Bad A", client_secret="wrong~secret-aaaaaaaaaaaa")
    second = add_tenant_row(db, "Bad B")
    put_secret(second, {"clientId": "x", "tenantId": "y"})  # lacks clientSecret

    state = edr_polling(tenant_ids=[first.id, second], return_state=True)

    assert state.is_failed()
    rows = {row["tenant"]: row for row in artifact_rows(state)}
    assert rows["Bad A"]["outcome"] == rows["Bad B"]["outcome"] == "failed"
    assert "lacks field(s): clientSecret" in rows["Bad B"]["error"]


def test_a_run_without_tenants_completes(world: MicrosoftSimulatorHandle, db: Engine) -> None:
    state: State[PollingSummary] = edr_polling(return_state=True)
    assert state.is_completed()
    assert state.result().tenants == ()


def test_without_tenant_ids_the_active_tenants_are_polled(
    world: MicrosoftSimulatorHandle, db: Engine
) -> None:
    active = edr_tenant(db, world, name="Active", devices=10, alerts=5, policies=2)
    edr_tenant(db, world, name="Inactive", active=False, devices=10, alerts=5, policies=2)

    state: State[PollingSummary] = edr_polling(return_state=True)

    assert [t.tenant_name for t in state.result().tenants] == ["Active"]
    assert_complete(db, active)


def test_an_unknown_tenant_id_is_reported_as_failed(
    world: MicrosoftSimulatorHandle, db: Engine
) -> None:
    tenant = edr_tenant(db, world, devices=10, alerts=5, policies=2)
    unknown = uuid.uuid4()

    state: State[PollingSummary] = edr_polling(tenant_ids=[tenant.id, unknown], return_state=True)

    assert state.is_completed()
    reports = {t.tenant_id: t for t in state.result().tenants}
    assert (reports[str(unknown)].outcome, reports[str(unknown)].error) == (
        "failed",
        "no such tenant",
    )


def statuses_of_a_warned_tenant(state: State[PollingSummary], tenant: EdrTenant) -> dict[str, str]:
    """The run completed with `tenant` warned about; each dataset's status."""
    assert state.is_completed()
    report = summary_of(state)[tenant.name]
    assert report.outcome == "warning"
    return {d.dataset: d.status for d in report.datasets}


def test_a_missing_optional_permission_is_a_warning_on_that_dataset(
    world: MicrosoftSimulatorHandle, db: Engine
) -> None:
    tenant = edr_tenant(
        db, world, faults=Faults(forbidden=frozenset({"secureScores", "vulnerabilities"}))
    )

    state = poll(tenant)

    statuses = statuses_of_a_warned_tenant(state, tenant)
    assert (statuses["secure score"], statuses["vulnerabilities"]) == ("forbidden", "forbidden")
    assert statuses["alerts"] == statuses["defender devices"] == "ok"
    (row,) = artifact_rows(state)
    assert "403" in row["error"]
    found = counts(db, tenant.id)
    assert found["edr_devices"] == tenant.simulated.spec.devices
    assert found["edr_vulnerabilities"] == found["edr_secure_scores"] == 0


def test_a_tenant_without_defender_still_gets_its_intune_and_graph_data(
    world: MicrosoftSimulatorHandle, db: Engine
) -> None:
    # No Defender for Endpoint licence: Entra ID refuses tokens for its API (AADSTS500011).
    tenant = edr_tenant(db, world, faults=Faults(defender_unlicensed=True))

    state = poll(tenant)

    statuses = statuses_of_a_warned_tenant(state, tenant)
    assert (statuses["defender devices"], statuses["vulnerabilities"]) == ("forbidden", "forbidden")
    assert statuses["intune devices"] == statuses["alerts"] == statuses["secure score"] == "ok"
    assert "AADSTS500011" in artifact_rows(state)[0]["error"]
    found = counts(db, tenant.id)
    assert found["edr_devices"] > 0
    assert found["edr_alerts"] > 0


def datasets_of_a_failed_tenant(
    state: State[PollingSummary], tenant: EdrTenant
) -> dict[str, DatasetReport]:
    """The run completed with `tenant` failed; its datasets' reports by name."""
    assert state.is_completed()
    report = summary_of(state)[tenant.name]
    assert report.outcome == "failed"
    return {d.dataset: d for d in report.datasets}


def requests_to(world: MicrosoftSimulatorHandle, tenant: EdrTenant, api: str) -> list[Any]:
    return [r for r in world.simulator.requests(tenant.simulated.spec.tenant_id) if r.api == api]


def test_defender_rejecting_the_tenants_token_fails_its_datasets_and_graph_data_is_still_stored(
    world: MicrosoftSimulatorHandle, db: Engine
) -> None:
    # Defender answers 401 even to a fresh token (wrong audience, Defender not provisioned),
    # while Graph accepts the tenant's Graph token.
    rejected = edr_tenant(
        db, world, name="Defender 401", faults=Faults(tokens_rejected_by=frozenset({"defender"}))
    )
    other = edr_tenant(db, world, name="Unaffected", devices=10, alerts=5, policies=2)

    state = poll(rejected, other)

    datasets = datasets_of_a_failed_tenant(state, rejected)
    assert {name: report.status for name, report in datasets.items()} == {
        "defender devices": "failed",
        "compliance rules": "ok",
        "intune devices": "ok",
        "compliance": "ok",
        "alerts": "ok",
        "vulnerabilities": "not run",
        "posture": "not run",
        "secure score": "ok",
    }
    assert re.search(r"defender GET \S+ answered 401", str(datasets["defender devices"].detail))
    assert "defender answered 401" in str(datasets["vulnerabilities"].detail)
    assert datasets["posture"].detail == (
        "inputs not read: defender devices failed, vulnerabilities not run"
    )
    found = counts(db, rejected.id)
    managed = rejected.simulated.managed_devices()
    assert found["edr_devices"] == found["edr_compliance"] == len(managed)
    assert found["edr_alerts"] == len(rejected.simulated.alerts())
    assert found["edr_secure_scores"] == 1
    assert found["edr_vulnerabilities"] == found["edr_posture_scores"] == 0
    # Defender was asked once, with a fresh token after the 401; vulnerabilities never.
    assert [(r.path, r.status) for r in requests_to(world, rejected, "defender")] == [
        ("/defender/api/machines", 401),
        ("/defender/api/machines", 401),
    ]
    rows = {row["tenant"]: row for row in artifact_rows(state)}
    assert "401" in rows["Defender 401"]["error"]
    assert summary_of(state)["Unaffected"].outcome == "succeeded"
    assert_complete(db, other)


def test_graph_rejecting_the_tenants_token_still_stores_the_defender_data(
    world: MicrosoftSimulatorHandle, db: Engine
) -> None:
    tenant = edr_tenant(
        db, world, name="Graph 401", faults=Faults(tokens_rejected_by=frozenset({"graph"}))
    )
    other = edr_tenant(db, world, name="Unaffected", devices=10, alerts=5, policies=2)

    state = poll(tenant, other)

    datasets = datasets_of_a_failed_tenant(state, tenant)
    assert {name: report.status for name, report in datasets.items()} == {
        "defender devices": "ok",
        "compliance rules": "failed",
        "intune devices": "not run",
        "compliance": "not run",
        "alerts": "not run",
        "vulnerabilities": "ok",
        "posture": "not run",
        "secure score": "not run",
    }
    assert re.search(r"graph GET \S+ answered 401", str(datasets["compliance rules"].detail))
    assert "graph answered 401" in str(datasets["secure score"].detail)
    assert datasets["posture"].detail == (
        "inputs not read: intune devices not run, compliance not run, alerts not run"
    )
    found, expected = counts(db, tenant.id), expected_counts(tenant)
    assert found["edr_devices"] == len(tenant.simulated.machines())  # Defender's, none of Intune
    assert found["edr_vulnerabilities"] == expected["edr_vulnerabilities"]
    assert found["edr_device_vulnerabilities"] == expected["edr_device_vulnerabilities"]
    assert found["edr_alerts"] == found["edr_secure_scores"] == found["edr_posture_scores"] == 0
    # Graph was asked once, with a fresh token after the 401; its later datasets never.
    assert [r.status for r in requests_to(world, tenant, "graph")] == [401, 401]
    assert summary_of(state)["Unaffected"].outcome == "succeeded"


def test_posture_is_not_scored_while_one_of_its_inputs_cannot_be_read(
    world: MicrosoftSimulatorHandle, db: Engine
) -> None:
    # Without vulnerability data the score would count that part as perfect.
    tenant = edr_tenant(db, world, faults=Faults(forbidden=frozenset({"vulnerabilities"})))
    requests_before = 0

    for _ in range(2):  # the second poll finds the 403 in Prefect's cache, and says so
        state = poll(tenant)

        assert state.is_completed()
        report = summary_of(state)[tenant.name]
        statuses = {d.dataset: d.status for d in report.datasets}
        assert (statuses["vulnerabilities"], statuses["posture"]) == ("forbidden", "not run")
        (posture,) = [d for d in report.datasets if d.dataset == "posture"]
        assert posture.detail == "inputs not read: vulnerabilities forbidden"
        assert report.outcome == "warning"
        assert counts(db, tenant.id)["edr_posture_scores"] == 0
        later = world.simulator.requests(tenant.simulated.spec.tenant_id)[requests_before:]
        requests_before += len(later)
    assert not [r for r in later if r.path == VULNERABILITIES_PATH]


def test_a_tenant_another_run_is_polling_is_skipped_and_reported(
    world: MicrosoftSimulatorHandle, db: Engine, redis_client: redis.Redis, settings: Any
) -> None:
    tenant = edr_tenant(db, world, devices=10, alerts=5, policies=2)
    key = RedisKeys.from_settings(settings).lock(LOCK_SCOPE, tenant.id)
    redis_client.set(key, "another run", px=60_000)

    state = poll(tenant)

    assert state.is_completed()
    assert summary_of(state)[tenant.name].outcome == "locked"
    assert counts(db, tenant.id)["edr_devices"] == 0
    assert redis_client.get(key) == b"another run"


# --- Faults are survived -------------------------------------------------------------------


def test_throttling_storms_outages_and_expiring_tokens_are_survived_with_complete_data(
    world: MicrosoftSimulatorHandle, db: Engine
) -> None:
    storm = edr_tenant(
        db,
        world,
        name="429 storm",
        faults=Faults(throttle_every=5, throttle_streak=3, retry_after="absent"),
    )
    paced = edr_tenant(
        db,
        world,
        name="429 with Retry-After",
        faults=Faults(throttle_every=30, retry_after="seconds", retry_after_seconds=1),
    )
    dated = edr_tenant(
        db,
        world,
        name="429 with an HTTP date",
        faults=Faults(throttle_every=40, retry_after="http-date", retry_after_seconds=1),
    )
    outage = edr_tenant(
        db, world, name="503s", faults=Faults(unavailable_every=4, unavailable_streak=2)
    )
    expiring = edr_tenant(db, world, name="401 mid-paging", faults=Faults(token_max_uses=3))
    tenants = (storm, paced, dated, outage, expiring)

    state = poll(*tenants)

    assert state.is_completed()
    assert {n: r.outcome for n, r in summary_of(state).items()} == dict.fromkeys(
        (t.name for t in tenants), "succeeded"
    )
    for tenant in tenants:
        assert_complete(db, tenant)
    statuses = Counter(
        (t.name, r.status)
        for t in tenants
        for r in world.simulator.requests(t.simulated.spec.tenant_id)
    )
    assert statuses[("429 storm", 429)] > 20
    assert statuses[("429 with Retry-After", 429)] > 0
    assert statuses[("429 with an HTTP date", 429)] > 0
    assert statuses[("503s", 503)] > 20
    assert statuses[("401 mid-paging", 401)] > 10
    assert expiring.simulated.tokens_issued > 10


def test_a_partial_alert_page_keeps_the_watermark_and_the_next_run_completes_it(
    world: MicrosoftSimulatorHandle, db: Engine
) -> None:
    tenant = edr_tenant(db, world, faults=Faults(partial_alert_pages=frozenset({2})))

    state = poll(tenant)

    report = summary_of(state)[tenant.name]
    assert {d.dataset: d.status for d in report.datasets}["alerts"] == "partial"
    assert report.outcome == "warning"
    alert_state = TenantStore(db, tenant.id).sync_state(ALERTS)
    assert alert_state is not None
    assert alert_state.watermark is None
    assert counts(db, tenant.id)["edr_alerts"] == len(tenant.simulated.alerts()) - 1

    world.simulator.set_faults(tenant.simulated.spec.tenant_id, partial_alert_pages=frozenset())
    assert poll(tenant).is_completed()
    assert counts(db, tenant.id)["edr_alerts"] == len(tenant.simulated.alerts())
    later = TenantStore(db, tenant.id).sync_state(ALERTS)
    assert later is not None
    assert later.watermark is not None


# --- Tenant isolation ----------------------------------------------------------------------


def test_two_tenants_sharing_device_and_alert_ids_keep_their_own_rows_and_links(
    world: MicrosoftSimulatorHandle, db: Engine
) -> None:
    namespace = f"shared-{secrets.token_hex(4)}"
    first = edr_tenant(db, world, name="Shared A", id_namespace=namespace, seed=1)
    second = edr_tenant(db, world, name="Shared B", id_namespace=namespace, seed=2)
    shared_machines = {m["id"] for m in first.simulated.machines()}
    assert shared_machines == {m["id"] for m in second.simulated.machines()}
    assert {a["id"] for a in first.simulated.alerts()} == {
        a["id"] for a in second.simulated.alerts()
    }

    assert poll(first, second).is_completed()

    for tenant in (first, second):
        assert_complete(db, tenant)
        by_machine = {m["id"]: m for m in tenant.simulated.machines()}
        by_alert = {a["id"]: a for a in tenant.simulated.alerts()}
        with db.connect() as conn:
            devices = conn.execute(
                select(EdrDevice.microsoft_device_id, EdrDevice.device_name).where(
                    EdrDevice.tenant_id == tenant.id, EdrDevice.microsoft_device_id.in_(by_machine)
                )
            ).all()
            alerts = conn.execute(
                select(EdrAlert.microsoft_alert_id, EdrAlert.severity, EdrDevice.tenant_id)
                .outerjoin(EdrDevice, EdrDevice.id == EdrAlert.device_id)
                .where(EdrAlert.tenant_id == tenant.id)
            ).all()
            foreign_links = conn.execute(
                select(func.count())
                .select_from(EdrDeviceVulnerability)
                .join(EdrDevice)
                .join(EdrVulnerability)
                .where(EdrDevice.tenant_id != EdrVulnerability.tenant_id)
            ).scalar_one()
        for machine_id, name in devices:
            assert name == by_machine[machine_id]["computerDnsName"]  # this tenant's own names
        for alert_id, severity, device_tenant in alerts:
            assert device_tenant in (tenant.id, None)
            expected = by_alert[alert_id]["severity"]
            assert severity == ("low" if expected == "informational" else expected)
        assert foreign_links == 0


# --- Secrets --------------------------------------------------------------------------------


def test_no_secret_or_token_appears_in_the_logs(
    world: MicrosoftSimulatorHandle,
    db: Engine,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOG_LEVEL", "debug")
    good = edr_tenant(db, world, name="Logged", faults=Faults(token_max_uses=5))
    wrong_secret = "wrong~Secret-" + secrets.token_urlsafe(24)
    bad = edr_tenant(db, world, name="Logged bad", client_secret=wrong_secret)

    state = poll(good, bad)
    APILogWorker.drain_all(timeout=10)

    out, err = capfd.readouterr()
    json_lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert any(line.get("message") == "Tenant failed" for line in json_lines)
    with get_client(sync_client=True) as client:
        run_logs = client.read_logs(
            log_filter=LogFilter(
                flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
    assert any("AADSTS7000215" in log.message for log in run_logs)
    everything = "\n".join([out, err, *(log.message for log in run_logs)])
    for secret in (good.client_secret, bad.client_secret, wrong_secret):
        assert secret not in everything
    assert not re.search(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}", everything)  # a JWT
    assert not re.search(r"(?i)bearer\s+[A-Za-z0-9._-]{8,}", everything)


# --- What a cadenced task may store --------------------------------------------------------


def test_a_cadenced_task_fails_with_a_description_not_a_third_party_error() -> None:
    request = httpx.Request(
        "GET", "https://graph.example", headers={"Authorization": "Bearer t0k3n-abc"}
    )

    with pytest.raises(DatasetError) as raised, storable_errors():
        raise httpx.DecodingError("bad gzip", request=request)

    assert str(raised.value) == "DecodingError: bad gzip"
    assert b"t0k3n-abc" not in pickle.dumps(raised.value)


def test_our_own_errors_leave_a_cadenced_task_as_they_are() -> None:
    with pytest.raises(RetriesExhaustedError), storable_errors():
        raise RetriesExhaustedError("defender GET /api/machines failed 6 times")


def test_a_fetch_counts_for_the_period_it_fell_in_counted_from_the_epoch() -> None:
    morning = datetime(2024, 12, 9, 6, 5, tzinfo=UTC)  # periods of 6 h: 06:00 to 12:00
    assert fetched_this_period(morning, morning + timedelta(hours=5, minutes=54), 6)
    assert not fetched_this_period(morning, morning + timedelta(hours=5, minutes=55), 6)
    assert not fetched_this_period(morning - timedelta(minutes=10), morning, 6)
    assert not fetched_this_period(None, morning, 6)
    later_zone = morning.astimezone(timezone(timedelta(hours=-5)))
    assert fetched_this_period(later_zone, morning + timedelta(hours=1), 6)


def test_the_cadence_cache_key_names_the_task_and_tenant_and_changes_with_the_period() -> None:
    tenant = TenantRow(uuid.uuid4(), "Contoso")
    context = SimpleNamespace(task=SimpleNamespace(name="vulnerabilities"))

    def key(moment: datetime) -> str:
        poll = SimpleNamespace(tenant=tenant, now=moment)
        return cadence_cache_key(context, {"poll": poll, "refresh_hours": 6})  # type: ignore[arg-type]

    morning = datetime(2024, 12, 9, 6, 5, tzinfo=UTC)
    assert key(morning) == key(morning + timedelta(hours=5))
    assert key(morning) != key(morning + timedelta(hours=6))
    assert str(tenant.id) in key(morning)
    assert "vulnerabilities" in key(morning)


def test_two_tenants_whose_secrets_name_one_azure_tenant_are_polled_and_warned(
    world: MicrosoftSimulatorHandle, db: Engine
) -> None:
    # Fabrikam's secret was copied from Contoso's: both would show Contoso's devices.
    contoso = edr_tenant(db, world, name="Contoso", devices=10, alerts=5, policies=2)
    fabrikam_id = add_tenant_row(db, "Fabrikam")
    spec = contoso.simulated.spec
    put_secret(
        fabrikam_id,
        {
            "clientId": spec.client_id,
            "clientSecret": spec.client_secret,
            "tenantId": spec.tenant_id,
        },
    )
    fabrikam = EdrTenant(fabrikam_id, "Fabrikam", contoso.simulated)
    other = edr_tenant(db, world, name="Northwind", devices=10, alerts=5, policies=2)

    state = poll(contoso, fabrikam, other)

    assert state.is_completed()
    reports = summary_of(state)
    assert (reports["Contoso"].outcome, reports["Contoso"].shares_azure_tenant_with) == (
        "warning",
        ("Fabrikam",),
    )
    assert (reports["Fabrikam"].outcome, reports["Fabrikam"].shares_azure_tenant_with) == (
        "warning",
        ("Contoso",),
    )
    assert (reports["Northwind"].outcome, reports["Northwind"].shares_azure_tenant_with) == (
        "succeeded",
        (),
    )
    rows = {row["tenant"]: row for row in artifact_rows(state)}
    assert (
        f"Azure AD tenant {spec.tenant_id} is also polled for Fabrikam" in rows["Contoso"]["error"]
    )
