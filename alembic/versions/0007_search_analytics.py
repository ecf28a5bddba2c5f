"""Search analytics: per day, query, type and model version, searches, empty answers and
events; events per shown position; an index of impressions by their words

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from alembic import op
import sqlalchemy as sa


revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        op.f('ix_impressions_query_text'), 'impressions', ['query_text'], unique=False
    )
    op.create_table(
        'search_stats',
        sa.Column('day', sa.Integer(), nullable=False),
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('query_type', sa.String(length=16), nullable=False),
        sa.Column('model_version', sa.String(length=64), nullable=False),
        sa.Column('query', sa.Text(), nullable=False),
        sa.Column('searches', sa.Integer(), nullable=False),
        sa.Column('empty', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            'day', 'key', 'query_type', 'model_version', name=op.f('pk_search_stats')
        ),
    )
    op.create_table(
        'search_event_stats',
        sa.Column('day', sa.Integer(), nullable=False),
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('query_type', sa.String(length=16), nullable=False),
        sa.Column('model_version', sa.String(length=64), nullable=False),
        sa.Column('event', sa.String(length=32), nullable=False),
        sa.Column('searches', sa.Integer(), nullable=False),
        sa.Column('events', sa.Integer(), nullable=False),
        sa.Column('reciprocal_ranks', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(
            'day',
            'key',
            'query_type',
            'model_version',
            'event',
            name=op.f('pk_search_event_stats'),
        ),
    )
    op.create_table(
        'event_positions',
        sa.Column('day', sa.Integer(), nullable=False),
        sa.Column('event', sa.String(length=32), nullable=False),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.Column('events', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('day', 'event', 'position', name=op.f('pk_event_positions')),
    )


def downgrade() -> None:
    op.drop_index(op.f('ix_impressions_query_text'), table_name='impressions')
    op.drop_table('event_positions')
    op.drop_table('search_event_stats')
    op.drop_table('search_stats')
