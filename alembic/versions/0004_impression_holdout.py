"""impressions.holdout: searches a refresh held out to judge candidates, never trained on

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from alembic import op
import sqlalchemy as sa


revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN: a batch table rebuild on SQLite would drop impressions and, through the
    # foreign keys' ON DELETE CASCADE, every shown item and feedback event with them.
    op.add_column(
        'impressions',
        sa.Column('holdout', sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.create_index(op.f('ix_impressions_holdout'), 'impressions', ['holdout'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_impressions_holdout'), table_name='impressions')
    op.execute('ALTER TABLE impressions DROP COLUMN holdout')  # native on SQLite >= 3.35 too
