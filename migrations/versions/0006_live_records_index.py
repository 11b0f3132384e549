"""Partial index on live records per site, by number: the record-status grid at 100,000 records

The grid counts a site's live records and pages through them by number. With only
(site_id) and (site_id, number) indexes, PostgreSQL read every record of the site from the
table to check `deleted_at IS NULL` (25 ms for the count, and a sort of 25,000 rows for the
last page at 100,000 records); with this partial index both are index-only. Measured in
BENCHMARKS.md.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 03:35:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

LIVE = sa.text("deleted_at IS NULL")


def upgrade():
    with op.batch_alter_table('record', schema=None) as batch_op:
        batch_op.create_index('ix_record_site_id_number_live', ['site_id', 'number'], unique=False,
                              postgresql_where=LIVE, sqlite_where=LIVE)


def downgrade():
    with op.batch_alter_table('record', schema=None) as batch_op:
        batch_op.drop_index('ix_record_site_id_number_live')
