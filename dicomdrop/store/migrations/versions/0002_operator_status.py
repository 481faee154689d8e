"""What an operator sees: daemon heartbeats (which ``dicomdrop watch`` processes run, on which
host, since when) and the per-file progress of running jobs.

Revision ID: 0002_operator_status
Revises: 0001
Create Date: 2026-12-04 23:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0002_operator_status'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('daemon_heartbeats',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('host', sa.String(length=200), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('beat_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.String(length=40), nullable=False),
    sa.Column('workers', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_daemon_heartbeats'))
    )
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('files_done', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('files_total', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('files_total')
        batch.drop_column('files_done')
    op.drop_table('daemon_heartbeats')
