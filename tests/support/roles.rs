//! A throwaway login role with DML rights only on the awareness table of one test database.
#![allow(dead_code)]

use diesel_async::SimpleAsyncConnection;

use crate::common::TestDb;

/// A login role with only SELECT/INSERT/UPDATE/DELETE on the awareness table of `db`; dropped
/// (with its grants) when this value is dropped.
pub struct AppRole {
    pub name: String,
    pub password: String,
    pub url: String,
    db_url: String,
}

impl AppRole {
    pub async fn create(db: &TestDb) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("synckit_app_{}_{nanos}", std::process::id());
        let password = format!("Pw{nanos}xQz9Secret");
        db.exec(&format!(
            "CREATE ROLE {name} LOGIN PASSWORD '{password}' NOSUPERUSER NOCREATEDB NOCREATEROLE;
             REVOKE ALL ON DATABASE {db_name} FROM PUBLIC;
             GRANT CONNECT ON DATABASE {db_name} TO {name};
             REVOKE CREATE ON SCHEMA public FROM PUBLIC;
             GRANT USAGE ON SCHEMA public TO {name};
             GRANT SELECT, INSERT, UPDATE, DELETE ON awareness_entries, awareness_instances TO {name};",
            db_name = db.name
        ))
        .await;
        let url = with_user(&db.url, &name, &password);
        Self {
            name,
            password,
            url,
            db_url: db.url.clone(),
        }
    }
}

impl Drop for AppRole {
    fn drop(&mut self) {
        let (name, db_url) = (self.name.clone(), self.db_url.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                use diesel_async::AsyncConnection;
                let mut conn = diesel_async::AsyncPgConnection::establish(&db_url).await.ok()?;
                conn.batch_execute(&format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{name}';
                     DROP OWNED BY {name}; DROP ROLE {name};"
                ))
                .await
                .ok()
            })
        })
        .join();
    }
}

/// `url` with its user and password replaced.
fn with_user(url: &str, user: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("URL form");
    let rest = match rest.split_once('@') {
        Some((_, host)) if !host.contains('@') => host,
        _ => rest,
    };
    format!("{scheme}://{user}:{password}@{rest}")
}
