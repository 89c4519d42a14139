"""issue 6: sms_messages (Twilio SID, segments and delivery status of each SMS handed to the gateway)

Revision ID: 0006
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0002"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "sms_messages",
        sa.Column("message_id", Id, nullable=False),
        sa.Column("account_id", Id, nullable=False),
        sa.Column("sid", sa.String(length=64), nullable=True),
        sa.Column("encoding", sa.String(length=8), nullable=False),
        sa.Column("segments", sa.Integer(), nullable=False),
        sa.Column("delivery_status", sa.String(length=16), nullable=False),
        sa.Column("error_code", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"], name=op.f("fk_sms_messages_message_id_messages"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_sms_messages_account_id_accounts"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_sms_messages")),
        sa.UniqueConstraint("sid", name="uq_sms_messages_sid"),
    )


def downgrade() -> None:
    op.drop_table("sms_messages")
