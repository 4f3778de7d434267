-- Webhooks (docs/API.md §3.5): an outbox. A build's change and the events it
-- announces are written by the same transaction, so an event exists if and
-- only if its change was committed; the webhook sender delivers each row at
-- least once and deletes it when delivered or given up.

-- The receivers configured at the last start (Store.SetWebhookURLs). Empty
-- when webhooks are off, so the events' INSERT ... SELECT writes nothing.
CREATE TABLE webhook_endpoints (
    url TEXT PRIMARY KEY
) WITHOUT ROWID;

-- One row per event and receiver URL: each receiver has its own attempts,
-- backoff and last error, and delivering to one never waits for another.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,          -- the row (rowid)
    delivery_id     TEXT    NOT NULL,             -- the event's id (X-Delivery-Id): one per event, on every URL and attempt
    url             TEXT    NOT NULL,
    event           TEXT    NOT NULL CHECK (event IN ('build.completed', 'build.failed', 'build.requeued')),
    build_id        TEXT    NOT NULL,             -- no foreign key: the row carries its own snapshot below
    created_at      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,   -- failed attempts so far
    last_error      TEXT,
    -- The build's status object (docs/API.md §2.4) as the event's transaction left it.
    status          TEXT    NOT NULL,
    platform        TEXT    NOT NULL,
    worker_id       TEXT,
    submitted_at    INTEGER NOT NULL,
    started_at      INTEGER,
    completed_at    INTEGER,
    error_message   TEXT,
    UNIQUE (delivery_id, url)
);
CREATE INDEX outbox_by_due ON outbox (next_attempt_at, id);
