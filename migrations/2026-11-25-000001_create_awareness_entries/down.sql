DROP TABLE IF EXISTS awareness_entries;
