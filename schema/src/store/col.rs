//! Column codecs: how domain values are stored. Amounts are exact decimal wei TEXT, addresses and
//! hashes BLOBs of their natural width, booleans 0/1.

use alloy::primitives::{Address, B256, U256};
use rusqlite::types::{FromSqlError, ToSqlOutput, Value, ValueRef};

/// A value that maps to one SQLite column.
pub trait Col: Sized {
    /// The SQLite value.
    fn out(&self) -> ToSqlOutput<'_>;
    /// Reads the value back.
    fn read(v: ValueRef<'_>) -> Result<Self, FromSqlError>;
}

impl Col for u64 {
    fn out(&self) -> ToSqlOutput<'_> {
        // Block numbers, timestamps and ids fit i64 for any real chain.
        ToSqlOutput::Owned(Value::Integer(*self as i64))
    }
    fn read(v: ValueRef<'_>) -> Result<Self, FromSqlError> {
        v.as_i64().map(|i| i as u64)
    }
}

impl Col for i64 {
    fn out(&self) -> ToSqlOutput<'_> {
        ToSqlOutput::Owned(Value::Integer(*self))
    }
    fn read(v: ValueRef<'_>) -> Result<Self, FromSqlError> {
        v.as_i64()
    }
}

impl Col for bool {
    fn out(&self) -> ToSqlOutput<'_> {
        ToSqlOutput::Owned(Value::Integer(i64::from(*self)))
    }
    fn read(v: ValueRef<'_>) -> Result<Self, FromSqlError> {
        v.as_i64().map(|i| i != 0)
    }
}

impl Col for String {
    fn out(&self) -> ToSqlOutput<'_> {
        ToSqlOutput::Borrowed(ValueRef::Text(self.as_bytes()))
    }
    fn read(v: ValueRef<'_>) -> Result<Self, FromSqlError> {
        v.as_str().map(str::to_owned)
    }
}

impl Col for Vec<u8> {
    fn out(&self) -> ToSqlOutput<'_> {
        ToSqlOutput::Borrowed(ValueRef::Blob(self))
    }
    fn read(v: ValueRef<'_>) -> Result<Self, FromSqlError> {
        v.as_blob().map(<[u8]>::to_vec)
    }
}

impl Col for U256 {
    fn out(&self) -> ToSqlOutput<'_> {
        ToSqlOutput::Owned(Value::Text(self.to_string()))
    }
    fn read(v: ValueRef<'_>) -> Result<Self, FromSqlError> {
        match v {
            // A sum, or PostgreSQL's numeric(78,0) of a small amount (`super::sql`).
            ValueRef::Integer(i) if i >= 0 => Ok(U256::from(i as u64)),
            v => U256::from_str_radix(v.as_str()?, 10).map_err(|e| FromSqlError::Other(Box::new(e))),
        }
    }
}

impl Col for Address {
    fn out(&self) -> ToSqlOutput<'_> {
        ToSqlOutput::Borrowed(ValueRef::Blob(self.as_slice()))
    }
    fn read(v: ValueRef<'_>) -> Result<Self, FromSqlError> {
        let b = v.as_blob()?;
        if b.len() != 20 {
            return Err(FromSqlError::InvalidBlobSize { expected_size: 20, blob_size: b.len() });
        }
        Ok(Address::from_slice(b))
    }
}

impl Col for B256 {
    fn out(&self) -> ToSqlOutput<'_> {
        ToSqlOutput::Borrowed(ValueRef::Blob(self.as_slice()))
    }
    fn read(v: ValueRef<'_>) -> Result<Self, FromSqlError> {
        let b = v.as_blob()?;
        if b.len() != 32 {
            return Err(FromSqlError::InvalidBlobSize { expected_size: 32, blob_size: b.len() });
        }
        Ok(B256::from_slice(b))
    }
}

impl<T: Col> Col for Option<T> {
    fn out(&self) -> ToSqlOutput<'_> {
        match self {
            Some(v) => v.out(),
            None => ToSqlOutput::Owned(Value::Null),
        }
    }
    fn read(v: ValueRef<'_>) -> Result<Self, FromSqlError> {
        match v {
            ValueRef::Null => Ok(None),
            other => T::read(other).map(Some),
        }
    }
}

/// The value a [`Col::out`] holds (every codec here produces a plain value).
pub fn value_ref<'a>(out: &'a ToSqlOutput<'a>) -> ValueRef<'a> {
    match out {
        ToSqlOutput::Borrowed(v) => *v,
        ToSqlOutput::Owned(v) => v.into(),
        // Zero-blobs and arrays are never produced by a codec of this module.
        _ => ValueRef::Null,
    }
}

/// Reads column `i` of a row through [`Col`].
pub fn get<T: Col>(row: &(impl super::sql::Row + ?Sized), i: usize) -> rusqlite::Result<T> {
    let v = row.value(i)?;
    T::read(v).map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, v.data_type(), Box::new(e)))
}

impl Col for alloy::primitives::Bytes {
    fn out(&self) -> ToSqlOutput<'_> {
        ToSqlOutput::Borrowed(ValueRef::Blob(self))
    }
    fn read(v: ValueRef<'_>) -> Result<Self, FromSqlError> {
        v.as_blob().map(alloy::primitives::Bytes::copy_from_slice)
    }
}
