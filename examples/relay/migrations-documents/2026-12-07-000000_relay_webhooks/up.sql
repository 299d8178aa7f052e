-- The relay's webhooks (examples/relay/README.md "Webhooks"): every join and leave of a
-- participant is written, by the trigger below, into relay_webhook_deliveries in the same
-- transaction as the change of awareness_entries, one row per registered endpoint; every
-- instance configured with that endpoint delivers from the table. So an event is recorded once
-- across the cluster, whichever instance (or pruner, or lease take-over) made the change, and a
-- crash loses nothing.

-- The endpoints some instance delivers to, renewed by those instances; without a row here the
-- trigger records nothing.
CREATE TABLE relay_webhook_endpoints (
    url text COLLATE "C" PRIMARY KEY,
    -- The store's entry timeout, for the room's count of live participants.
    entry_timeout interval NOT NULL,
    renewed_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE relay_webhook_deliveries (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    url text COLLATE "C" NOT NULL,
    document_id text COLLATE "C" NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- Set while an instance is sending it; a lapsed claim (a killed sender) is taken again.
    claimed_until timestamptz,
    last_error text
);

-- Each room's oldest event per endpoint (the only one that may be sent).
CREATE INDEX relay_webhook_deliveries_url_document_id ON relay_webhook_deliveries (url, document_id, id);

-- A participant joined (a row with a state appears, or a tombstone gets one) or left (its state
-- goes, or its row with a state is deleted: a disconnect, pruning, a lapsed lease). One
-- advisory lock (class "rewh", key 0) is held from the first event of a transaction to its
-- commit, so events are recorded in commit order (id order is commit order, within a room and
-- across rooms) and each count is the room's after its event. One lock, not one per room:
-- a statement's rows fire their triggers in the order it wrote them, which for a batch is its
-- input order, so per-room locks would be taken in different orders by two batches and could
-- deadlock (tests/webhook_trigger.rs found it). Lock order: the entries' rows (all taken by the
-- statement before its triggers fire), then this lock.
CREATE FUNCTION relay_webhook_record() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    entry awareness_entries;
    was awareness_entries;
    kind text;
    timeout interval;
    room_count bigint;
BEGIN
    SELECT max(entry_timeout) INTO timeout FROM relay_webhook_endpoints;
    IF timeout IS NULL THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        entry := OLD; was := OLD; kind := 'left';
    ELSIF NEW.state IS NULL THEN
        entry := NEW; was := OLD; kind := 'left';
    ELSE
        entry := NEW; was := NEW; kind := 'joined';
    END IF;
    PERFORM pg_advisory_xact_lock(1919252328, 0);
    SELECT count(*) INTO room_count FROM awareness_entries
    WHERE document_id = entry.document_id AND state IS NOT NULL AND last_seen > now() - timeout;
    INSERT INTO relay_webhook_deliveries (url, document_id, payload)
    SELECT e.url, entry.document_id, jsonb_build_object(
        'type', 'presence.' || kind,
        'timestamp', to_jsonb(date_trunc('milliseconds', clock_timestamp())),
        'data', jsonb_build_object(
            'room', entry.document_id,
            'clientId', entry.client_id,
            'principal', entry.owner,
            'instance', entry.instance_id,
            'count', room_count,
            'user', was.state -> 'user'))
    FROM relay_webhook_endpoints e;
    RETURN NULL;
END
$$;

CREATE TRIGGER relay_webhook_joined AFTER INSERT ON awareness_entries
    FOR EACH ROW WHEN (NEW.state IS NOT NULL) EXECUTE FUNCTION relay_webhook_record();
CREATE TRIGGER relay_webhook_flipped AFTER UPDATE OF state ON awareness_entries
    FOR EACH ROW WHEN ((OLD.state IS NULL) <> (NEW.state IS NULL)) EXECUTE FUNCTION relay_webhook_record();
CREATE TRIGGER relay_webhook_left AFTER DELETE ON awareness_entries
    FOR EACH ROW WHEN (OLD.state IS NOT NULL) EXECUTE FUNCTION relay_webhook_record();
