"""unrecognised_deliveries: validly signed bodies that are no known envelope, kept raw

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10 09:00:00
"""

import sqlalchemy as sa
from alembic import op

import sqlmodel
import store.models

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('unrecognised_deliveries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('message_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('received_at', store.models.UTCDateTime(), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=False),
    sa.Column('headers', sa.JSON(), nullable=False),
    sa.Column('secret_index', sa.Integer(), nullable=True),
    sa.Column('duplicates', sa.Integer(), nullable=False),
    sa.Column('last_duplicate_at', store.models.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('message_id')
    )
    with op.batch_alter_table('unrecognised_deliveries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_unrecognised_deliveries_received_at'), ['received_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('unrecognised_deliveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_unrecognised_deliveries_received_at'))

    op.drop_table('unrecognised_deliveries')
