-- Schema version 3: the audit log. Applied once, in one transaction, when
-- `PRAGMA user_version` is 2; never edit it once shipped.

-- Sealed audit records (`writ_audit::Record`), one hash chain per writer. Append-only:
-- the trigger below refuses updates, so changing a record takes deliberately dropping
-- it first — and `writ audit verify` still names the record changed. Retention deletes
-- whole prefixes of a chain and leaves an anchor (`audit_anchors`) to verify the rest.
CREATE TABLE audit_records (
    writer    TEXT NOT NULL,
    seq       INTEGER NOT NULL CHECK (seq > 0),
    time_ms   INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    actor     TEXT NOT NULL,   -- JSON array of strings
    task      TEXT,
    tool      TEXT,
    decision  TEXT,
    fields    TEXT NOT NULL,   -- JSON object
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL,
    PRIMARY KEY (writer, seq)
);

CREATE INDEX audit_records_by_task ON audit_records (task) WHERE task IS NOT NULL;
CREATE INDEX audit_records_by_time ON audit_records (time_ms);

CREATE TRIGGER audit_records_append_only BEFORE UPDATE ON audit_records
BEGIN
    SELECT RAISE(ABORT, 'audit records are append-only');
END;

-- Signed statements of a chain's head (`writ_audit::Checkpoint`): a chain shorter than
-- one of them, or different at its seq, was cut or rewritten.
CREATE TABLE audit_checkpoints (
    writer    TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    hash      TEXT NOT NULL,
    time_ms   INTEGER NOT NULL,
    key_id    TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (writer, seq)
);

-- Where a pruned chain now starts: the seq and hash of the last record pruned.
CREATE TABLE audit_anchors (
    writer TEXT PRIMARY KEY,
    seq    INTEGER NOT NULL,
    hash   TEXT NOT NULL
);
