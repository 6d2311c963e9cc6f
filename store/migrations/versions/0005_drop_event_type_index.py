"""deliveries: drop the index on event_type alone

Every query that filters deliveries by type also filters by session, which its own index
serves; this one only cost the webhook path a B-tree write (about 3 WAL pages a commit).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 09:10:00
"""

from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_deliveries_event_type'))


def downgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_deliveries_event_type'), ['event_type'], unique=False)
