//! The statements that are not about entries: the change feed's `NOTIFY` and `LISTEN`, the
//! listener's liveness probe, the session settings of each new connection, and the migration
//! runner's advisory lock.

use super::super::options::PostgresOptions;

/// Sends each payload of `$2` on channel `$1`, in order, in one statement (one transaction:
/// `unnest` yields the array in order and `NOTIFY` keeps a transaction's order), prepared once
/// per connection (a static query id). Through
/// `sql_query` it was parsed, planned and closed again for every notification: measured with
/// `make bench-relay`, the publishers' backends then cost about four times what a prepared
/// `pg_notify` costs in pgbench.
pub(crate) struct Notify<'a> {
    pub(crate) channel: &'a str,
    pub(crate) payloads: &'a [String],
}

/// [`Notify`]'s identity for the prepared-statement cache.
pub(crate) struct NotifyId;

impl diesel::query_builder::QueryId for Notify<'_> {
    type QueryId = NotifyId;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for Notify<'_> {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> diesel::QueryResult<()> {
        use diesel::sql_types::{Array, Text};
        out.push_sql("SELECT pg_notify(");
        out.push_bind_param::<Text, _>(self.channel)?;
        out.push_sql(", p) FROM unnest(");
        out.push_bind_param::<Array<Text>, _>(self.payloads)?;
        out.push_sql("::text[]) AS p");
        Ok(())
    }
}

/// What the change feed's listener runs on its connection: names itself (easy to find in
/// `pg_stat_activity`), commits without waiting for the WAL flush (its only transactions are
/// the publisher's `NOTIFY`s, which are not durable anyway; a connection from `listen_url`
/// has none of the pool's session settings) and listens on each of `channels`, quoted
/// (`pg_notify` takes the name verbatim, `LISTEN` would fold it to lower case).
pub(crate) fn listen(application_name: &str, channels: &[&str]) -> String {
    let mut sql = format!(
        "SET application_name = '{}'; SET synchronous_commit = off",
        application_name.replace('\'', "''")
    );
    for channel in channels {
        sql.push_str(&format!("; LISTEN \"{}\"", channel.replace('"', "\"\"")));
    }
    sql
}

/// The listener's check of a connection that has been quiet for a while.
pub(crate) const PING: &str = "SELECT 1";

/// Run on each new connection (with the session settings, in the same round trip): a server
/// that takes no writes — a standby reached by mistake, a `target_session_attrs` left out of a
/// multi-host URL, an old primary set read-only — fails the connection with
/// [`READ_ONLY_SERVER`](crate::error::READ_ONLY_SERVER) (SQLSTATE 25006), so the pool keeps
/// no connection writes would fail on.
pub(crate) const REFUSE_READ_ONLY: &str =
    "DO $$BEGIN IF current_setting('transaction_read_only') = 'on' THEN \
     RAISE EXCEPTION 'the server is read-only: %', CASE WHEN pg_is_in_recovery() \
     THEN 'a standby in recovery' ELSE 'transaction_read_only is on' END \
     USING ERRCODE = '25006'; END IF; END$$;";

/// The `SET` statements run once on each new connection, from the options (none behind a
/// transaction-mode pooler: they would stay on a server connection other clients share).
pub(crate) fn session_settings(options: &PostgresOptions) -> String {
    if options.transaction_pooler {
        return String::new();
    }
    settings(options, "SET")
}

fn settings(options: &PostgresOptions, set: &str) -> String {
    let mut sql = String::new();
    if let Some(timeout) = options.statement_timeout {
        sql.push_str(&format!(
            "{set} statement_timeout = {};",
            timeout.as_millis().max(1)
        ));
    }
    if !options.synchronous_commit {
        sql.push_str(&format!("{set} synchronous_commit = off;"));
    }
    sql
}

/// Takes the migration runner's session-level advisory lock; `$1`: the key.
pub(crate) const MIGRATION_LOCK: &str = "SELECT pg_advisory_lock($1)";
/// Releases it; `$1`: the key.
pub(crate) const MIGRATION_UNLOCK: &str = "SELECT pg_advisory_unlock($1)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_sends_every_payload_in_order_in_one_statement() {
        let payloads = vec!["a".to_owned(), "b".to_owned()];
        let notify = Notify {
            channel: "c",
            payloads: &payloads,
        };
        let text = diesel::debug_query::<diesel::pg::Pg, _>(&notify).to_string();
        assert!(
            text.starts_with("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p -- binds: "),
            "{text}"
        );
    }

    #[test]
    fn settings_are_per_session_or_per_transaction() {
        let direct = PostgresOptions::default();
        assert_eq!(
            session_settings(&direct),
            "SET statement_timeout = 10000;SET synchronous_commit = off;"
        );
        let pooled = direct.with_transaction_pooler(true);
        assert_eq!(session_settings(&pooled), "");
    }

    #[test]
    fn listen_quotes_the_channel_and_the_name() {
        assert_eq!(
            listen("app", &["Ch\"an"]),
            "SET application_name = 'app'; SET synchronous_commit = off; LISTEN \"Ch\"\"an\""
        );
        assert_eq!(
            listen("it's", &["c", "d"]),
            "SET application_name = 'it''s'; SET synchronous_commit = off; LISTEN \"c\"; \
             LISTEN \"d\""
        );
    }
}
