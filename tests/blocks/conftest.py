"""Blocks against moto's Secrets Manager; resolver and registration tests also use the Prefect test server."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect_aws import AwsClientParameters, AwsCredentials

from blocks.names import BlockNames


@pytest.fixture
def secretsmanager(moto_reset: str) -> Any:
    """A Secrets Manager client on moto (emptied after the test)."""
    return boto3.client("secretsmanager", endpoint_url=moto_reset, region_name="ca-central-1")


@pytest.fixture
def moto_credentials(moto_reset: str) -> AwsCredentials:
    """An AwsCredentials block pointing at moto; no keys, so boto3's default chain supplies them."""
    return AwsCredentials(
        region_name="ca-central-1",
        aws_client_parameters=AwsClientParameters(endpoint_url=moto_reset),
    )


@pytest.fixture
def block_names(prefect_server: None) -> Iterator[BlockNames]:
    """Block document names of this test alone; every document it created is deleted afterwards."""
    suffix = secrets.token_hex(4)
    names = BlockNames(
        aws_credentials=f"avian-aws-{suffix}",
        tenant_credentials=f"avian-tenant-credentials-{suffix}",
        database_url=f"avian-database-url-{suffix}",
        redis_url=f"avian-redis-url-{suffix}",
        mailbox=f"avian-mailbox-{suffix}",
        imap_password=f"avian-imap-password-{suffix}",
        imap_oauth_client_secret=f"avian-imap-oauth-client-secret-{suffix}",
    )
    yield names
    with get_client(sync_client=True) as client:
        for document in client.read_block_documents():
            if document.name and document.name.endswith(suffix):
                client.delete_block_document(document.id)


def saved[BlockT: Block](block: BlockT, name: str) -> BlockT:
    """`block`, saved under `name` on the test server."""
    block.save(name, overwrite=True)
    return block
