"""prefect.yaml, deployed by `prefect deploy --all` to a hybrid ECS pool and submitted by the ECS worker to moto.

One real Prefect server and one moto for the module, set up in the order an operator goes:
register the blocks, create the pool, deploy (build and push switched off), run a deployment by
hand, start the ECS worker once. The tests then read back what each step left behind.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any
from uuid import UUID

import boto3
import pytest
from moto.ecs.models import EC2ContainerServiceBackend
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import ConcurrencyLimitStrategy
from prefect.client.schemas.responses import DeploymentResponse
from prefect.flows import load_flow_from_entrypoint
from prefect.utilities.callables import parameter_schema
from prefect_aws.workers.ecs_worker import ECSWorker

from flows import ENTRYPOINTS
from tests.deployment.conftest import REPO, PrefectServer

REGION = "ca-central-1"
POOL = "avian-ecs"  # scripts/deploy.sh's default for PREFECT_WORK_POOL_NAME
CLUSTER = "avian-platform"
REPOSITORY = "123456789012.dkr.ecr.ca-central-1.amazonaws.com/avian-workers"
IMAGE_TAG = "2026.11.28-test"
TASK_ROLE = "arn:aws:iam::123456789012:role/avian-workers-task"
EXECUTION_ROLE = "arn:aws:iam::123456789012:role/avian-workers-execution"
WORKDIR = "/opt/prefect/avian-workers"

# Values stored in blocks that must never show up anywhere else.
AWS_KEY_IN_BLOCK = f"aws-key-in-block-{secrets.token_hex(12)}"
IMAP_PASSWORD_IN_BLOCK = f"imap-password-in-block-{secrets.token_hex(12)}"
IMAP_ENV = {
    "IMAP_HOST": "imap.avian.test",
    "IMAP_USER": "alerts@avian.test",
    "IMAP_PASSWORD": IMAP_PASSWORD_IN_BLOCK,
}


@dataclass(frozen=True)
class Worker:
    """What prefect.yaml promises for one worker."""

    cron: str
    cpu: int
    memory: int


WORKERS = {
    "edr-polling": Worker(cron="*/15 * * * *", cpu=1024, memory=2048),
    "metrics-aggregation": Worker(cron="0 0 * * *", cpu=512, memory=1024),
    "email-alerts": Worker(cron="*/5 * * * *", cpu=512, memory=1024),
}


@dataclass(frozen=True)
class Network:
    vpc_id: str
    subnets: tuple[str, str]
    security_group: str


@dataclass(frozen=True)
class Stack:
    """The deployed system and the output of every command that built it."""

    server: PrefectServer
    network: Network
    moto_url: str
    outputs: dict[str, subprocess.CompletedProcess[str]]
    flow_run_id: UUID

    def client(self) -> SyncPrefectClient:
        return SyncPrefectClient(self.server.api_url)

    def aws(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.moto_url, region_name=REGION)


def _succeeded(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (
        f"{' '.join(result.args)} exited {result.returncode}\n"
        f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
    )
    return result


@pytest.fixture(scope="module")
def network(moto_server: str) -> Iterator[Network]:
    """The VPC, two subnets, security group and cluster the operator guide creates."""
    ec2 = boto3.client("ec2", endpoint_url=moto_server, region_name=REGION)
    vpc_id = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsHostnames={"Value": True})
    subnet_a, subnet_b = (
        ec2.create_subnet(VpcId=vpc_id, CidrBlock=cidr)["Subnet"]["SubnetId"]
        for cidr in ("10.40.1.0/24", "10.40.2.0/24")
    )
    group = ec2.create_security_group(
        GroupName="avian-workers", Description="AVIAN workers", VpcId=vpc_id
    )["GroupId"]
    boto3.client("ecs", endpoint_url=moto_server, region_name=REGION).create_cluster(
        clusterName=CLUSTER
    )
    yield Network(vpc_id=vpc_id, subnets=(subnet_a, subnet_b), security_group=group)
    reset = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")
    urllib.request.urlopen(reset, timeout=10).close()


def _require_flow_modules() -> None:
    missing = [
        entrypoint.split(":")[0].replace(".", "/") + ".py"
        for entrypoint in ENTRYPOINTS.values()
        if not (REPO / (entrypoint.split(":")[0].replace(".", "/") + ".py")).is_file()
    ]
    if missing:
        pytest.fail(f"prefect.yaml deploys flows that do not exist yet: {', '.join(missing)}")


def _task_level_memory_only(original: Any) -> Any:
    """moto's run_task fails (TypeError) on containers without memory, as Fargate tasks have."""

    def requirements(task_definition: Any) -> Any:
        containers = [{"memory": 0, **c} for c in task_definition.container_definitions]
        return original(SimpleNamespace(container_definitions=containers))

    return staticmethod(requirements)


