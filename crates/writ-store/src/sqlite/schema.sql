-- Schema version 1 of Writ's SQLite store. Applied once, in one transaction, when
-- `PRAGMA user_version` is 0; later versions append new files, never edit this one.
-- Times are Unix seconds (UTC). Lists and JSON values are stored as JSON text.

CREATE TABLE agents (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL UNIQUE,
    team        TEXT,
    owner       TEXT,
    -- The whole `AgentCredential` as tagged JSON; the two columns below copy an
    -- external identity out of it so that finding the agent is an index lookup.
    credential  TEXT NOT NULL,
    ext_issuer  TEXT,
    ext_subject TEXT,
    disabled    INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at  INTEGER NOT NULL
);

-- One agent per external identity: two agents sharing one would share a principal.
CREATE UNIQUE INDEX agents_external ON agents (ext_issuer, ext_subject)
    WHERE ext_issuer IS NOT NULL;

-- agent_id and subject_id name agents but carry no foreign key: with
-- `identity.require_registered = false` an OIDC or SPIFFE identity may hold a task
-- without being registered, and its task still needs recording.
CREATE TABLE tasks (
    id           TEXT PRIMARY KEY NOT NULL,
    agent_id     TEXT NOT NULL,
    subject_id   TEXT NOT NULL,
    parent_id    TEXT REFERENCES tasks (id),
    depth        INTEGER NOT NULL CHECK (depth >= 0),
    purpose      TEXT NOT NULL,
    tools        TEXT NOT NULL,
    data_classes TEXT NOT NULL,
    max_calls    INTEGER,
    calls        INTEGER NOT NULL DEFAULT 0,
    state        TEXT NOT NULL CHECK (state IN ('active', 'completed', 'revoked', 'expired')),
    reason       TEXT,
    proof        TEXT NOT NULL,
    jkt          TEXT,
    actor_chain  TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    ended_at     INTEGER
);

-- Revocation walks the delegation tree downwards through parent_id.
CREATE INDEX tasks_parent ON tasks (parent_id);
CREATE INDEX tasks_agent ON tasks (agent_id);
CREATE INDEX tasks_subject ON tasks (subject_id);
CREATE INDEX tasks_created ON tasks (created_at DESC, id DESC);
-- The expiry sweep only ever looks at active tasks.
CREATE INDEX tasks_active_expiry ON tasks (expires_at) WHERE state = 'active';

-- One-time identifiers (assertion and DPoP proof `jti`s), per scope.
CREATE TABLE seen_once (
    scope      TEXT NOT NULL,
    id         TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (scope, id)
) WITHOUT ROWID;

CREATE INDEX seen_once_expiry ON seen_once (scope, expires_at);

CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY NOT NULL,
    algorithm   TEXT NOT NULL,
    private_pem TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    retired_at  INTEGER
);

-- AUTOINCREMENT so a sequence number is never reused, even after the newest rows go:
-- followers remember the last one they saw.
CREATE TABLE changes (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    kind    TEXT NOT NULL CHECK (kind IN ('task', 'agent', 'key')),
    subject TEXT NOT NULL
);
