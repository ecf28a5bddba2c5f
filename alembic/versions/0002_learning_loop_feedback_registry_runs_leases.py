"""learning loop: feedback, propensities, model registry, runs, leases

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    _create_registry_tables()
    _create_feedback_events()
    _add_propensity_columns()


def _create_registry_tables() -> None:
    op.create_table('leases',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('holder', sa.String(length=128), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_leases'))
    )
    op.create_table('model_versions',
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('parent', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.Column('window_start', sa.DateTime(timezone=True), nullable=True),
    sa.Column('window_end', sa.DateTime(timezone=True), nullable=True),
    sa.Column('class_weights', sa.JSON(), nullable=True),
    sa.Column('metrics', sa.JSON(), nullable=True),
    sa.Column('artifact_sha256', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('version', name=op.f('pk_model_versions'))
    )
    op.create_table('training_runs',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('trigger', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('candidate', sa.String(length=64), nullable=True),
    sa.Column('promoted', sa.Boolean(), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_training_runs'))
    )
    op.create_table('active_model',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('activated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['version'], ['model_versions.version'], name=op.f('fk_active_model_version_model_versions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_active_model'))
    )


def _create_feedback_events() -> None:
    op.create_table('feedback_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('event_id', sa.String(length=128), nullable=False),
    sa.Column('search_id', sa.String(length=32), nullable=False),
    sa.Column('product_id', sa.String(length=128), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('ts', sa.DateTime(timezone=True), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['search_id'], ['impressions.search_id'], name=op.f('fk_feedback_events_search_id_impressions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_feedback_events')),
    sa.UniqueConstraint('event_id', name=op.f('uq_feedback_events_event_id'))
    )
    with op.batch_alter_table('feedback_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_feedback_events_received_at'), ['received_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_feedback_events_search_id'), ['search_id'], unique=False)


def _add_propensity_columns() -> None:
    with op.batch_alter_table('impression_items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('model_position', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('propensity', sa.Float(), nullable=True))

    # Plain ADD COLUMN: a batch table rebuild on SQLite would drop impressions and, through the
    # ON DELETE CASCADE, every impression item with them.
    op.add_column('impressions', sa.Column('explore', sa.Boolean(), server_default=sa.false(), nullable=False))



def downgrade() -> None:
    op.execute('ALTER TABLE impressions DROP COLUMN explore')  # native on SQLite >= 3.35 too

    with op.batch_alter_table('impression_items', schema=None) as batch_op:
        batch_op.drop_column('propensity')
        batch_op.drop_column('model_position')

    with op.batch_alter_table('feedback_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_feedback_events_search_id'))
        batch_op.drop_index(batch_op.f('ix_feedback_events_received_at'))

    op.drop_table('feedback_events')
    op.drop_table('active_model')
    op.drop_table('training_runs')
    op.drop_table('model_versions')
    op.drop_table('leases')