@pytest.fixture(scope="module")
def stack(prefect_api: PrefectServer, network: Network, moto_server: str) -> Stack:
    _require_flow_modules()
    outputs: dict[str, subprocess.CompletedProcess[str]] = {}
    register = (
        sys.executable,
        "-m",
        "blocks",
        "register",
        "--aws-endpoint-url",
        moto_server,
        "--aws-access-key-id",
        "testing",
        "--aws-secret-access-key",
        AWS_KEY_IN_BLOCK,
        "--database-url-secret",
        "avian/database-url",
        "--redis-url-secret",
        "avian/redis-url",
    )
    outputs["register"] = _succeeded(prefect_api.run(*register, **IMAP_ENV))

    # A hybrid pool whose AWS credentials are the registered block (the ECS worker reaches
    # moto through it; on AWS the block is empty and the worker's task role is used).
    with SyncPrefectClient(prefect_api.api_url) as client:
        aws_block = client.read_block_document_by_name("avian-aws", "aws-credentials")
    template = ECSWorker.get_default_base_job_template()
    template["variables"]["properties"]["aws_credentials"]["default"] = {
        "$ref": {"block_document_id": str(aws_block.id)}
    }
    template_file = prefect_api.client_home / "ecs-base-job-template.json"
    template_file.write_text(json.dumps(template))
    outputs["pool"] = _succeeded(
        prefect_api.run(
            *f"prefect --no-prompt work-pool create {POOL} --type ecs".split(),
            *("--base-job-template", str(template_file)),
        )
    )

    outputs["deploy"] = _succeeded(
        prefect_api.run(
            "bash",
            "scripts/deploy.sh",
            "--skip-build",
            PREFECT_WORK_POOL_NAME=None,
            AVIAN_IMAGE_REPOSITORY=REPOSITORY,
            AVIAN_IMAGE_TAG=IMAGE_TAG,
            AVIAN_TASK_ROLE_ARN=TASK_ROLE,
            AVIAN_EXECUTION_ROLE_ARN=EXECUTION_ROLE,
            AVIAN_VPC_ID=network.vpc_id,
            AVIAN_SUBNET_ID_A=network.subnets[0],
            AVIAN_SUBNET_ID_B=network.subnets[1],
            AVIAN_SECURITY_GROUP_ID=network.security_group,
            AWS_REGION=REGION,
            NODE_ENV="staging",
        )
    )

    outputs["run"] = _succeeded(
        prefect_api.run(
            *["prefect", "deployment", "run", "metrics-aggregation/metrics-aggregation"],
            *("--param", "start_date=2026-11-01"),
        )
    )
    with SyncPrefectClient(prefect_api.api_url) as client:
        (flow_run,) = client.read_flow_runs()

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            EC2ContainerServiceBackend,
            "_calculate_task_resource_requirements",
            _task_level_memory_only(
                EC2ContainerServiceBackend._calculate_task_resource_requirements
            ),
        )
        outputs["worker"] = _succeeded(
            prefect_api.run(
                *f"prefect worker start --pool {POOL} --type ecs --run-once".split(),
                # ECS and EC2 are reached only through the block's endpoint; the worker's
                # event observer (SQS) is pointed at moto too, so nothing leaves loopback.
                AWS_ENDPOINT_URL=None,
                AWS_ENDPOINT_URL_SQS=moto_server,
                AWS_DEFAULT_REGION=REGION,
                PREFECT_LOGGING_LEVEL="DEBUG",
            )
        )
    return Stack(prefect_api, network, moto_server, outputs, flow_run.id)


