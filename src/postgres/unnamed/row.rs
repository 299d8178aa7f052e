//! The rows an [`UnnamedConnection`](super::UnnamedConnection) loads, as diesel reads them:
//! tokio-postgres' rows (binary columns) behind diesel's `Row` and `Field`, and the binds going
//! the other way (diesel's bytes as tokio-postgres parameters). The shape of diesel-async's own
//! (private) `PgRow`, without its `unsafe` cast: a column's type OID is kept beside it.

use std::num::NonZeroU32;

use diesel::backend::Backend;
use diesel::pg::{Pg, PgValue};
use diesel::row::{Field, PartialRow, RowIndex, RowSealed};
use tokio_postgres::types::private::BytesMut;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type};

/// One row of a statement's result on an [`UnnamedConnection`](super::UnnamedConnection), as
/// diesel reads it.
pub struct UnnamedRow(pub(super) tokio_postgres::Row);

impl RowSealed for UnnamedRow {}

impl<'a> diesel::row::Row<'a, Pg> for UnnamedRow {
    type InnerPartialRow = Self;
    type Field<'b>
        = UnnamedField<'b>
    where
        Self: 'b,
        'a: 'b;

    fn field_count(&self) -> usize {
        self.0.len()
    }

    fn get<'b, I>(&'b self, idx: I) -> Option<Self::Field<'b>>
    where
        'a: 'b,
        Self: RowIndex<I>,
    {
        let idx = self.idx(idx)?;
        let oid = NonZeroU32::new(self.0.columns().get(idx)?.type_().oid())?;
        Some(UnnamedField {
            row: &self.0,
            idx,
            oid,
        })
    }

    fn partial_row(&self, range: std::ops::Range<usize>) -> PartialRow<'_, Self::InnerPartialRow> {
        PartialRow::new(self, range)
    }
}

impl RowIndex<usize> for UnnamedRow {
    fn idx(&self, idx: usize) -> Option<usize> {
        (idx < self.0.len()).then_some(idx)
    }
}

impl<'a> RowIndex<&'a str> for UnnamedRow {
    fn idx(&self, idx: &'a str) -> Option<usize> {
        self.0.columns().iter().position(|c| c.name() == idx)
    }
}

/// One column of an [`UnnamedRow`].
pub struct UnnamedField<'a> {
    row: &'a tokio_postgres::Row,
    idx: usize,
    oid: NonZeroU32,
}

impl<'a> Field<'a, Pg> for UnnamedField<'a> {
    fn field_name(&self) -> Option<&str> {
        self.row.columns().get(self.idx).map(|c| c.name())
    }

    fn value(&self) -> Option<<Pg as Backend>::RawValue<'_>> {
        let Raw(bytes) = self.row.try_get(self.idx).ok()?;
        Some(PgValue::new(bytes?, &self.oid))
    }
}

/// A column's bytes as the server sent them (NULL: `None`).
struct Raw<'a>(Option<&'a [u8]>);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(
        _ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw)))
    }

    fn from_sql_null(_ty: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }

    fn accepts(ty: &Type) -> bool {
        ty.oid() != 0
    }
}

/// A bind as diesel serialized it (binary format; `None` is NULL), sent with the type diesel
/// gave it.
#[derive(Debug)]
pub(crate) struct Bytes(pub(super) Option<Vec<u8>>);

impl ToSql for Bytes {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.0 {
            Some(bytes) => {
                out.extend_from_slice(bytes);
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        // The type is diesel's, sent beside the value (`query_typed`): nothing to check.
        true
    }

    tokio_postgres::types::to_sql_checked!();
}
