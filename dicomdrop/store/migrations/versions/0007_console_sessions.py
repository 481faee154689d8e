"""Console sessions: a generation per console user, raised by a logout or a disable, so that a
session cookie issued before stops working, also after the console restarts.

Revision ID: 0007_console_sessions
Revises: 0006_network_deliveries
Create Date: 2026-12-05 00:55:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0007_console_sessions'
down_revision = '0006_network_deliveries'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('console_users', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('session_generation', sa.Integer(), nullable=False, server_default='0')
        )


def downgrade() -> None:
    with op.batch_alter_table('console_users', schema=None) as batch_op:
        batch_op.drop_column('session_generation')
