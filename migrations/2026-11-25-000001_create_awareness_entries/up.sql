-- Awareness (presence) entries: one row per (document, client).
--
-- Design notes (measured on a 2-core rust-svc machine, PostgreSQL 15; see docs/performance.md):
-- * Ids use COLLATE "C": byte order, so `get_all` orders exactly like the in-memory store (Rust's
--   byte-wise String order), and text comparisons in the primary key skip locale rules.
-- * No index on last_seen. Every heartbeat rewrites last_seen; an index on it makes every update
--   non-HOT (measured: 99.9 % HOT -> 0 %, table 13x larger after 1M updates). Expiry queries
--   (get_expired, prune_expired) scan the table on purpose: they run every few seconds from one
--   pruner, and a sequential scan of 1M narrow rows takes well under a second.
-- * connection_id is indexed for remove_all_for_connection (runs on every disconnect). A heartbeat
--   from the same connection writes the same connection_id value, which PostgreSQL still treats as
--   HOT-eligible (indexed column unchanged).
-- * fillfactor 70 leaves room on each page for the new row version of a HOT update, so heartbeats
--   stay on their page and need no index maintenance.
-- * CHECK constraints repeat the library's input rules, so rows written by other tools obey them.
CREATE TABLE awareness_entries (
    document_id   text COLLATE "C" NOT NULL
        CONSTRAINT awareness_entries_document_id_check CHECK (octet_length(document_id) BETWEEN 1 AND 256),
    client_id     text COLLATE "C" NOT NULL
        CONSTRAINT awareness_entries_client_id_check CHECK (octet_length(client_id) BETWEEN 1 AND 256),
    connection_id text COLLATE "C" NOT NULL
        CONSTRAINT awareness_entries_connection_id_check CHECK (octet_length(connection_id) BETWEEN 1 AND 256),
    -- NULL = tombstone: the client left; the row keeps its clock so an older update cannot revive it.
    state         jsonb,
    clock_value   bigint NOT NULL
        CONSTRAINT awareness_entries_clock_value_check CHECK (clock_value >= 0),
    last_seen     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT awareness_entries_pkey PRIMARY KEY (document_id, client_id)
) WITH (fillfactor = 70);

CREATE INDEX awareness_entries_connection_id_idx ON awareness_entries (connection_id);
