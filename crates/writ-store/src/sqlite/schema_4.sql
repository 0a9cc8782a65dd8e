-- Schema version 4: the audit log's checkpoint keys. Applied once, in one transaction,
-- when `PRAGMA user_version` is 3; never edit it once shipped.

-- The public half of each writer's checkpoint key. A gateway makes a fresh Ed25519 key
-- for every chain it starts and keeps the private half in memory only, so nobody who
-- later edits this database can sign a checkpoint in that writer's name. The key id
-- and public key are also the first record of the writer's chain (`audit.started`),
-- so replacing a row here without rewriting the chain does not verify.
CREATE TABLE audit_keys (
    key_id     TEXT PRIMARY KEY,
    writer     TEXT NOT NULL,
    public_key TEXT NOT NULL,   -- Ed25519, 32 bytes, base64url without padding
    created_ms INTEGER NOT NULL
);
