"""Load a block document that may not exist."""

from __future__ import annotations

from prefect.blocks.core import Block
from prefect.client.orchestration import PrefectClient, get_client
from prefect.exceptions import ObjectNotFound
from pydantic import ValidationError


class InvalidBlockDocumentError(Exception):
    """A stored block document that no longer validates (edited by hand, say in the UI)."""


async def load_optional[BlockT: Block](
    block_type: type[BlockT], name: str, client: PrefectClient | None = None
) -> BlockT | None:
    """The block document `name` of this type, or None when there is none.

    InvalidBlockDocumentError when the stored document no longer validates.
    """
    if client is None:
        async with get_client() as own_client:
            return await load_optional(block_type, name, own_client)
    try:
        return await block_type.aload(name, client=client)
    except ValueError as exc:  # Block.aload turns ObjectNotFound into ValueError
        if isinstance(exc.__cause__, ObjectNotFound):
            return None
        raise
    except RuntimeError as exc:  # ... and stored data that fails validation into RuntimeError
        if isinstance(exc.__cause__, ValidationError):
            raise InvalidBlockDocumentError(str(exc)) from exc
        raise
