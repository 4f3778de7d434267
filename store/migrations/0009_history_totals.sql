-- Figures of the whole history, kept by triggers, so that /api/stats reads
-- one row instead of summing every finished build and every CPU snapshot
-- on each request (its cost must not grow with a year of builds).

-- The total duration of finished builds: the sum, over builds completed or
-- failed with both times set, of completed_at - started_at.
CREATE TABLE history_totals (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    build_time_ms INTEGER NOT NULL,
    cpu_samples   INTEGER NOT NULL,              -- rows of cpu_snapshots
    cpu_percent   REAL    NOT NULL               -- their cpu_percent summed
);

INSERT INTO history_totals (id, build_time_ms, cpu_samples, cpu_percent)
SELECT 1,
       (SELECT COALESCE(SUM(completed_at - started_at), 0) FROM builds
         WHERE status IN ('completed', 'failed') AND completed_at IS NOT NULL AND started_at IS NOT NULL),
       (SELECT COUNT(*) FROM cpu_snapshots),
       (SELECT COALESCE(SUM(cpu_percent), 0) FROM cpu_snapshots);

-- A build's share of build_time_ms, as the old and the new row have it.
CREATE TRIGGER history_build_time_insert AFTER INSERT ON builds
WHEN NEW.status IN ('completed', 'failed') AND NEW.completed_at IS NOT NULL AND NEW.started_at IS NOT NULL BEGIN
    UPDATE history_totals SET build_time_ms = build_time_ms + (NEW.completed_at - NEW.started_at) WHERE id = 1;
END;

CREATE TRIGGER history_build_time_update AFTER UPDATE OF status, started_at, completed_at ON builds
WHEN (CASE WHEN OLD.status IN ('completed', 'failed') AND OLD.completed_at IS NOT NULL AND OLD.started_at IS NOT NULL
           THEN OLD.completed_at - OLD.started_at ELSE 0 END)
  <> (CASE WHEN NEW.status IN ('completed', 'failed') AND NEW.completed_at IS NOT NULL AND NEW.started_at IS NOT NULL
           THEN NEW.completed_at - NEW.started_at ELSE 0 END) BEGIN
    UPDATE history_totals SET build_time_ms = build_time_ms
        - (CASE WHEN OLD.status IN ('completed', 'failed') AND OLD.completed_at IS NOT NULL AND OLD.started_at IS NOT NULL
                THEN OLD.completed_at - OLD.started_at ELSE 0 END)
        + (CASE WHEN NEW.status IN ('completed', 'failed') AND NEW.completed_at IS NOT NULL AND NEW.started_at IS NOT NULL
                THEN NEW.completed_at - NEW.started_at ELSE 0 END)
    WHERE id = 1;
END;

CREATE TRIGGER history_build_time_delete AFTER DELETE ON builds
WHEN OLD.status IN ('completed', 'failed') AND OLD.completed_at IS NOT NULL AND OLD.started_at IS NOT NULL BEGIN
    UPDATE history_totals SET build_time_ms = build_time_ms - (OLD.completed_at - OLD.started_at) WHERE id = 1;
END;

CREATE TRIGGER history_cpu_insert AFTER INSERT ON cpu_snapshots BEGIN
    UPDATE history_totals SET cpu_samples = cpu_samples + 1, cpu_percent = cpu_percent + NEW.cpu_percent WHERE id = 1;
END;

CREATE TRIGGER history_cpu_delete AFTER DELETE ON cpu_snapshots BEGIN
    UPDATE history_totals SET cpu_samples = cpu_samples - 1, cpu_percent = cpu_percent - OLD.cpu_percent WHERE id = 1;
END;

-- Builds by the time they ended: "completed today" on /api/stats, and the
-- recent failures a dashboard shows, without reading every finished build.
CREATE INDEX builds_by_end ON builds (status, completed_at) WHERE completed_at IS NOT NULL;
