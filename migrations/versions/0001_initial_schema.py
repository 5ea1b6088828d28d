"""Initial schema: conferences, participants, subscriptions, HSS tables, tokens, event log.

Revision ID: 0001
Revises:
Create Date: 2026-11-25 13:27:56.974018
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('api_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('scope', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('revoked_at', sa.DateTime(), nullable=True),
    sa.Column('last_used_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
    sa.UniqueConstraint('name', name=op.f('uq_api_tokens_name')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_api_tokens_token_hash'))
    )
    op.create_table('conferences',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('uri', sa.Text(), nullable=False),
    sa.Column('factory_uri', sa.Text(), nullable=False),
    sa.Column('initiator', sa.Text(), nullable=True),
    sa.Column('subject', sa.Text(), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('locked', sa.Boolean(), nullable=False),
    sa.Column('mrfp_node', sa.String(length=64), nullable=True),
    sa.Column('owner_node', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('ended_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_conferences')),
    sa.UniqueConstraint('uri', name=op.f('uq_conferences_uri'))
    )
    with op.batch_alter_table('conferences', schema=None) as batch_op:
        batch_op.create_index('ix_conferences_created', ['created_at', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_conferences_state'), ['state'], unique=False)

    op.create_table('event_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('conference_id', sa.String(length=64), nullable=True),
    sa.Column('participant_id', sa.String(length=64), nullable=True),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('actor', sa.Text(), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_event_log'))
    )
    with op.batch_alter_table('event_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_event_log_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_event_log_conference_id'), ['conference_id'], unique=False)

    op.create_table('filter_criteria',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('method', sa.Text(), nullable=True),
    sa.Column('request_uri_regex', sa.Text(), nullable=False),
    sa.Column('as_uri', sa.Text(), nullable=False),
    sa.Column('default_handling', sa.Text(), server_default=sa.text("'continue'"), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_filter_criteria'))
    )
    op.create_table('subscribers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('impu', sa.Text(), nullable=False),
    sa.Column('impi', sa.Text(), nullable=False),
    sa.Column('realm', sa.Text(), nullable=False),
    sa.Column('ha1', sa.Text(), nullable=False),
    sa.Column('scscf', sa.Text(), nullable=True),
    sa.Column('barred', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('created_at', sa.TIMESTAMP(), server_default=sa.func.current_timestamp(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_subscribers')),
    sa.UniqueConstraint('impu', name=op.f('uq_subscribers_impu'))
    )
    op.create_table('participants',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('conference_id', sa.String(length=64), nullable=False),
    sa.Column('uri', sa.Text(), nullable=False),
    sa.Column('display_name', sa.Text(), nullable=True),
    sa.Column('call_id', sa.Text(), nullable=True),
    sa.Column('local_tag', sa.Text(), nullable=True),
    sa.Column('remote_tag', sa.Text(), nullable=True),
    sa.Column('mrfp_member_id', sa.String(length=64), nullable=True),
    sa.Column('mrfp_call_id', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('joining_method', sa.String(length=32), nullable=True),
    sa.Column('disconnection_method', sa.String(length=32), nullable=True),
    sa.Column('muted', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('joined_at', sa.DateTime(), nullable=True),
    sa.Column('left_at', sa.DateTime(), nullable=True),
    sa.Column('dialog_state', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['conference_id'], ['conferences.id'], name=op.f('fk_participants_conference_id_conferences'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_participants'))
    )
    with op.batch_alter_table('participants', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_participants_call_id'), ['call_id'], unique=False)
        batch_op.create_index('ix_participants_conf_created', ['conference_id', 'created_at', 'id'], unique=False)

    op.create_table('subscriptions',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('conference_id', sa.String(length=64), nullable=False),
    sa.Column('subscriber_uri', sa.Text(), nullable=False),
    sa.Column('call_id', sa.Text(), nullable=True),
    sa.Column('local_tag', sa.Text(), nullable=True),
    sa.Column('remote_tag', sa.Text(), nullable=True),
    sa.Column('expires_at', sa.DateTime(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('dialog_state', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['conference_id'], ['conferences.id'], name=op.f('fk_subscriptions_conference_id_conferences'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_subscriptions'))
    )
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_subscriptions_call_id'), ['call_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_subscriptions_conference_id'), ['conference_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_subscriptions_conference_id'))
        batch_op.drop_index(batch_op.f('ix_subscriptions_call_id'))

    op.drop_table('subscriptions')
    with op.batch_alter_table('participants', schema=None) as batch_op:
        batch_op.drop_index('ix_participants_conf_created')
        batch_op.drop_index(batch_op.f('ix_participants_call_id'))

    op.drop_table('participants')
    op.drop_table('subscribers')
    op.drop_table('filter_criteria')
    with op.batch_alter_table('event_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_event_log_conference_id'))
        batch_op.drop_index(batch_op.f('ix_event_log_at'))

    op.drop_table('event_log')
    with op.batch_alter_table('conferences', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_conferences_state'))
        batch_op.drop_index('ix_conferences_created')

    op.drop_table('conferences')
    op.drop_table('api_tokens')
