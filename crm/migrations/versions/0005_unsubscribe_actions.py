"""unsubscribe actions (issue 5: unsubscribe, undo, data-subject rights)

Revision ID: 0005
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0002"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "unsubscribe_actions",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("account_id", _ID, nullable=False),
        sa.Column("contact_id", _ID, nullable=True),
        sa.Column("message_id", _ID, nullable=True),
        sa.Column("campaign_id", _ID, nullable=True),
        sa.Column("scope", sa.String(length=20), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("effects", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("undone_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name=op.f("fk_unsubscribe_actions_account_id_accounts"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"],
                                name=op.f("fk_unsubscribe_actions_contact_id_contacts"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_unsubscribe_actions")),
    )
    with op.batch_alter_table("unsubscribe_actions", schema=None) as batch_op:
        batch_op.create_index("ix_unsubscribe_actions_contact", ["account_id", "contact_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("unsubscribe_actions", schema=None) as batch_op:
        batch_op.drop_index("ix_unsubscribe_actions_contact")
    op.drop_table("unsubscribe_actions")
