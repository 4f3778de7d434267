-- Initial schema of the build controller.
-- Times are integer epoch milliseconds. Paths are relative to the storage root.

CREATE TABLE workers (
    id               TEXT PRIMARY KEY,
    name             TEXT    NOT NULL,
    capabilities     TEXT    NOT NULL,            -- JSON object, stored as sent
    status           TEXT    NOT NULL CHECK (status IN ('idle', 'building', 'offline')),
    registered_at    INTEGER NOT NULL,
    last_seen_at     INTEGER NOT NULL,
    builds_completed INTEGER NOT NULL DEFAULT 0,
    builds_failed    INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE builds (
    id                TEXT PRIMARY KEY,
    platform          TEXT    NOT NULL CHECK (platform IN ('ios', 'android')),
    status            TEXT    NOT NULL CHECK (status IN ('pending', 'assigned', 'building', 'completed', 'failed')),
    worker_id         TEXT,                       -- current assignee, or the one at finish
    submitted_at      INTEGER NOT NULL,
    started_at        INTEGER,
    completed_at      INTEGER,
    last_activity_at  INTEGER,                    -- liveness of the current assignment
    error_message     TEXT,
    attempts          INTEGER NOT NULL DEFAULT 0, -- number of liveness timeouts so far
    cancelled         INTEGER NOT NULL DEFAULT 0,
    progress          REAL,
    source_path       TEXT    NOT NULL,
    certs_path        TEXT,
    result_path       TEXT,
    result_size       INTEGER,
    result_sha256     TEXT,
    token_hash        BLOB    NOT NULL,           -- SHA-256 of the build access token
    original_build_id TEXT
);

CREATE INDEX builds_by_status ON builds (status, submitted_at, id);
-- The build a worker holds: partial, so finished builds never slow the lookup.
CREATE INDEX builds_running_by_worker ON builds (worker_id) WHERE status IN ('assigned', 'building');

CREATE TABLE build_logs (
    build_id  TEXT    NOT NULL REFERENCES builds (id),
    seq       INTEGER NOT NULL,                   -- 1, 2, 3 ... per build
    timestamp INTEGER NOT NULL,
    level     TEXT    NOT NULL CHECK (level IN ('info', 'warn', 'error')),
    message   TEXT    NOT NULL,
    PRIMARY KEY (build_id, seq)
) WITHOUT ROWID;

CREATE TABLE diagnostics (
    id          TEXT PRIMARY KEY,
    worker_id   TEXT    NOT NULL REFERENCES workers (id),
    status      TEXT    NOT NULL CHECK (status IN ('healthy', 'warning', 'critical')),
    run_at      INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    auto_fixed  INTEGER NOT NULL,
    checks      TEXT    NOT NULL                  -- JSON array, stored verbatim
);

CREATE INDEX diagnostics_by_worker ON diagnostics (worker_id, run_at);

CREATE TABLE cpu_snapshots (
    id          INTEGER PRIMARY KEY,
    build_id    TEXT    NOT NULL REFERENCES builds (id),
    worker_id   TEXT    NOT NULL,
    timestamp   INTEGER NOT NULL,
    cpu_percent REAL    NOT NULL,
    memory_mb   REAL    NOT NULL
);