def _deployments(stack: Stack) -> dict[str, DeploymentResponse]:
    with stack.client() as client:
        return {d.name: d for d in client.read_deployments()}


def test_deploy_creates_the_three_deployments_on_the_ecs_pool(stack: Stack) -> None:
    deployments = _deployments(stack)

    assert set(deployments) == set(WORKERS)
    assert {d.work_pool_name for d in deployments.values()} == {POOL}
    with stack.client() as client:
        assert client.read_work_pool(POOL).type == "ecs"
        flow_names = {client.read_flow(d.flow_id).name for d in deployments.values()}
    assert flow_names == set(WORKERS)


@pytest.mark.parametrize("name", WORKERS)
def test_each_deployment_runs_on_its_legacy_cron_in_utc(stack: Stack, name: str) -> None:
    deployment = _deployments(stack)[name]

    (schedule,) = deployment.schedules
    assert schedule.active
    assert schedule.schedule.model_dump(include={"cron", "timezone"}) == {
        "cron": WORKERS[name].cron,
        "timezone": "UTC",
    }


@pytest.mark.parametrize("name", WORKERS)
def test_each_entrypoint_imports_and_its_schema_is_the_flows_signature(
    stack: Stack, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = _deployments(stack)[name]
    monkeypatch.chdir(REPO)

    flow = load_flow_from_entrypoint(deployment.entrypoint or "")

    assert flow.name == name
    schema = parameter_schema(flow)
    assert deployment.parameter_openapi_schema["properties"] == schema.properties
    assert deployment.parameter_openapi_schema.get("required", []) == schema.required
    assert deployment.enforce_parameter_schema
    assert set(deployment.parameters) <= set(deployment.parameter_openapi_schema["properties"])


def test_parameter_defaults_cover_every_worker(stack: Stack) -> None:
    deployments = _deployments(stack)

    assert deployments["edr-polling"].parameters == {"tenant_ids": None}
    assert deployments["metrics-aggregation"].parameters == {
        "start_date": None,
        "end_date": None,
        "device_ids": None,
    }
    assert deployments["email-alerts"].parameters == {"max_messages": 1000}


@pytest.mark.parametrize("name", WORKERS)
def test_a_run_that_would_overlap_the_running_one_is_cancelled(stack: Stack, name: str) -> None:
    deployment = _deployments(stack)[name]

    assert deployment.global_concurrency_limit is not None
    assert deployment.global_concurrency_limit.limit == 1
    assert deployment.concurrency_options is not None
    assert deployment.concurrency_options.collision_strategy is ConcurrencyLimitStrategy.CANCEL_NEW


@pytest.mark.parametrize("name", WORKERS)
def test_job_variables_size_the_task_and_name_its_log_stream(stack: Stack, name: str) -> None:
    variables = _deployments(stack)[name].job_variables

    assert variables == {
        "image": f"{REPOSITORY}:{IMAGE_TAG}",
        "cluster": CLUSTER,
        "launch_type": "FARGATE",
        "task_role_arn": TASK_ROLE,
        "execution_role_arn": EXECUTION_ROLE,
        "vpc_id": stack.network.vpc_id,
        "network_configuration": {
            "subnets": list(stack.network.subnets),
            "securityGroups": [stack.network.security_group],
            "assignPublicIp": "DISABLED",
        },
        "configure_cloudwatch_logs": True,
        "match_latest_revision_in_family": True,
        "family": f"avian-workers-{name}",
        "cpu": WORKERS[name].cpu,
        "memory": WORKERS[name].memory,
        "env": {"NODE_ENV": "staging", "AWS_REGION": REGION, "WORKER_TYPE": name},
        "cloudwatch_logs_options": {
            "awslogs-group": "/ecs/avian-platform",
            "awslogs-stream-prefix": name,
        },
    }


@pytest.mark.parametrize("name", WORKERS)
def test_flow_runs_start_in_the_images_workdir(stack: Stack, name: str) -> None:
    deployment = _deployments(stack)[name]
    dockerfile_workdirs = [
        line.split(maxsplit=1)[1]
        for line in (REPO / "Dockerfile").read_text().splitlines()
        if line.startswith("WORKDIR ")
    ]

    assert dockerfile_workdirs == [WORKDIR]
    assert deployment.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": WORKDIR}}
    ]


