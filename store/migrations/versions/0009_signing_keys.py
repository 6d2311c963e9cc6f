"""signing_keys: webhook signing keys added and retired at run time, read by every receiver

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-10 10:00:00
"""

import sqlalchemy as sa
from alembic import op

import sqlmodel
import store.models

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('signing_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('digest', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('secret', sa.Text(), nullable=True),
    sa.Column('added_at', store.models.UTCDateTime(), nullable=False),
    sa.Column('retired_at', store.models.UTCDateTime(), nullable=True),
    sa.Column('expires_at', store.models.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('digest')
    )


def downgrade() -> None:
    op.drop_table('signing_keys')
