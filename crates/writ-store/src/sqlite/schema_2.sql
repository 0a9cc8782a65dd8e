-- Schema version 2: task categories, tool pins, and `tool` entries in the change feed.
-- Applied once, in one transaction, when `PRAGMA user_version` is 1; never edit it once
-- shipped.

-- NULL for every task recorded before categories existed: they declared none.
ALTER TABLE tasks ADD COLUMN category TEXT;

-- Tool definitions trusted on first use. A different definition offered later waits in
-- the drift columns, and the pinned one stays in force, until an operator accepts it.
-- Definitions are JSON text. Kept with a rowid: a definition (its input schema) can run
-- to kilobytes, too big for a WITHOUT ROWID table to pay off.
CREATE TABLE tool_pins (
    server           TEXT NOT NULL,
    tool             TEXT NOT NULL,
    hash             TEXT NOT NULL,
    definition       TEXT NOT NULL,
    pinned_at        INTEGER NOT NULL,
    drift_hash       TEXT,
    drift_definition TEXT,
    drift_seen_at    INTEGER,
    PRIMARY KEY (server, tool),
    -- A drift is all three columns or none.
    CHECK ((drift_hash IS NULL) = (drift_definition IS NULL)
       AND (drift_hash IS NULL) = (drift_seen_at IS NULL))
);

-- The change feed gains the kind `tool`. SQLite cannot alter a CHECK constraint, so the
-- table is rebuilt under its own name and its rows copied with their sequence numbers.
ALTER TABLE changes RENAME TO changes_1;

CREATE TABLE changes (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    kind    TEXT NOT NULL CHECK (kind IN ('task', 'agent', 'key', 'tool')),
    subject TEXT NOT NULL
);

INSERT INTO changes (seq, kind, subject) SELECT seq, kind, subject FROM changes_1;

-- The old table's high-water mark carries over (it may lie past the last row left), so
-- no sequence number a follower has seen is handed out again.
DELETE FROM sqlite_sequence WHERE name = 'changes';
UPDATE sqlite_sequence SET name = 'changes' WHERE name = 'changes_1';

DROP TABLE changes_1;
