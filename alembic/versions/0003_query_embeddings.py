"""query embeddings: the frozen vectors of logged queries, for the learner

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('query_embeddings',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('encoder', sa.String(length=64), nullable=False),
    sa.Column('vector', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('key', 'encoder', name=op.f('pk_query_embeddings'))
    )


def downgrade() -> None:
    op.drop_table('query_embeddings')
