-- The newer worker generation (docs/API.md §4.12–§4.16): worker tokens, and
-- the one-time passwords, VM tokens and host tokens of an assignment. Only
-- digests of secrets are stored, except the host token, which vm-status
-- hands to anyone who asks (it opens nothing but heartbeat and telemetry).

-- A worker's tokens. Valid while expires_at lies ahead; a revoked token is
-- deleted, a rotated one keeps a short grace.
CREATE TABLE worker_tokens (
    digest     BLOB    PRIMARY KEY,
    worker_id  TEXT    NOT NULL REFERENCES workers (id) ON DELETE CASCADE,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX worker_tokens_by_worker ON worker_tokens (worker_id);

-- Each assignment of a build gets the next number; what belongs to it (OTPs,
-- VM tokens, the host token, vm_ready_at) is valid only while the build is
-- running under that number, so ending an assignment ends them all at once.
ALTER TABLE builds ADD COLUMN assignment  INTEGER NOT NULL DEFAULT 0;
ALTER TABLE builds ADD COLUMN vm_ready_at INTEGER;
ALTER TABLE builds ADD COLUMN host_token  TEXT;

CREATE TABLE assignment_tokens (
    digest     BLOB    PRIMARY KEY,
    build_id   TEXT    NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    assignment INTEGER NOT NULL,
    kind       TEXT    NOT NULL CHECK (kind IN ('otp', 'vm')),
    expires_at INTEGER NOT NULL,
    used_at    INTEGER            -- an OTP is used once
) WITHOUT ROWID;
CREATE INDEX assignment_tokens_by_expiry ON assignment_tokens (expires_at);
