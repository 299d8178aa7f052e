// @generated automatically by Diesel CLI.

diesel::table! {
    awareness_entries (document_id, client_id) {
        document_id -> Text,
        client_id -> Text,
        connection_id -> Text,
        state -> Nullable<Jsonb>,
        clock_value -> Int8,
        last_seen -> Timestamptz,
        owner -> Nullable<Text>,
        instance_id -> Nullable<Text>,
    }
}

diesel::table! {
    awareness_instances (instance_id) {
        instance_id -> Text,
        lease_expires_at -> Timestamptz,
        started_at -> Timestamptz,
    }
}

diesel::allow_tables_to_appear_in_same_query!(awareness_entries, awareness_instances,);
