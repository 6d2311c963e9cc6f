"""webhook_rejections: requests the webhook path refused, per minute, reason and status

Counted in each receiver's memory and added here every few seconds, for `idlehook status`.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 11:00:00
"""

import sqlalchemy as sa
from alembic import op

import sqlmodel
import store.models

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('webhook_rejections',
    sa.Column('minute', store.models.UTCDateTime(), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('status', sa.Integer(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('minute', 'reason', 'status')
    )


def downgrade() -> None:
    op.drop_table('webhook_rejections')
