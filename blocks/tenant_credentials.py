"""Block type: where each tenant's Microsoft app credentials live in AWS Secrets Manager."""

from __future__ import annotations

from typing import ClassVar
from uuid import UUID

from prefect.blocks.core import Block
from prefect_aws import AwsCredentials
from pydantic import Field, field_validator

from avian_workers.secrets_manager import TenantCredentials, fetch_tenant_credentials
from avian_workers.settings import check_secret_name_template


class AvianTenantCredentials(Block):
    """Resolves `edr/tenant/{tenant_id}` at run time: one block for every tenant.

    Block names cannot contain `/`, so the block holds the secret name template and the AWS
    credentials rather than one block per tenant.
    """

    _block_type_name: ClassVar[str] = "AVIAN Tenant Credentials"
    _block_type_slug: ClassVar[str] = "avian-tenant-credentials"
    _description: ClassVar[str] = (
        "Per-tenant Microsoft Entra ID app credentials of the AVIAN EDR polling worker, read "
        "from AWS Secrets Manager at run time (SecretString JSON: clientId, clientSecret, tenantId)."
    )

    secret_name_template: str = Field(
        default="edr/tenant/{tenant_id}",
        description="Secret name with the placeholder {tenant_id} (the AVIAN tenant UUID).",
    )
    aws_credentials: AwsCredentials = Field(
        default_factory=AwsCredentials,
        description="Credentials for Secrets Manager; empty fields fall back to the ECS task role.",
    )

    @field_validator("secret_name_template")
    @classmethod
    def _template_names_tenant(cls, value: str) -> str:
        return check_secret_name_template(value)

    def credentials_for(self, tenant_id: UUID | str) -> TenantCredentials:
        """Read and validate one tenant's secret; TenantSecretError names what is wrong."""
        client = self.aws_credentials.get_secrets_manager_client()
        return fetch_tenant_credentials(client, self.secret_name_template, tenant_id)
