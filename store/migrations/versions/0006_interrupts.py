"""tracked_sessions: who interrupted a session, why, and when; how long a route keeps it idle

A run idlehook stopped (deadline, max_running) ends `end_turn` like a normal one; without this
the archived result could not tell the two apart. `idle_for_seconds` is the matching route's
`idle_for`, which overrides the reaper's default for that session. `token_usd` is the token list
cost alone: what a session budget caps (`cost_usd` adds runtime under the billing model).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 17:50:00
"""

import sqlalchemy as sa
from alembic import op

import sqlmodel
import store.models

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tracked_sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('interrupted_at', store.models.UTCDateTime(), nullable=True))
        batch_op.add_column(
            sa.Column('interrupt_reason', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True)
        )
        batch_op.add_column(sa.Column('idle_for_seconds', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('token_usd', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('tracked_sessions', schema=None) as batch_op:
        batch_op.drop_column('token_usd')
        batch_op.drop_column('idle_for_seconds')
        batch_op.drop_column('interrupt_reason')
        batch_op.drop_column('interrupted_at')
