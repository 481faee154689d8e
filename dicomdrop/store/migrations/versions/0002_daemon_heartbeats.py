"""Daemon heartbeats: which ``dicomdrop watch`` processes run, on which host, since when.

Revision ID: 0002_daemon_heartbeats
Revises: 0001
Create Date: 2026-12-04 23:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0002_daemon_heartbeats'
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


def downgrade() -> None:
    op.drop_table('daemon_heartbeats')
