"""Optional TOTP two-factor log-in on the user table

The TOTP secret must be recoverable to check a code, so it is stored encrypted (Fernet,
key derived from the deployment's secret), never in clear; `totp_enabled` is set only
after the user has confirmed a first code; `totp_last_step` is the RFC 6238 time-step of
the last accepted code, so that a code cannot be replayed within its validity window.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 02:35:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('user', schema=None) as batch_op:
        batch_op.add_column(sa.Column('totp_secret', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('totp_enabled', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('totp_last_step', sa.BigInteger(), nullable=True))


def downgrade():
    with op.batch_alter_table('user', schema=None) as batch_op:
        batch_op.drop_column('totp_last_step')
        batch_op.drop_column('totp_enabled')
        batch_op.drop_column('totp_secret')
