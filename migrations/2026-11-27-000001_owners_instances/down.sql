DROP TABLE IF EXISTS awareness_instances;
DROP INDEX IF EXISTS awareness_entries_instance_id_idx;
ALTER TABLE awareness_entries DROP COLUMN IF EXISTS instance_id, DROP COLUMN IF EXISTS owner;
