-- Copies of paused sandboxes' snapshots on another node ([cluster]
-- replicate_paused): when a sandbox's node is lost, its paused sandbox
-- resumes on the node that holds the copy. A row is good only for the
-- pause it copied (paused_at); a resume or destroy deletes it.
CREATE TABLE replicas (
    sandbox_id  TEXT PRIMARY KEY,
    node_id     TEXT NOT NULL,
    paused_at   INTEGER NOT NULL
);
