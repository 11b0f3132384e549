"""Drop two indexes every save paid for and no query used: form saves at 100,000 records

- `uq_audit_event_hash`: a unique index over SHA-256 hashes puts each new audit row on a
  random page of an index that grows with the trail (713 MB at 100,000 records, 5.7
  million rows), so a save of fifteen changed fields dirtied fifteen random pages, each
  read from disk or the OS cache and written to the WAL in full after every checkpoint.
  No query looks an event up by its hash; the chain (each row's prev_hash, appends
  serialised by the head row's lock) is what makes the trail tamper-evident, and
  `flask audit verify` checks it.
- `ix_form_instance_record_id`: the unique (record_id, instrument, instance) index leads
  with record_id and serves every lookup by record.

SQLite cannot drop a table's unique constraint, so audit_event is rebuilt there (batch
mode copies the rows); its append-only triggers go with the old table and are recreated
from their stored definitions.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 11:30:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def _rebuild_audit_event_on_sqlite(change):
    """Run `change(batch_op)` on audit_event; on SQLite keep its triggers across the rebuild."""
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        with op.batch_alter_table('audit_event', schema=None) as batch_op:
            change(batch_op)
        return
    triggers = bind.execute(sa.text(
        "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_event'"
    )).scalars().all()
    with op.batch_alter_table('audit_event', schema=None, recreate='always') as batch_op:
        change(batch_op)
    for sql in triggers:
        op.execute(sql)


def upgrade():
    _rebuild_audit_event_on_sqlite(lambda batch_op: batch_op.drop_constraint('uq_audit_event_hash', type_='unique'))
    with op.batch_alter_table('form_instance', schema=None) as batch_op:
        batch_op.drop_index('ix_form_instance_record_id')


def downgrade():
    with op.batch_alter_table('form_instance', schema=None) as batch_op:
        batch_op.create_index('ix_form_instance_record_id', ['record_id'], unique=False)
    _rebuild_audit_event_on_sqlite(
        lambda batch_op: batch_op.create_unique_constraint('uq_audit_event_hash', ['hash']))
