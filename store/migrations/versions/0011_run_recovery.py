"""handler_runs: re-routing, discarding and superseding runs (replay, reroute, discard)

A delivery may now be routed again through the current routes: each routing is a
`generation` (0 at ingest), so the unique key becomes (delivery_id, handler, generation). A
`_route` run records its decision; a discarded or superseded run records by whom, when, why,
and the run that replaced it.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 10:30:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

import store.models

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("handler_runs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("generation", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("decision", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True)
        )
        batch_op.add_column(
            sa.Column("resolved_by", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True)
        )
        batch_op.add_column(sa.Column("resolved_at", store.models.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("resolution", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("superseded_by", sa.Integer(), nullable=True))
        batch_op.drop_constraint("uq_handler_runs_delivery_handler", type_="unique")
        batch_op.create_unique_constraint(
            "uq_handler_runs_delivery_generation", ["delivery_id", "handler", "generation"]
        )


def downgrade() -> None:
    # Only the first routing's runs fit the old key; later generations are history to drop.
    op.execute("DELETE FROM handler_runs WHERE generation > 0")
    with op.batch_alter_table("handler_runs", schema=None) as batch_op:
        batch_op.drop_constraint("uq_handler_runs_delivery_generation", type_="unique")
        batch_op.create_unique_constraint(
            "uq_handler_runs_delivery_handler", ["delivery_id", "handler"]
        )
        batch_op.drop_column("superseded_by")
        batch_op.drop_column("resolution")
        batch_op.drop_column("resolved_at")
        batch_op.drop_column("resolved_by")
        batch_op.drop_column("decision")
        batch_op.drop_column("generation")
