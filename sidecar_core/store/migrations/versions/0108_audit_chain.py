"""the audit's hash chains (docs/audit.md) and the services' insert-only audit grants

Revision ID: 0108
Revises: 0102
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sidecar_core.store.grants import apply_grants

revision = "0108"
down_revision = "0103"
branch_labels = None
depends_on = None

CHAINS = 8  # partitions of the chain: transactions auditing at once take different ones

# One field of the canonical form: '|' <length of its UTF-8 bytes> ':' <its text>.
FIELD = """
CREATE OR REPLACE FUNCTION audit_chain_field(v text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
  SELECT '|' || octet_length(convert_to(coalesce(v, ''), 'UTF8')) || ':' || coalesce(v, '')
$$
"""

# The SHA-256 of an event's canonical form (sidecar_core/audit_chain.py computes the same).
HASH = """
CREATE OR REPLACE FUNCTION audit_chain_hash(r audit_events) RETURNS text
LANGUAGE sql STABLE AS $$
  SELECT encode(sha256(convert_to('sidecar.audit.v1'
    || audit_chain_field(r.chain::text) || audit_chain_field(r.chain_pos::text)
    || audit_chain_field(r.id::text) || audit_chain_field(r.seq::text)
    || audit_chain_field(r.type)
    || audit_chain_field(to_char(r.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
    || audit_chain_field(r.facility) || audit_chain_field(r.accession)
    || audit_chain_field(r.study_instance_uid) || audit_chain_field(r.study_id::text)
    || audit_chain_field(r.actor) || audit_chain_field(r.job_id)
    || audit_chain_field(r.attempt::text) || audit_chain_field(r.error_class)
    || audit_chain_field(r.error_message) || audit_chain_field(r.context::text)
    || audit_chain_field(r.prev_hash), 'UTF8')), 'hex')
$$
"""

# Runs at COMMIT of each transaction that inserted audit rows (a deferred constraint trigger),
# so the head row of its chain is locked only from then until the commit ends: after every other
# lock the transaction takes, so it cannot take part in a deadlock. A transaction takes a chain
# no other one holds (SKIP LOCKED), starting from one picked by its backend's pid, and keeps it
# for all its events; it waits only when every chain is held. SECURITY DEFINER: it runs as the
# owner, who may write the chain columns and the heads the services may not.
LINK = """
CREATE OR REPLACE FUNCTION audit_chain_link() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  taken text := current_setting('sidecar.audit_chain', true);
  n int;
  head audit_chain_heads%ROWTYPE;
  r audit_events%ROWTYPE;
BEGIN
  IF taken ~ '^[0-9]{1,4}$' THEN  -- this transaction's chain, from its first event
    SELECT * INTO head FROM audit_chain_heads WHERE chain = taken::int FOR UPDATE;
  END IF;
  IF head.chain IS NULL THEN  -- its first event (or a setting that names no chain)
    SELECT count(*) INTO n FROM audit_chain_heads;
    SELECT * INTO head FROM audit_chain_heads
      ORDER BY (chain - pg_backend_pid() % n + n) % n
      LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
      SELECT * INTO head FROM audit_chain_heads WHERE chain = pg_backend_pid() % n FOR UPDATE;
    END IF;
    PERFORM set_config('sidecar.audit_chain', head.chain::text, true);
  END IF;
  r := NEW;
  r.chain := head.chain;
  r.chain_pos := head.pos + 1;
  r.prev_hash := head.hash;
  r.hash := audit_chain_hash(r);
  UPDATE audit_events SET chain = r.chain, chain_pos = r.chain_pos, prev_hash = r.prev_hash,
         hash = r.hash WHERE id = r.id;
  UPDATE audit_chain_heads SET pos = r.chain_pos, hash = r.hash, event_id = r.id, seq = r.seq,
         at = r.at WHERE chain = head.chain;
  RETURN NULL;
END
$$
"""

TRIGGER = """
CREATE CONSTRAINT TRIGGER audit_chain_link AFTER INSERT ON audit_events
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION audit_chain_link()
"""

GENESIS = "0" * 64


def upgrade() -> None:
    op.add_column("audit_events", sa.Column("chain", sa.SmallInteger(), nullable=True))
    op.add_column("audit_events", sa.Column("chain_pos", sa.BigInteger(), nullable=True))
    op.add_column("audit_events", sa.Column("prev_hash", sa.String(64), nullable=True))
    op.add_column("audit_events", sa.Column("hash", sa.String(64), nullable=True))
    op.create_table(
        "audit_chain_heads",
        sa.Column("chain", sa.SmallInteger(), nullable=False, autoincrement=False),
        sa.Column("pos", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("hash", sa.String(64), nullable=False, server_default=GENESIS),
        sa.Column("event_id", sa.Uuid(), nullable=True),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("chain", name=op.f("pk_audit_chain_heads")),
    )
    op.execute(f"INSERT INTO audit_chain_heads (chain) SELECT generate_series(0, {CHAINS - 1})")
    op.execute(FIELD)
    op.execute(HASH)
    # The events stored before this migration form the start of chain 0, in their seq order.
    op.execute(f"""
DO $$
DECLARE
  r audit_events%ROWTYPE;
  prev text := '{GENESIS}';
  pos bigint := 0;
BEGIN
  FOR r IN SELECT * FROM audit_events ORDER BY seq LOOP
    pos := pos + 1;
    r.chain := 0; r.chain_pos := pos; r.prev_hash := prev;
    r.hash := audit_chain_hash(r);
    UPDATE audit_events SET chain = 0, chain_pos = pos, prev_hash = prev, hash = r.hash
     WHERE id = r.id;
    prev := r.hash;
    UPDATE audit_chain_heads SET pos = r.chain_pos, hash = r.hash, event_id = r.id,
           seq = r.seq, at = r.at WHERE chain = 0;
  END LOOP;
END
$$
""")
    op.execute(LINK)
    op.execute(TRIGGER)
    op.create_index("ix_audit_events_chain", "audit_events", ["chain", "chain_pos"], unique=True)
    apply_grants(op.get_bind())


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS audit_chain_link ON audit_events")
    op.execute("DROP FUNCTION IF EXISTS audit_chain_link()")
    op.execute("DROP FUNCTION IF EXISTS audit_chain_hash(audit_events)")
    op.execute("DROP FUNCTION IF EXISTS audit_chain_field(text)")
    op.drop_index("ix_audit_events_chain", table_name="audit_events")
    op.drop_table("audit_chain_heads")
    for column in ("hash", "prev_hash", "chain_pos", "chain"):
        op.drop_column("audit_events", column)