def test_a_manual_run_carries_the_parameter_override(stack: Stack) -> None:
    with stack.client() as client:
        flow_run = client.read_flow_run(stack.flow_run_id)
        deployment = client.read_deployment(flow_run.deployment_id)  # type: ignore[arg-type]

    assert deployment.name == "metrics-aggregation"
    assert flow_run.parameters["start_date"] == "2026-11-01"
    assert flow_run.parameters["end_date"] is None


def test_a_manual_run_with_an_ill_typed_parameter_is_refused(stack: Stack) -> None:
    result = stack.server.run(
        "prefect", "deployment", "run", "email-alerts/email-alerts", "--param", "max_messages=many"
    )
    deployment = _deployments(stack)["email-alerts"]
    with stack.client() as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
        )

    assert "Validation failed for field 'max_messages'" in result.stdout + result.stderr
    assert runs == []


def _registered_task_definition(stack: Stack) -> dict[str, Any]:
    ecs = stack.aws("ecs")
    (arn,) = ecs.list_task_definitions(familyPrefix="avian-workers-metrics-aggregation")[
        "taskDefinitionArns"
    ]
    task_definition: dict[str, Any] = ecs.describe_task_definition(taskDefinition=arn)[
        "taskDefinition"
    ]
    return task_definition


def _submitted_task(stack: Stack) -> dict[str, Any]:
    ecs = stack.aws("ecs")
    (task_arn,) = ecs.list_tasks(cluster=CLUSTER)["taskArns"]
    (task,) = ecs.describe_tasks(cluster=CLUSTER, tasks=[task_arn])["tasks"]
    return dict(task)


def test_the_worker_registers_the_deployments_task_definition(stack: Stack) -> None:
    task_definition = _registered_task_definition(stack)

    (container,) = task_definition["containerDefinitions"]
    assert container["image"] == f"{REPOSITORY}:{IMAGE_TAG}"
    assert container["logConfiguration"] == {
        "logDriver": "awslogs",
        "options": {
            "awslogs-create-group": "true",
            "awslogs-group": "/ecs/avian-platform",
            "awslogs-region": REGION,
            "awslogs-stream-prefix": "metrics-aggregation",
        },
    }
    assert (task_definition["cpu"], task_definition["memory"]) == ("512", "1024")
    assert task_definition["executionRoleArn"] == EXECUTION_ROLE
    assert task_definition["requiresCompatibilities"] == ["FARGATE"]
    assert task_definition["networkMode"] == "awsvpc"


def test_the_worker_runs_the_task_on_the_cluster_in_the_configured_network(stack: Stack) -> None:
    task = _submitted_task(stack)

    assert task["clusterArn"].endswith(f":cluster/{CLUSTER}")
    assert task["launchType"] == "FARGATE"
    assert task["taskDefinitionArn"] == _registered_task_definition(stack)["taskDefinitionArn"]
    assert task["overrides"]["taskRoleArn"] == TASK_ROLE
    (attachment,) = task["attachments"]
    details = {d["name"]: d["value"] for d in attachment["details"]}
    assert details["subnetId"] == stack.network.subnets[0]
    (interface,) = stack.aws("ec2").describe_network_interfaces(
        NetworkInterfaceIds=[details["networkInterfaceId"]]
    )["NetworkInterfaces"]
    assert [g["GroupId"] for g in interface["Groups"]] == [stack.network.security_group]


