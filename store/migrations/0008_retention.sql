-- Retention (docs/API.md §2.4, §2.6, §2.8, §6.4; ARCHITECTURE.md, Retention):
-- the files of builds finished longer ago than --retention are deleted, the
-- rows and their logs stay.
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

-- The finished builds that still have files: those to take (purged_at NULL),
-- oldest finish first, and those taken whose files may remain (purged_at
-- set). A build leaves it once its files are removed, so a batch costs its
-- own size, never the purged history's. One index for both, because
-- creating an index reads the whole builds table: on a history of a million
-- builds each one is seconds of the upgrade (docs/DEPLOYMENT.md, Upgrades).
-- The newest completed build of each platform is found through builds_by_end
-- (0009), and CPU snapshots are pruned in the order they were stored (their
-- rowid), so neither needs an index of its own.
CREATE INDEX builds_files_kept ON builds (purged_at, completed_at, id)
    WHERE files_removed_at IS NULL AND completed_at IS NOT NULL;

-- Diagnostic reports are pruned by age, oldest first.
CREATE INDEX diagnostics_by_run_at ON diagnostics (run_at);
