"""mail ledger: rows of messages without a Message-ID are keyed by their bytes, not their UID

Revision ID: 0009
Revises: 0008

Such rows were keyed `uid:<uidvalidity>:<uid>`, which names another message once the mailbox is
rebuilt with a new UIDVALIDITY; the copy of a handled message then came back as new mail. The
workers now key them `no-message-id` (with the bytes' hash, as before). This renames the rows
written the old way, so mail handled before the upgrade is recognised too. Where one message was
already recorded twice under two UIDs, one row is renamed and the others keep their key (the
unique index allows one row per key and hash): the one retention deletes last, i.e. a row not
yet filed, else the one filed last, so the renamed key outlives its duplicates.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Exactly the old key of the row's own mailbox position: a Message-ID never takes this form.
_OLD_KEY = "'uid:' || uidvalidity || ':' || uid"


def upgrade() -> None:
    op.execute(f"""
        UPDATE avian_workers.mail_ledger AS l SET message_key = 'no-message-id'
        WHERE l.id IN (
            SELECT DISTINCT ON (raw_sha256) id FROM avian_workers.mail_ledger
            WHERE message_key = {_OLD_KEY}
            ORDER BY raw_sha256, marked_at DESC NULLS FIRST, id DESC
        )
        AND NOT EXISTS (
            SELECT 1 FROM avian_workers.mail_ledger AS o
            WHERE o.message_key = 'no-message-id' AND o.raw_sha256 = l.raw_sha256
        )
    """)


def downgrade() -> None:
    op.execute(f"""
        UPDATE avian_workers.mail_ledger SET message_key = {_OLD_KEY}
        WHERE message_key = 'no-message-id' AND uid IS NOT NULL AND uidvalidity IS NOT NULL
    """)
