-- Reads that public pages make on every request, bounded whatever the queue
-- and the history hold.

-- The number of builds in each state, kept by triggers, so that /health, the
-- dashboard, /api/stats and /metrics read five rows instead of counting every
-- build on every request (their cost must not grow with the queue or the
-- history).
CREATE TABLE build_counts (
    status TEXT    PRIMARY KEY,
    n      INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO build_counts (status, n)
SELECT s.status, (SELECT COUNT(*) FROM builds WHERE builds.status = s.status)
FROM (SELECT 'pending' AS status UNION ALL SELECT 'assigned' UNION ALL SELECT 'building'
      UNION ALL SELECT 'completed' UNION ALL SELECT 'failed') AS s;

CREATE TRIGGER build_counts_insert AFTER INSERT ON builds BEGIN
    UPDATE build_counts SET n = n + 1 WHERE status = NEW.status;
END;

CREATE TRIGGER build_counts_update AFTER UPDATE OF status ON builds
WHEN OLD.status <> NEW.status BEGIN
    UPDATE build_counts SET n = n - 1 WHERE status = OLD.status;
    UPDATE build_counts SET n = n + 1 WHERE status = NEW.status;
END;

CREATE TRIGGER build_counts_delete AFTER DELETE ON builds BEGIN
    UPDATE build_counts SET n = n - 1 WHERE status = OLD.status;
END;

-- The newest builds first (the dashboard's list, GET /api/builds): without
-- it, every such read sorted the whole table.
CREATE INDEX builds_by_submitted ON builds (submitted_at, id);
