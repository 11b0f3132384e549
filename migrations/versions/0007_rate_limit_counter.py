"""Rate-limit counters in the database, so that every app process shares one log-in limit

With Flask-Limiter's in-memory storage each gunicorn worker counted on its own, so N
workers let N times the log-in limit through. One row per limit and client address (the
unique key; `id` is the usual surrogate, 64-bit as PostgreSQL spends one per upsert) holds
the hits in the current fixed window and when it ends (seconds since the epoch);
app/ratelimit.py counts with one INSERT ... ON CONFLICT DO UPDATE and deletes ended rows.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 05:30:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('rate_limit_counter',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('key', sa.Text(), nullable=False),
    sa.Column('hits', sa.Integer(), nullable=False),
    sa.Column('expires_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rate_limit_counter')),
    sa.UniqueConstraint('key', name=op.f('uq_rate_limit_counter_key'))
    )


def downgrade():
    op.drop_table('rate_limit_counter')
