-- Ownership of client ids, server instances with leases (issue 12).
--
-- * owner: the authenticated principal that wrote the entry (NULL: the writer gave none, and the
--   entry is nobody's). While an entry is fresh, only its owner may write it (docs/contract.md,
--   rule 6); the check is part of the `set` upsert's `DO UPDATE ... WHERE`.
-- * instance_id: the server instance that last wrote the entry (NULL: a store not running as an
--   instance). When that instance's lease in awareness_instances lapses, any pruner removes the
--   entry at once instead of waiting for the awareness timeout. Indexed for the graceful
--   shutdown's `DELETE ... WHERE instance_id = $1`; heartbeats from the same instance write the
--   same value, so they stay HOT updates.
-- * Both columns are added without defaults: no table rewrite, instant on a live table.
ALTER TABLE awareness_entries
    ADD COLUMN owner text COLLATE "C"
        CONSTRAINT awareness_entries_owner_check CHECK (octet_length(owner) BETWEEN 1 AND 256),
    ADD COLUMN instance_id text COLLATE "C"
        CONSTRAINT awareness_entries_instance_id_check CHECK (octet_length(instance_id) BETWEEN 1 AND 256);

CREATE INDEX awareness_entries_instance_id_idx ON awareness_entries (instance_id)
    WHERE instance_id IS NOT NULL;

-- One row per running instance; `lease_expires_at` is pushed forward by the instance every few
-- seconds (the database's clock decides, like expiry). A row whose lease lapsed is removed,
-- with the instance's entries, by the first pruner that sees it.
CREATE TABLE awareness_instances (
    instance_id      text COLLATE "C" NOT NULL
        CONSTRAINT awareness_instances_instance_id_check CHECK (octet_length(instance_id) BETWEEN 1 AND 256),
    lease_expires_at timestamptz NOT NULL,
    started_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT awareness_instances_pkey PRIMARY KEY (instance_id)
);
