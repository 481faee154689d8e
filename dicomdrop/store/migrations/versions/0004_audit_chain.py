"""Audit hash chain: the OS user and the keyed chain hashes of each audit row.

Revision ID: 0004_audit_chain
Revises: 0003_console_users
Create Date: 2026-12-04 23:59:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0004_audit_chain'
down_revision = '0003_console_users'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('os_user', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('prev_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('row_hash', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_column('row_hash')
        batch_op.drop_column('prev_hash')
        batch_op.drop_column('os_user')
