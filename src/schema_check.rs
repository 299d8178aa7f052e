//! The schema validator: compares the live database (`information_schema`, `pg_indexes`) with
//! the schema this crate expects, derived from `schema.rs` where diesel can tell.

use std::fmt;

use diesel::pg::{Pg, PgMetadataLookup, PgTypeMetadata};
use diesel::prelude::*;
use diesel::sql_types::{is_nullable, HasSqlType, SqlType};
use diesel::{Column, Table};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::error::Result;
use crate::schema::awareness_entries;

/// The table this crate stores entries in.
pub const TABLE: &str = "awareness_entries";

/// One column the crate expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedColumn {
    /// Column name.
    pub name: &'static str,
    /// PostgreSQL type OID, from diesel's SQL type in `schema.rs`.
    pub type_oid: u32,
    /// Whether the column accepts NULL, from `schema.rs`.
    pub nullable: bool,
    /// Collation the crate relies on, if any.
    pub collation: Option<&'static str>,
}

/// An index the crate's queries need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedIndex {
    /// The name the migration gives it.
    pub name: &'static str,
    /// Its key columns, in order.
    pub columns: &'static [&'static str],
    /// Why the crate needs it.
    pub purpose: &'static str,
}

/// One way the database differs from the expected schema.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SchemaDifference {
    /// The table does not exist in the current schema.
    MissingTable,
    /// An expected column is missing.
    MissingColumn(&'static str),
    /// A column has another type.
    WrongType {
        /// Column name.
        column: &'static str,
        /// Expected type (PostgreSQL name).
        expected: String,
        /// Type found.
        found: String,
    },
    /// A column's nullability differs.
    WrongNullability {
        /// Column name.
        column: &'static str,
        /// Whether the crate expects it nullable.
        expected_nullable: bool,
    },
    /// A text column has another collation (ordering would differ from the in-memory store).
    WrongCollation {
        /// Column name.
        column: &'static str,
        /// Expected collation.
        expected: &'static str,
        /// Collation found, if any.
        found: Option<String>,
    },
    /// A column the crate does not know.
    UnexpectedColumn(String),
    /// The primary key is missing or on other columns.
    WrongPrimaryKey {
        /// Expected key columns.
        expected: Vec<&'static str>,
        /// Key columns found (empty: no primary key).
        found: Vec<String>,
    },
    /// A needed index is missing.
    MissingIndex(ExpectedIndex),
}

impl fmt::Display for SchemaDifference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingTable => write!(f, "table {TABLE} is missing"),
            Self::MissingColumn(c) => write!(f, "column {c} is missing"),
            Self::WrongType {
                column,
                expected,
                found,
            } => write!(f, "column {column} has type {found}, expected {expected}"),
            Self::WrongNullability {
                column,
                expected_nullable: true,
            } => write!(f, "column {column} is NOT NULL, expected nullable"),
            Self::WrongNullability { column, .. } => {
                write!(f, "column {column} is nullable, expected NOT NULL")
            }
            Self::WrongCollation {
                column,
                expected,
                found,
            } => write!(
                f,
                "column {column} has collation {}, expected \"{expected}\"",
                found.as_deref().unwrap_or("default")
            ),
            Self::UnexpectedColumn(c) => write!(f, "unexpected column {c}"),
            Self::WrongPrimaryKey { expected, found } => write!(
                f,
                "primary key is ({}), expected ({})",
                found.join(", "),
                expected.join(", ")
            ),
            Self::MissingIndex(index) => write!(
                f,
                "index {} on ({}) is missing ({})",
                index.name,
                index.columns.join(", "),
                index.purpose
            ),
        }
    }
}

/// The validator's findings: empty means the schema is as expected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaReport {
    /// Every difference found.
    pub differences: Vec<SchemaDifference>,
}

impl SchemaReport {
    /// True when nothing differs.
    pub fn is_ok(&self) -> bool {
        self.differences.is_empty()
    }
}

impl fmt::Display for SchemaReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_ok() {
            return f.write_str("schema ok");
        }
        for (i, d) in self.differences.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Built-in types never consult the lookup; it exists only to satisfy diesel's signature.
struct NoLookup;

impl PgMetadataLookup for NoLookup {
    fn lookup_type(&mut self, _: &str, _: Option<&str>) -> PgTypeMetadata {
        PgTypeMetadata::new(0, 0)
    }
}

trait Nullability {
    const NULLABLE: bool;
}
impl Nullability for is_nullable::IsNullable {
    const NULLABLE: bool = true;
}
impl Nullability for is_nullable::NotNull {
    const NULLABLE: bool = false;
}

fn column<C>(_: C, collation: Option<&'static str>) -> ExpectedColumn
where
    C: Column,
    C::SqlType: SqlType,
    <C::SqlType as SqlType>::IsNull: Nullability,
    Pg: HasSqlType<C::SqlType>,
{
    let metadata = <Pg as HasSqlType<C::SqlType>>::metadata(&mut NoLookup);
    ExpectedColumn {
        name: C::NAME,
        type_oid: metadata.oid().unwrap_or(0),
        nullable: <<C::SqlType as SqlType>::IsNull as Nullability>::NULLABLE,
        collation,
    }
}

/// The columns `schema.rs` declares, with their types and nullability.
pub fn expected_columns() -> Vec<ExpectedColumn> {
    // Destructuring all_columns stops compiling when schema.rs gains or loses a column, so this
    // list cannot drift from the generated schema.
    let (document_id, client_id, connection_id, state, clock_value, last_seen) =
        awareness_entries::all_columns;
    const C: Option<&str> = Some("C");
    vec![
        column(document_id, C),
        column(client_id, C),
        column(connection_id, C),
        column(state, None),
        column(clock_value, None),
        column(last_seen, None),
    ]
}

/// The primary key `schema.rs` declares.
pub fn expected_primary_key() -> Vec<&'static str> {
    fn name<C: Column>(_: C) -> &'static str {
        C::NAME
    }
    let (document_id, client_id) = awareness_entries::table.primary_key();
    vec![name(document_id), name(client_id)]
}

