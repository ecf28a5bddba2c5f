"""initial schema: products and impressions

Revision ID: 0001
Revises: 
Create Date: 2026-11-24
"""

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('impressions',
    sa.Column('search_id', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('query_text', sa.Text(), nullable=True),
    sa.Column('has_image', sa.Boolean(), nullable=False),
    sa.Column('image_sha256', sa.String(length=64), nullable=True),
    sa.Column('query_type', sa.String(length=16), nullable=False),
    sa.Column('filters', sa.JSON(), nullable=True),
    sa.Column('user_id', sa.String(length=128), nullable=True),
    sa.Column('model_version', sa.String(length=64), nullable=False),
    sa.Column('k', sa.Integer(), nullable=False),
    sa.Column('latency_ms', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('search_id', name=op.f('pk_impressions'))
    )
    with op.batch_alter_table('impressions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_impressions_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_impressions_model_version'), ['model_version'], unique=False)
        batch_op.create_index(batch_op.f('ix_impressions_user_id'), ['user_id'], unique=False)

    op.create_table('products',
    sa.Column('id', sa.String(length=128), nullable=False),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('attributes', sa.JSON(), nullable=False),
    sa.Column('image_path', sa.Text(), nullable=True),
    sa.Column('image_sha256', sa.String(length=64), nullable=True),
    sa.Column('revision', sa.BigInteger(), nullable=False),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_products'))
    )
    with op.batch_alter_table('products', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_products_revision'), ['revision'], unique=False)

    op.create_table('impression_items',
    sa.Column('search_id', sa.String(length=32), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('product_id', sa.String(length=128), nullable=False),
    sa.Column('score', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['search_id'], ['impressions.search_id'], name=op.f('fk_impression_items_search_id_impressions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('search_id', 'position', name=op.f('pk_impression_items'))
    )
    with op.batch_alter_table('impression_items', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_impression_items_product_id'), ['product_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('impression_items', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_impression_items_product_id'))

    op.drop_table('impression_items')
    with op.batch_alter_table('products', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_products_revision'))

    op.drop_table('products')
    with op.batch_alter_table('impressions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_impressions_user_id'))
        batch_op.drop_index(batch_op.f('ix_impressions_model_version'))
        batch_op.drop_index(batch_op.f('ix_impressions_created_at'))

    op.drop_table('impressions')
