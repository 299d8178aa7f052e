-- The relay's documents (examples/relay, README "Run a presence server"): every update a
-- client sends is appended to relay_document_updates before it is relayed; compaction folds a
-- document's rows into its snapshot in relay_documents. Ids come from one identity sequence;
-- appends to one document are serialised by an advisory lock, so within a document id order is
-- commit order (docs/NOTES.md "Documents in PostgreSQL").
CREATE TABLE relay_documents (
    document_id text COLLATE "C" PRIMARY KEY,
    -- The document up to compacted_through, as one Yjs update (v1).
    snapshot bytea NOT NULL,
    compacted_through bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE relay_document_updates (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    document_id text COLLATE "C" NOT NULL,
    -- One Yjs update (v1) as a client sent it.
    "update" bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX relay_document_updates_document_id_id ON relay_document_updates (document_id, id);
