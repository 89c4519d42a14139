"""issue 3: address_failures (the three-failure rule, per account and address)

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "address_failures",
        sa.Column("account_id", Id, nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("consecutive", sa.Integer(), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cause", sa.String(length=32), nullable=True),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_address_failures_account_id_accounts"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("account_id", "address", name=op.f("pk_address_failures")),
    )
    with op.batch_alter_table("address_failures", schema=None) as batch_op:
        batch_op.create_index("ix_address_failures_disabled", ["account_id", "disabled_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("address_failures", schema=None) as batch_op:
        batch_op.drop_index("ix_address_failures_disabled")
    op.drop_table("address_failures")
