-- The build list's filtered pages (docs/API.md §2.2): each filter reads its
-- own index in list order — newest submission first, then id — from the
-- page's cursor on, so a page costs its length, not the history. Status and
-- the unfiltered list already have theirs (builds_by_status, 0001;
-- builds_by_submitted, 0003).

-- A worker's builds. Pending builds have no worker: they are left out.
CREATE INDEX builds_by_worker ON builds (worker_id, submitted_at, id) WHERE worker_id IS NOT NULL;

-- One platform's builds (a rare platform must not cost a scan of the other's).
CREATE INDEX builds_by_platform ON builds (platform, submitted_at, id);
