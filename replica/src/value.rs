//! One column value on its way between the two databases, and its canonical encoding for the
//! digests: a value read from SQLite and the same value read back from PostgreSQL encode to the
//! same bytes, whatever each database's own representation (0/1 and boolean, decimal TEXT and
//! numeric).

use std::error::Error;

use alloy::primitives::U256;
use bytes::BytesMut;
use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use rusqlite::types::ValueRef;
use sha2::{Digest, Sha256};

use crate::tables::{Column, Kind, Table};
use crate::{ReplicaError, ReplicaResult};

/// A column value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// NULL.
    Null,
    /// [`Kind::Int`].
    Int(i64),
    /// [`Kind::Flag`].
    Flag(bool),
    /// [`Kind::Text`].
    Text(String),
    /// [`Kind::Bytes`].
    Bytes(Vec<u8>),
    /// [`Kind::Wei`].
    Wei(U256),
}

impl Value {
    /// The value of `column` as the store holds it in `raw`; a value that does not fit the
    /// column's kind is an error naming the row (`key`, computed only then).
    pub fn from_sqlite(
        table: &Table,
        column: &Column,
        raw: ValueRef<'_>,
        key: impl FnOnce() -> String,
    ) -> ReplicaResult<Value> {
        let value = match (column.kind, raw) {
            (_, ValueRef::Null) => Some(Value::Null),
            (Kind::Int, ValueRef::Integer(i)) => Some(Value::Int(i)),
            (Kind::Flag, ValueRef::Integer(0)) => Some(Value::Flag(false)),
            (Kind::Flag, ValueRef::Integer(1)) => Some(Value::Flag(true)),
            (Kind::Text, ValueRef::Text(t)) => std::str::from_utf8(t).ok().map(|s| Value::Text(s.to_owned())),
            (Kind::Bytes, ValueRef::Blob(b)) => Some(Value::Bytes(b.to_vec())),
            (Kind::Wei, ValueRef::Text(t)) => {
                std::str::from_utf8(t).ok().and_then(|s| U256::from_str_radix(s, 10).ok()).map(Value::Wei)
            }
            _ => None,
        };
        value.ok_or_else(|| ReplicaError::Value {
            table: table.name,
            key: key(),
            column: column.name,
            found: show(raw),
            expected: match column.kind {
                Kind::Int => "an integer",
                Kind::Flag => "0 or 1",
                Kind::Text => "UTF-8 text",
                Kind::Bytes => "a blob",
                Kind::Wei => "a decimal U256",
            },
        })
    }

    /// The value of `column` read back from the replica's `row` at `index` (numeric columns are
    /// selected as text, see [`select_expr`]).
    pub fn from_postgres(table: &Table, column: &Column, row: &postgres::Row, index: usize) -> ReplicaResult<Value> {
        let foreign = |found: String| ReplicaError::Foreign { table: table.name, column: column.name, found };
        let get_err = |e: postgres::Error| foreign(format!("a value of another type ({e})"));
        let value = match column.kind {
            Kind::Int => row.try_get::<_, Option<i64>>(index).map_err(get_err)?.map(Value::Int),
            Kind::Flag => row.try_get::<_, Option<bool>>(index).map_err(get_err)?.map(Value::Flag),
            Kind::Text => row.try_get::<_, Option<String>>(index).map_err(get_err)?.map(Value::Text),
            Kind::Bytes => row.try_get::<_, Option<Vec<u8>>>(index).map_err(get_err)?.map(Value::Bytes),
            Kind::Wei => match row.try_get::<_, Option<String>>(index).map_err(get_err)? {
                None => None,
                Some(s) => Some(Value::Wei(U256::from_str_radix(&s, 10).map_err(|_| foreign(s))?)),
            },
        };
        Ok(value.unwrap_or(Value::Null))
    }

    /// Feeds the canonical encoding into `hash`: a tag, then the value (integers and flags as 8
    /// big-endian bytes, a flag as 0 or 1; text and bytes length-prefixed; U256 as 32 bytes).
    pub fn digest_into(&self, hash: &mut Sha256) {
        match self {
            Value::Null => hash.update([0]),
            Value::Int(i) => {
                hash.update([1]);
                hash.update(i.to_be_bytes());
            }
            Value::Flag(b) => {
                hash.update([1]);
                hash.update(i64::from(*b).to_be_bytes());
            }
            Value::Text(s) => {
                hash.update([2]);
                hash.update((s.len() as u64).to_be_bytes());
                hash.update(s.as_bytes());
            }
            Value::Bytes(b) => {
                hash.update([3]);
                hash.update((b.len() as u64).to_be_bytes());
                hash.update(b);
            }
            Value::Wei(v) => {
                hash.update([4]);
                hash.update(v.to_be_bytes::<32>());
            }
        }
    }

