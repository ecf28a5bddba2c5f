"""The query memory: per query and product, what shoppers examined and did; the caller of a
search and the memory lift each shown product was served with

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from alembic import op
import sqlalchemy as sa


revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('impressions', sa.Column('caller', sa.String(length=64), nullable=True))
    op.add_column('impression_items', sa.Column('memory', sa.Float(), nullable=True))
    op.create_table(
        'memory_queries',
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('text', sa.Text(), nullable=False),
        sa.Column('wording', sa.Text(), nullable=True),
        sa.Column('vector', sa.LargeBinary(), nullable=True),
        sa.Column('searches', sa.Float(), nullable=False),
        sa.Column('at', sa.Float(), nullable=False),
        sa.Column('fold', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('key', name=op.f('pk_memory_queries')),
    )
    op.create_table(
        'memory_pairs',
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('product_id', sa.String(length=128), nullable=False),
        sa.Column('exam', sa.Float(), nullable=False),
        sa.Column('gain', sa.Float(), nullable=False),
        sa.Column('events', sa.JSON(), nullable=False),
        sa.Column('at', sa.Float(), nullable=False),
        sa.Column('fold', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('key', 'product_id', name=op.f('pk_memory_pairs')),
    )
    op.create_table(
        'memory_shoppers',
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('product_id', sa.String(length=128), nullable=False),
        sa.Column('shopper', sa.String(length=200), nullable=False),
        sa.Column('exam', sa.Float(), nullable=False),
        sa.Column('grade', sa.Float(), nullable=False),
        sa.Column('types', sa.Text(), nullable=False),
        sa.Column('at', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('key', 'product_id', 'shopper', name=op.f('pk_memory_shoppers')),
    )
    for table, column in (
        ('memory_queries', 'at'),
        ('memory_queries', 'fold'),
        ('memory_pairs', 'at'),
        ('memory_pairs', 'fold'),
        ('memory_shoppers', 'at'),
    ):
        op.create_index(op.f(f'ix_{table}_{column}'), table, [column], unique=False)
    op.create_table(
        'memory_cursor',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('impressions_until', sa.DateTime(timezone=True), nullable=False),
        sa.Column('events_until', sa.DateTime(timezone=True), nullable=False),
        sa.Column('fold', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_memory_cursor')),
    )


def downgrade() -> None:
    for table in ('memory_cursor', 'memory_shoppers', 'memory_pairs', 'memory_queries'):
        op.drop_table(table)
    op.execute('ALTER TABLE impression_items DROP COLUMN memory')
    op.execute('ALTER TABLE impressions DROP COLUMN caller')
