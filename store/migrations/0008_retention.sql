-- Retention (docs/API.md §2.4, §2.6, §2.8; ARCHITECTURE.md, Retention): the
-- files of builds finished longer ago than --retention are deleted, the rows
-- and their logs stay.
--
-- A purge is two steps with a file deletion between them, so that a crash
-- anywhere leaves something the next pass can finish:
--   purged_at         set first, in the transaction that takes the build: from
--                     then on the row claims no file (downloads and retries
--                     answer 410), so deleting its files can never leave a
--                     row pointing at a file it claims to have;
--   files_removed_at  set after the files are deleted. A row with purged_at
--                     but without files_removed_at may still have files on
--                     disk: every pass deletes them again (an absent file is
--                     no error) before it takes new builds.
ALTER TABLE builds ADD COLUMN purged_at        INTEGER;
ALTER TABLE builds ADD COLUMN files_removed_at INTEGER;

-- The builds a pass may take, oldest finish first. Partial: a purged build
-- leaves the index, so every batch starts at the first build still to take,
-- never scanning past the ones already done.
CREATE INDEX builds_unpurged_by_finish ON builds (completed_at, id)
    WHERE purged_at IS NULL AND completed_at IS NOT NULL;

-- The builds whose files may remain after a crash between the two steps.
CREATE INDEX builds_purging ON builds (purged_at, id)
    WHERE purged_at IS NOT NULL AND files_removed_at IS NULL;

-- The newest completed build of each platform is kept whatever its age: one
-- seek per platform.
CREATE INDEX builds_completed_by_platform ON builds (platform, completed_at, id)
    WHERE status = 'completed';

-- CPU snapshots and diagnostic reports are pruned by age, oldest first.
CREATE INDEX cpu_snapshots_by_time ON cpu_snapshots (timestamp);
CREATE INDEX diagnostics_by_run_at ON diagnostics (run_at);
