"""handler_runs: index runs by (lane, state, delivery_id, position) in place of (lane, ...)

The claim's two per-lane checks (an earlier unfinished run in the lane? a live lease in it?)
look for unfinished runs of one lane. Through (lane, delivery_id, position) they read the
lane's whole history: a long-lived session's lane of 100,000 finished runs made every claim
of its next run read all of them (bench/claim.py). With the state second, they read only the
lane's unfinished runs; nothing else reads the lane in (delivery, position) order.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 07:00:00
"""

from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('handler_runs', schema=None) as batch_op:
        batch_op.create_index(
            'ix_handler_runs_lane_state', ['lane', 'state', 'delivery_id', 'position'], unique=False
        )
        batch_op.drop_index('ix_handler_runs_lane_order')


def downgrade() -> None:
    with op.batch_alter_table('handler_runs', schema=None) as batch_op:
        batch_op.create_index(
            'ix_handler_runs_lane_order', ['lane', 'delivery_id', 'position'], unique=False
        )
        batch_op.drop_index('ix_handler_runs_lane_state')
