-- Events are pruned by age (hourly, oldest first): the delete walks this
-- index instead of the whole table.
CREATE INDEX events_ts ON events(ts);

-- Event data is capped at 16 KiB when written now; rows written before the
-- cap may quote a whole 64 MiB exec command, which every replay would read.
UPDATE events SET data = '{"truncated":true}' WHERE octet_length(data) > 16384;
