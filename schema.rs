// @generated automatically by Diesel CLI.

diesel::table! {
    awareness_entries (document_id, client_id) {
        document_id -> Text,
        client_id -> Text,
        connection_id -> Text,
        state -> Nullable<Jsonb>,
        clock_value -> Int8,
        last_seen -> Timestamptz,
    }
}
