//! The schema validator: compares the live database (`information_schema`, `pg_indexes`) with
//! the schema this crate expects, derived from `schema.rs` where diesel can tell.

use diesel::pg::{Pg, PgMetadataLookup, PgTypeMetadata};
use diesel::prelude::*;
use diesel::sql_types::{is_nullable, HasSqlType, SqlType};
use diesel::{Column, Table};
use diesel_async::{AsyncConnectionCore, RunQueryDsl};

use crate::error::Result;
use crate::schema::{awareness_entries, awareness_instances};
pub use crate::schema_report::{ExpectedIndex, SchemaDifference, SchemaReport, TABLE};

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
    let (document_id, client_id, connection_id, state, clock_value, last_seen, owner, instance_id) =
        awareness_entries::all_columns;
    const C: Option<&str> = Some("C");
    vec![
        column(document_id, C),
        column(client_id, C),
        column(connection_id, C),
        column(state, None),
        column(clock_value, None),
        column(last_seen, None),
        column(owner, C),
        column(instance_id, C),
    ]
}

/// The instance-lease table's name.
pub const INSTANCES_TABLE: &str = "awareness_instances";

/// The columns of `awareness_instances` that `schema.rs` declares.
pub fn expected_instance_columns() -> Vec<ExpectedColumn> {
    let (instance_id, lease_expires_at, started_at) = awareness_instances::all_columns;
    vec![
        column(instance_id, Some("C")),
        column(lease_expires_at, None),
        column(started_at, None),
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
    vec![
        ExpectedIndex {
            name: "awareness_entries_connection_id_idx",
            columns: &["connection_id"],
            purpose: "remove_all_for_connection",
        },
        ExpectedIndex {
            name: "awareness_entries_instance_id_idx",
            columns: &["instance_id"],
            purpose: "an instance's shutdown",
        },
    ]
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
/// expected one: `awareness_entries`, then `awareness_instances`.
///
/// Any diesel-async PostgreSQL connection will do (an `AsyncPgConnection`, a pooled one).
pub async fn validate_schema<C>(conn: &mut C) -> Result<SchemaReport>
where
    C: AsyncConnectionCore<Backend = Pg> + Send,
{
    let mut differences = Vec::new();
    check_table(
        conn,
        TABLE,
        &expected_columns(),
        &expected_primary_key(),
        &expected_indexes(),
        &mut differences,
    )
    .await?;
    let mut instances = Vec::new();
    check_table(
        conn,
        INSTANCES_TABLE,
        &expected_instance_columns(),
        &["instance_id"],
        &[],
        &mut instances,
    )
    .await?;
    differences.extend(
        instances
            .into_iter()
            .map(|difference| SchemaDifference::OtherTable {
                table: INSTANCES_TABLE,
                difference: Box::new(difference),
            }),
    );
    Ok(SchemaReport { differences })
}

/// Compares one table with what the crate expects of it, adding each difference.
async fn check_table<C: AsyncConnectionCore<Backend = Pg> + Send>(
    conn: &mut C,
    table: &str,
    expected: &[ExpectedColumn],
    expected_pk: &[&'static str],
    expected_indexes: &[ExpectedIndex],
    differences: &mut Vec<SchemaDifference>,
) -> Result<()> {
    let live: Vec<LiveColumn> = diesel::sql_query(crate::postgres::sql::raw::TABLE_COLUMNS)
        .bind::<diesel::sql_types::Text, _>(table)
        .load(conn)
        .await?;
    if live.is_empty() {
        differences.push(SchemaDifference::MissingTable);
        return Ok(());
    }

    for want in expected {
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

    let primary_key: Vec<String> =
        diesel::sql_query(crate::postgres::sql::raw::PRIMARY_KEY_COLUMNS)
            .bind::<diesel::sql_types::Text, _>(table)
            .load::<Named>(conn)
            .await?
            .into_iter()
            .map(|n| n.name)
            .collect();
    if primary_key != expected_pk {
        differences.push(SchemaDifference::WrongPrimaryKey {
            expected: expected_pk.to_vec(),
            found: primary_key,
        });
    }

    // Matched by definition, not by name: any B-tree index on exactly these columns serves
    // (partial or not).
    let indexes: Vec<IndexDef> = diesel::sql_query(crate::postgres::sql::raw::INDEX_DEFINITIONS)
        .bind::<diesel::sql_types::Text, _>(table)
        .load(conn)
        .await?;
    for index in expected_indexes {
        let key = format!("USING btree ({})", index.columns.join(", "));
        let matches = |def: &str| {
            def.strip_suffix(key.as_str()).is_some() || def.contains(&format!("{key} WHERE "))
        };
        if !indexes.iter().any(|i| matches(&i.indexdef)) {
            differences.push(SchemaDifference::MissingIndex(index.clone()));
        }
    }
    Ok(())
}

async fn type_name<C: AsyncConnectionCore<Backend = Pg> + Send>(
    conn: &mut C,
    oid: u32,
) -> Result<String> {
    Ok(diesel::sql_query(crate::postgres::sql::raw::TYPE_NAME)
        .bind::<diesel::sql_types::Oid, _>(oid)
        .get_result::<Named>(conn)
        .await
        .optional()?
        .map_or_else(|| format!("oid {oid}"), |n| n.name))
}
