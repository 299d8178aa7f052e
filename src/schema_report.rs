//! What the schema validator reports, apart from how it looks: the crate's error type names
//! [`SchemaReport`] (in [`Error::SchemaMismatch`](crate::Error::SchemaMismatch)) without
//! depending on the validator.

use std::fmt;

/// The table this crate stores entries in.
pub const TABLE: &str = "awareness_entries";

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
    /// A difference in another table of the crate's (`awareness_instances`); the difference
    /// itself is worded as for the entries table.
    OtherTable {
        /// The table.
        table: &'static str,
        /// What differs there ([`MissingTable`](Self::MissingTable): the table is missing).
        difference: Box<SchemaDifference>,
    },
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
            Self::OtherTable { table, difference } => match **difference {
                Self::MissingTable => write!(f, "table {table} is missing"),
                ref other => write!(f, "table {table}: {other}"),
            },
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
