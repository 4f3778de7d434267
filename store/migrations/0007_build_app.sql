-- What people recognise a build by (the dashboard): the app's name and
-- version from the submitted project's app.json (expo.name, expo.version),
-- and the submitter's label. All optional: NULL when absent.
ALTER TABLE builds ADD COLUMN app_name    TEXT;
ALTER TABLE builds ADD COLUMN app_version TEXT;
ALTER TABLE builds ADD COLUMN label       TEXT;
-- The stage a running build's VM last reported (a telemetry heartbeat's
-- data.stage); cleared at each assignment.
ALTER TABLE builds ADD COLUMN stage       TEXT;

-- The history's search by app name, case-insensitive, in list order.
CREATE INDEX builds_by_app ON builds (app_name COLLATE NOCASE, submitted_at, id);
