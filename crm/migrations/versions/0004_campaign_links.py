"""campaign link table (issue 4: click tracking)

Revision ID: 0004
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "campaign_links",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("campaign_id", _ID, nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("url_hash", sa.String(length=64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"],
                                name=op.f("fk_campaign_links_campaign_id_campaigns"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_links")),
        sa.UniqueConstraint("campaign_id", "idx", name="uq_campaign_links_idx"),
        sa.UniqueConstraint("campaign_id", "url_hash", name="uq_campaign_links_url_hash"),
    )


def downgrade() -> None:
    op.drop_table("campaign_links")
