"""Load a block document that may not exist."""

from __future__ import annotations

from prefect.blocks.core import Block
from prefect.client.orchestration import PrefectClient, get_client
from prefect.exceptions import ObjectNotFound


async def load_optional[BlockT: Block](
    block_type: type[BlockT], name: str, client: PrefectClient | None = None
) -> BlockT | None:
    """The block document `name` of this type, or None when there is none."""
    if client is None:
        async with get_client() as own_client:
            return await load_optional(block_type, name, own_client)
    try:
        return await block_type.aload(name, client=client)
    except ValueError as exc:  # Block.aload turns ObjectNotFound into ValueError
        if isinstance(exc.__cause__, ObjectNotFound):
            return None
        raise