def test_the_task_runs_the_flow_run_with_the_workers_environment(stack: Stack) -> None:
    (container,) = _submitted_task(stack)["overrides"]["containerOverrides"]
    environment = {item["name"]: item["value"] for item in container["environment"]}

    assert container["command"] == ["prefect", "flow-run", "execute"]
    assert environment["PREFECT__FLOW_RUN_ID"] == str(stack.flow_run_id)
    assert environment["PREFECT_API_URL"] == stack.server.api_url
    assert {k: environment[k] for k in ("WORKER_TYPE", "NODE_ENV", "AWS_REGION")} == {
        "WORKER_TYPE": "metrics-aggregation",
        "NODE_ENV": "staging",
        "AWS_REGION": REGION,
    }


def test_block_registration_run_again_changes_nothing(stack: Stack) -> None:
    def documents() -> list[tuple[Any, ...]]:
        with stack.client() as client:
            return sorted(
                (d.name, d.id, d.updated, json.dumps(d.data, sort_keys=True, default=str))
                for d in client.read_block_documents(include_secrets=True)
                if not d.is_anonymous
            )

    first = stack.outputs["register"].stdout.splitlines()
    before = documents()

    again = _succeeded(stack.server.run(*stack.outputs["register"].args, **IMAP_ENV))

    documents_registered = [
        "aws-credentials/avian-aws",
        "avian-tenant-credentials/avian-tenant-credentials",
        "aws-secret/avian-database-url",
        "aws-secret/avian-redis-url",
        "avian-mailbox/avian-mailbox",
    ]
    assert [line.split() for line in first] == [["created", d] for d in documents_registered]
    assert [line.split() for line in again.stdout.splitlines()] == [
        ["unchanged", d] for d in documents_registered
    ]
    assert documents() == before


def test_secrets_set_in_blocks_never_reach_deployments_runs_or_logs(stack: Stack) -> None:
    with stack.client() as client:
        aws_block = client.read_block_document_by_name(
            "avian-aws", "aws-credentials", include_secrets=True
        )
        mailbox = client.read_block_document_by_name(
            "avian-mailbox", "avian-mailbox", include_secrets=True
        )
        flow_runs = client.read_flow_runs()
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[stack.flow_run_id])))
        places = {
            "deployments": [d.model_dump_json() for d in client.read_deployments()],
            "work pool": [client.read_work_pool(POOL).model_dump_json()],
            "flow runs": [r.model_dump_json() for r in flow_runs],
            "flow run parameters": [json.dumps(r.parameters) for r in flow_runs],
            "flow run logs": [log.message for log in logs],
        }
        submitted = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[stack.flow_run_id]))
        )
    places["ECS task definition"] = [json.dumps(_registered_task_definition(stack), default=str)]
    places["ECS task"] = [json.dumps(_submitted_task(stack), default=str)]
    places |= {
        f"`{name}` output": [result.stdout, result.stderr] for name, result in stack.outputs.items()
    }

    # The secrets are really in the blocks, and the places searched are not empty.
    assert aws_block.data["aws_secret_access_key"] == AWS_KEY_IN_BLOCK
    assert mailbox.data["password"] == IMAP_PASSWORD_IN_BLOCK
    assert submitted[0].infrastructure_pid
    assert any("Creating ECS task run" in message for message in places["flow run logs"])
    leaks = [
        (place, secret[:16])
        for place, texts in places.items()
        for text in texts
        for secret in (AWS_KEY_IN_BLOCK, IMAP_PASSWORD_IN_BLOCK)
        if secret in text
    ]
    assert leaks == []
