"""products.description: a catalog's free text beside the title (text columns), searched but not
filtered on

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from alembic import op
import sqlalchemy as sa


revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        'products', sa.Column('description', sa.Text(), server_default='', nullable=False)
    )


def downgrade() -> None:
    op.execute('ALTER TABLE products DROP COLUMN description')
