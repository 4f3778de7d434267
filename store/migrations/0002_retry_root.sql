-- The first build of each retry chain, so that retries can be bounded per
-- submitted build (docs/API.md §2.8): NULL for a submitted build; for a
-- retry, the original's root, or the original itself when it has none.
ALTER TABLE builds ADD COLUMN root_build_id TEXT;

-- Retries made before this migration: follow original_build_id up to the
-- submitted build.
WITH RECURSIVE chain (id, root) AS (
    SELECT id, id FROM builds WHERE original_build_id IS NULL
    UNION ALL
    SELECT b.id, chain.root FROM builds AS b JOIN chain ON b.original_build_id = chain.id
)
UPDATE builds SET root_build_id = chain.root FROM chain
WHERE chain.id = builds.id AND builds.original_build_id IS NOT NULL;

-- Counting a chain is one index lookup; partial, since submitted builds
-- (most of them) have no root.
CREATE INDEX builds_by_root ON builds (root_build_id) WHERE root_build_id IS NOT NULL;