/// Indexes the store's queries need, besides the primary key.
pub fn expected_indexes() -> Vec<ExpectedIndex> {
    vec![ExpectedIndex {
        name: "awareness_entries_connection_id_idx",
        columns: &["connection_id"],
        purpose: "remove_all_for_connection",
    }]
}

#[derive(QueryableByName)]
struct LiveColumn {
    #[diesel(sql_type = diesel::sql_types::Text)]
    column_name: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    udt_name: String,
    #[diesel(sql_type = diesel::sql_types::Oid)]
    type_oid: u32,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    nullable: bool,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    collation_name: Option<String>,
}

#[derive(QueryableByName)]
struct Named {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
}

#[derive(QueryableByName)]
struct IndexDef {
    #[diesel(sql_type = diesel::sql_types::Text)]
    indexdef: String,
}

/// Reads the live schema (the connection's `current_schema()`) and compares it with the
/// expected one.
pub async fn validate_schema(conn: &mut AsyncPgConnection) -> Result<SchemaReport> {
    let live: Vec<LiveColumn> = diesel::sql_query(
        "SELECT c.column_name::text AS column_name, c.udt_name::text AS udt_name, \
                t.oid AS type_oid, c.is_nullable = 'YES' AS nullable, \
                c.collation_name::text AS collation_name \
         FROM information_schema.columns c \
         JOIN pg_catalog.pg_type t \
           ON t.typname = c.udt_name AND t.typnamespace::regnamespace::text = c.udt_schema \
         WHERE c.table_schema = current_schema() AND c.table_name = $1 \
         ORDER BY c.ordinal_position",
    )
    .bind::<diesel::sql_types::Text, _>(TABLE)
    .load(conn)
    .await?;

    let mut differences = Vec::new();
    if live.is_empty() {
        differences.push(SchemaDifference::MissingTable);
        return Ok(SchemaReport { differences });
    }

    let expected = expected_columns();
    for want in &expected {
        let Some(found) = live.iter().find(|c| c.column_name == want.name) else {
            differences.push(SchemaDifference::MissingColumn(want.name));
            continue;
        };
        if found.type_oid != want.type_oid {
            differences.push(SchemaDifference::WrongType {
                column: want.name,
                expected: type_name(conn, want.type_oid).await?,
                found: found.udt_name.clone(),
            });
        }
        if found.nullable != want.nullable {
            differences.push(SchemaDifference::WrongNullability {
                column: want.name,
                expected_nullable: want.nullable,
            });
        }
        if let Some(collation) = want.collation {
            if found.collation_name.as_deref() != Some(collation) {
                differences.push(SchemaDifference::WrongCollation {
                    column: want.name,
                    expected: collation,
                    found: found.collation_name.clone(),
                });
            }
        }
    }
    for found in &live {
        if !expected.iter().any(|c| c.name == found.column_name) {
            differences.push(SchemaDifference::UnexpectedColumn(
                found.column_name.clone(),
            ));
        }
    }

    let primary_key: Vec<String> = diesel::sql_query(
        "SELECT k.column_name::text AS name \
         FROM information_schema.table_constraints tc \
         JOIN information_schema.key_column_usage k \
           ON k.constraint_schema = tc.constraint_schema AND k.constraint_name = tc.constraint_name \
         WHERE tc.table_schema = current_schema() AND tc.table_name = $1 \
           AND tc.constraint_type = 'PRIMARY KEY' \
         ORDER BY k.ordinal_position",
    )
    .bind::<diesel::sql_types::Text, _>(TABLE)
    .load::<Named>(conn)
    .await?
    .into_iter()
    .map(|n| n.name)
    .collect();
    let expected_pk = expected_primary_key();
    if primary_key != expected_pk {
        differences.push(SchemaDifference::WrongPrimaryKey {
            expected: expected_pk,
            found: primary_key,
        });
    }

    // Matched by definition, not by name: any B-tree index on exactly these columns serves.
    let indexes: Vec<IndexDef> = diesel::sql_query(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename = $1",
    )
    .bind::<diesel::sql_types::Text, _>(TABLE)
    .load(conn)
    .await?;
    for index in expected_indexes() {
        let key = format!("USING btree ({})", index.columns.join(", "));
        if !indexes.iter().any(|i| i.indexdef.ends_with(&key)) {
            differences.push(SchemaDifference::MissingIndex(index));
        }
    }
    Ok(SchemaReport { differences })
}

async fn type_name(conn: &mut AsyncPgConnection, oid: u32) -> Result<String> {
    Ok(
        diesel::sql_query("SELECT typname::text AS name FROM pg_catalog.pg_type WHERE oid = $1")
            .bind::<diesel::sql_types::Oid, _>(oid)
            .get_result::<Named>(conn)
            .await
            .optional()?
            .map_or_else(|| format!("oid {oid}"), |n| n.name),
    )
}
