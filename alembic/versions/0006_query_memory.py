"""The query memory: per query and product, what shoppers examined and did; the caller of a
search, the memory lift each shown product was served with, and what the memory has counted

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
    for table in ('impressions', 'feedback_events'):
        op.add_column(
            table,
            sa.Column('memory_folded', sa.Boolean(), server_default=sa.false(), nullable=False),
        )
        op.create_index(op.f(f'ix_{table}_memory_folded'), table, ['memory_folded'], unique=False)
    op.create_table(
        'memory_queries',
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('text', sa.Text(), nullable=False),
        sa.Column('wording', sa.Text(), nullable=True),
        sa.Column('encoder', sa.String(length=64), nullable=True),
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
        sa.Column('shopper', sa.String(length=200), nullable=False),
        sa.Column('products', sa.JSON(), nullable=False),
        sa.Column('at', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('key', 'shopper', name=op.f('pk_memory_shoppers')),
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
        'memory_fold',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('fold', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_memory_fold')),
    )


def downgrade() -> None:
    for table in ('memory_fold', 'memory_shoppers', 'memory_pairs', 'memory_queries'):
        op.drop_table(table)
    for table in ('impressions', 'feedback_events'):
        op.drop_index(op.f(f'ix_{table}_memory_folded'), table_name=table)
        op.execute(f'ALTER TABLE {table} DROP COLUMN memory_folded')
    op.execute('ALTER TABLE impression_items DROP COLUMN memory')
    op.execute('ALTER TABLE impressions DROP COLUMN caller')