    /// The key part of a row as people read it (numbers, text, 0x hex).
    pub fn show(&self) -> String {
        match self {
            Value::Null => "NULL".into(),
            Value::Int(i) => i.to_string(),
            Value::Flag(b) => u8::from(*b).to_string(),
            Value::Text(s) => s.clone(),
            Value::Bytes(b) => format!("0x{}", alloy::hex::encode(b)),
            Value::Wei(v) => v.to_string(),
        }
    }
}

/// The PostgreSQL type of a column of `kind`.
pub fn pg_type(kind: Kind) -> Type {
    match kind {
        Kind::Int => Type::INT8,
        Kind::Flag => Type::BOOL,
        Kind::Text => Type::TEXT,
        Kind::Bytes => Type::BYTEA,
        Kind::Wei => Type::NUMERIC,
    }
}

/// How the replica's column is selected for reading back: numeric as its decimal text (scale 0,
/// so no point or exponent), the rest as stored.
pub fn select_expr(column: &Column) -> String {
    match column.kind {
        Kind::Wei => format!("\"{}\"::text", column.name),
        _ => format!("\"{}\"", column.name),
    }
}

fn show(raw: ValueRef<'_>) -> String {
    match raw {
        ValueRef::Null => "NULL".into(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(r) => r.to_string(),
        ValueRef::Text(t) => format!("{:?}", String::from_utf8_lossy(t)),
        ValueRef::Blob(b) => format!("a {}-byte blob", b.len()),
    }
}

/// PostgreSQL's binary numeric: digit count, weight (of the first base-10000 digit), sign,
/// display scale, then base-10000 digits, most significant first, trailing zero digits dropped.
pub(crate) fn numeric_binary(v: U256, out: &mut BytesMut) {
    let mut digits: Vec<i16> = Vec::new();
    let mut rest = v;
    let base = U256::from(10_000u64);
    while !rest.is_zero() {
        let (q, r) = rest.div_rem(base);
        digits.push(r.to::<u64>() as i16);
        rest = q;
    }
    digits.reverse();
    let weight = digits.len().saturating_sub(1) as i16;
    while digits.last() == Some(&0) {
        digits.pop();
    }
    out.extend_from_slice(&(digits.len() as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes()); // positive
    out.extend_from_slice(&0u16.to_be_bytes()); // scale 0
    for d in digits {
        out.extend_from_slice(&d.to_be_bytes());
    }
}

impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => i.to_sql(ty, out),
            Value::Flag(b) => b.to_sql(ty, out),
            Value::Text(s) => s.to_sql(ty, out),
            Value::Bytes(b) => b.to_sql(ty, out),
            Value::Wei(v) => {
                numeric_binary(*v, out);
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(ty: &Type) -> bool {
        [Type::INT8, Type::BOOL, Type::TEXT, Type::BYTEA, Type::NUMERIC].contains(ty)
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(v: U256) -> Vec<i16> {
        let mut out = BytesMut::new();
        numeric_binary(v, &mut out);
        out.chunks(2).map(|c| i16::from_be_bytes([c[0], c[1]])).collect()
    }

    #[test]
    fn numerics_are_base_10000_without_trailing_zero_digits() {
        assert_eq!(numeric(U256::ZERO), [0, 0, 0, 0]);
        assert_eq!(numeric(U256::from(7u64)), [1, 0, 0, 0, 7]);
        // 1 LCAI = 10^18 wei = 100 * 10000^4: one digit, 100, of weight 4.
        assert_eq!(numeric(U256::from(10u64).pow(U256::from(18u64))), [1, 4, 0, 0, 100]);
        assert_eq!(numeric(U256::from(123_456_789u64)), [3, 2, 0, 0, 1, 2345, 6789]);
        assert_eq!(numeric(U256::MAX)[..2], [20, 19]);
    }

    #[test]
    fn a_flag_digests_as_the_integer_sqlite_stores() {
        let digest = |v: Value| {
            let mut h = Sha256::new();
            v.digest_into(&mut h);
            h.finalize()
        };
        assert_eq!(digest(Value::Flag(true)), digest(Value::Int(1)));
        assert_ne!(digest(Value::Text("1".into())), digest(Value::Bytes(b"1".to_vec())));
        assert_ne!(digest(Value::Null), digest(Value::Text(String::new())));
    }
}
