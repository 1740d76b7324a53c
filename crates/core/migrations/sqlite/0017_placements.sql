-- Placement: room a create was promised on a node, counted in that node's
-- load until the sandbox's own record is stored there (then the promise is
-- released) or the promise expires (a create that never arrived).
CREATE TABLE placements (
    id          TEXT PRIMARY KEY,
    node_id     TEXT NOT NULL,
    vcpus       INTEGER NOT NULL,
    memory_mb   INTEGER NOT NULL,
    disk_mb     INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
-- The template snapshots a node holds ("<template>/<version>/<shape>", a
-- JSON array): placement prefers a node that can boot the create warm.
ALTER TABLE nodes ADD COLUMN templates TEXT NOT NULL DEFAULT '[]';
-- A digest of the node's sealing key: every node must share one
-- (forwarded requests are signed with it), and a node whose key differs
-- refuses to join.
ALTER TABLE nodes ADD COLUMN key_check TEXT NOT NULL DEFAULT '';
