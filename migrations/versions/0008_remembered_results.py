"""Remembered dashboard results shared by every app process

A dashboard's per-site totals are remembered with a fingerprint of the forms they were
computed from (app/records/fingerprints.py). Kept in each process only, every worker had to
compute them once after it started; in this table a starting worker reads them instead. One
row per result (`key` unique; `id` the usual surrogate, 64-bit as PostgreSQL spends one per
upsert); a cache: emptying the table loses nothing.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 06:20:00

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


# revision identifiers, used by Alembic.
revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('remembered_result',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('key', sa.Text(), nullable=False),
    sa.Column('fingerprint', sa.Text(), nullable=False),
    sa.Column('value', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_remembered_result')),
    sa.UniqueConstraint('key', name=op.f('uq_remembered_result_key'))
    )


def downgrade():
    op.drop_table('remembered_result')
