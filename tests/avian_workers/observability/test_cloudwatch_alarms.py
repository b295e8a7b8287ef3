"""infra/cloudwatch-alarms.yaml: linted by cfn-lint (offline, the CloudFormation resource
schemas it ships) and read with its CloudFormation-aware YAML loader for what lint cannot know:
that the alarms watch the metrics the workers emit, with the workers' schedules."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from cfnlint.api import ManualArgs, lint, lint_file
from cfnlint.decode.cfn_yaml import loads as load_cfn_yaml

from avian_workers.observability.automations import MISSED_INTERVALS_TOLERATED, RUN_EXPECTATIONS
from avian_workers.observability.emf import DIMENSION, NAMESPACE, run_metrics_document
from avian_workers.settings import WorkerType

ROOT = Path(__file__).resolve().parents[3]
TEMPLATE_PATH = ROOT / "infra" / "cloudwatch-alarms.yaml"
TEMPLATE_TEXT = TEMPLATE_PATH.read_text(encoding="utf-8")
TEMPLATE: dict[str, Any] = load_cfn_yaml(TEMPLATE_TEXT)
LINT_CONFIG = ManualArgs(regions=["ca-central-1"])

EMITTED_METRICS = {
    metric["Name"]
    for metric in run_metrics_document(
        worker_type="edr-polling",
        duration_seconds=1,
        succeeded=True,
        items={},
        errors=0,
        timestamp=datetime.now(UTC),
    )["_aws"]["CloudWatchMetrics"][0]["Metrics"]
}


def alarms_of(worker: WorkerType) -> dict[str, dict[str, Any]]:
    """The worker's alarms by metric name."""
    found: dict[str, dict[str, Any]] = {}
    for resource in TEMPLATE["Resources"].values():
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::CloudWatch::Alarm" and properties["Dimensions"] == [
            {"Name": DIMENSION, "Value": worker.value}
        ]:
            assert properties["MetricName"] not in found
            found[properties["MetricName"]] = properties
    return found


def parameter_default(value: Any) -> Any:
    assert set(value) == {"Ref"}, f"expected a parameter reference, got {value!r}"
    return TEMPLATE["Parameters"][value["Ref"]]["Default"]


def test_cfn_lint_finds_no_problem() -> None:
    assert [str(match) for match in lint_file(TEMPLATE_PATH, config=LINT_CONFIG)] == []


def test_cfn_lint_does_check_alarm_properties() -> None:
    broken = TEMPLATE_TEXT.replace("TreatMissingData: breaching", "TreatMissingData: sometimes")
    matches = lint(broken, regions=["ca-central-1"])
    assert any("sometimes" in str(match) for match in matches)


@pytest.mark.parametrize("worker", list(WorkerType))
def test_every_worker_has_failure_duration_and_silence_alarms_in_the_emf_namespace(
    worker: WorkerType,
) -> None:
    alarms = alarms_of(worker)
    assert set(alarms) == {"ExecutionFailure", "ExecutionDuration", "ExecutionSuccess"}
    assert set(alarms) <= EMITTED_METRICS
    for alarm in alarms.values():
        assert alarm["Namespace"] == NAMESPACE
        assert alarm["AlarmActions"] == [{"Ref": "NotificationTopicArn"}]


@pytest.mark.parametrize("worker", list(WorkerType))
def test_one_failed_run_alarms_and_no_run_is_not_a_failure(worker: WorkerType) -> None:
    alarm = alarms_of(worker)["ExecutionFailure"]
    assert (alarm["Statistic"], alarm["Threshold"]) == ("Sum", 1)
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["TreatMissingData"] == "notBreaching"


@pytest.mark.parametrize("worker", list(WorkerType))
def test_a_run_longer_than_the_workers_limit_alarms(worker: WorkerType) -> None:
    alarm = alarms_of(worker)["ExecutionDuration"]
    assert alarm["Statistic"] == "Maximum"
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    limit_ms = RUN_EXPECTATIONS[worker].max_duration.total_seconds() * 1000
    assert parameter_default(alarm["Threshold"]) == limit_ms
    assert alarm["TreatMissingData"] == "notBreaching"


@pytest.mark.parametrize("worker", list(WorkerType))
def test_no_run_in_two_schedule_intervals_alarms(worker: WorkerType) -> None:
    alarm = alarms_of(worker)["ExecutionSuccess"]
    # Every run logs ExecutionSuccess (1 or 0): its SampleCount is the number of runs.
    assert (alarm["Statistic"], alarm["Threshold"]) == ("SampleCount", 1)
    assert alarm["ComparisonOperator"] == "LessThanThreshold"
    assert alarm["TreatMissingData"] == "breaching"
    period = parameter_default(alarm["Period"])
    assert period == RUN_EXPECTATIONS[worker].interval.total_seconds()
    assert alarm["EvaluationPeriods"] == alarm["DatapointsToAlarm"] == MISSED_INTERVALS_TOLERATED
    # PutMetricAlarm: at most 1 day in total below one-hour periods, 7 days otherwise.
    assert period * alarm["EvaluationPeriods"] <= (86_400 if period < 3600 else 604_800)
    assert alarm["OKActions"] == [{"Ref": "NotificationTopicArn"}]


def test_the_log_group_is_the_one_the_deployments_log_to_and_has_a_retention() -> None:
    log_group = TEMPLATE["Resources"]["PlatformLogGroup"]
    assert log_group["Type"] == "AWS::Logs::LogGroup"
    assert log_group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionInDays"}
    deployments = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    groups = {
        d["work_pool"]["job_variables"]["cloudwatch_logs_options"]["awslogs-group"]
        for d in deployments["deployments"]
    }
    assert groups == {log_group["Properties"]["LogGroupName"]}


def test_alarm_names_are_unique_within_a_stack() -> None:
    names = [
        resource["Properties"]["AlarmName"]["Fn::Sub"]
        for resource in TEMPLATE["Resources"].values()
        if resource["Type"] == "AWS::CloudWatch::Alarm"
    ]
    assert len(names) == 9
    assert len(set(names)) == 9
