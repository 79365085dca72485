//! Reading a replica as the store is read: [`Reader`] runs the store's own read functions
//! (`lcw_schema::store`, written in SQLite's SQL against [`Db`]) on PostgreSQL, so the API serves
//! the same answers from either engine without a second copy of its SQL.
//!
//! The translation is small and fixed ([`translate`]): `?N` parameters become `$N`, SQLite's
//! index hints are dropped (PostgreSQL plans on its own), `CAST(… AS INTEGER)` becomes
//! `AS BIGINT` (SQLite's INTEGER is 64 bits). Values come back as SQLite's ([`Value`]), so the
//! store's column codecs decode them: bigint, integer and smallint as integers, boolean as 0/1,
//! bytea as a blob, text as text, numeric as an integer when whole and within i64, else as
//! decimal text (a wei amount) or a real when it has a fraction.
//!
//! A reader never writes and never migrates: it may run on a read-only streaming standby. It
//! checks that the database holds a replica of this lcw's schema before the first read.

use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error;
use std::time::Duration;

use alloy::primitives::U256;
use bytes::BytesMut;
use lcw_schema::store::sql::{Db, Dialect, Params, Row};
use lcw_schema::store::{StoreError, StoreResult};
use postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use rusqlite::types::{ToSqlOutput, Value};

use crate::{ReplicaError, ReplicaResult, ReplicaUrl};

/// Prepared statements kept per connection (the API's reads are a few dozen texts).
const STATEMENTS: usize = 512;

/// A read-only connection to a replica that answers the store's reads.
pub struct Reader {
    client: RefCell<postgres::Client>,
    statements: RefCell<HashMap<String, postgres::Statement>>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").finish_non_exhaustive()
    }
}

impl Reader {
    /// Connects to the replica at `url` for reading: every statement stops after `timeout`
    /// (PostgreSQL's `statement_timeout`), and the session is read-only. Fails with what to do
    /// when the database holds no replica, or one of another lcw version.
    pub fn connect(url: &ReplicaUrl, timeout: Duration) -> ReplicaResult<Reader> {
        let mut config = url.config().clone();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.keepalives(true).keepalives_idle(Duration::from_secs(30));
        let mut client =
            config.connect(postgres::NoTls).map_err(|source| ReplicaError::Connect { url: url.to_string(), source })?;
        let ms = timeout.as_millis().clamp(1, i32::MAX as u128);
        client
            .batch_execute(&format!(
                "SET statement_timeout = {ms}; SET default_transaction_read_only = on; SET application_name = 'lcw serve'"
            ))
            .map_err(|source| ReplicaError::Connect { url: url.to_string(), source })?;
        check_schema(&mut client, url)?;
        Ok(Reader { client: RefCell::new(client), statements: RefCell::new(HashMap::new()) })
    }

    /// A token that cancels the statement running on this connection (from another thread).
    pub fn cancel_token(&self) -> postgres::CancelToken {
        self.client.borrow().cancel_token()
    }

    /// Whether the connection is gone (the server closed it): such a reader is dropped, not
    /// pooled.
    pub fn is_closed(&self) -> bool {
        self.client.borrow().is_closed()
    }

    fn statement(&self, sql: &str) -> Result<postgres::Statement, postgres::Error> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let prepared = self.client.borrow_mut().prepare(&translate(sql))?;
        let mut cache = self.statements.borrow_mut();
        if cache.len() >= STATEMENTS {
            cache.clear();
        }
        cache.insert(sql.to_owned(), prepared.clone());
        Ok(prepared)
    }
}

/// The migration the reader's code expects the replica to have: the newest one this lcw ships.
fn expected_version() -> i32 {
    crate::embedded::migrations::runner().get_migrations().iter().map(|m| m.version()).max().unwrap_or(0)
}

fn check_schema(client: &mut postgres::Client, url: &ReplicaUrl) -> ReplicaResult<()> {
    let not_replica = || ReplicaError::NotReplica { url: url.to_string() };
    let has_history = client
        .query_one(
            "SELECT to_regclass('refinery_schema_history') IS NOT NULL AND to_regclass('replica_cursor') IS NOT NULL",
            &[],
        )
        .map_err(|source| ReplicaError::Postgres { what: format!("reading the schema of {url}"), source })?
        .get::<_, bool>(0);
    if !has_history {
        return Err(not_replica());
    }
    let found: Option<i32> = client
        .query_one("SELECT max(version) FROM refinery_schema_history", &[])
        .map_err(|source| ReplicaError::Postgres { what: format!("reading the schema of {url}"), source })?
        .get(0);
    let expected = expected_version();
    match found {
        None => Err(not_replica()),
        Some(v) if v == expected => Ok(()),
        Some(found) => Err(ReplicaError::ReaderVersion { url: url.to_string(), found, expected }),
    }
}

impl Db for Reader {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn each(&self, sql: &str, params: Params<'_>, f: &mut dyn FnMut(&dyn Row) -> StoreResult<bool>) -> StoreResult<()> {
        let statement = self.statement(sql).map_err(|e| pg_error(&e))?;
        let params = params.iter().map(|p| Param::of(*p)).collect::<StoreResult<Vec<_>>>()?;
        let mut client = self.client.borrow_mut();
        let rows = client.query(&statement, &params.iter().map(|p| p as &(dyn ToSql + Sync)).collect::<Vec<_>>());
        let rows = rows.map_err(|e| pg_error(&e))?;
        let mut values: Vec<Value> = Vec::new();
        for row in &rows {
            values.clear();
            for i in 0..row.len() {
                values.push(column(row, i)?);
            }
            if !f(&values)? {
                break;
            }
        }
        Ok(())
    }
}

/// PostgreSQL's error as the store reports it: the server's message, its detail and hint (a
/// statement cancelled at the time limit says so).
fn pg_error(e: &postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => {
            let mut s = db.message().to_owned();
            if let Some(d) = db.detail() {
                s.push_str(": ");
                s.push_str(d);
            }
            StoreError::Postgres(s)
        }
        None => StoreError::Postgres(e.to_string()),
    }
}

/// SQLite's SQL as PostgreSQL reads it (see the module's comment). String literals are copied
/// as they are.
pub fn translate(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.char_indices().peekable();
    let mut next_param = 1usize;
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' => {
                out.push(c);
                for (_, c) in chars.by_ref() {
                    out.push(c);
                    if c == '\'' {
                        break;
                    }
                }
            }
            '?' => {
                let mut digits = String::new();
                while let Some(&(_, d)) = chars.peek() {
                    if d.is_ascii_digit() {
                        digits.push(d);
                        chars.next();
                    } else {
                        break;
                    }
                }
                if digits.is_empty() {
                    digits = next_param.to_string();
                }
                next_param = digits.parse::<usize>().unwrap_or(next_param) + 1;
                out.push('$');
                out.push_str(&digits);
            }
            c if c.is_ascii_alphabetic() && !prev_is_word(sql, i) => {
                let rest = &sql[i..];
                if let Some(skip) = hint_len(rest) {
                    // Drops the hint and the space before it.
                    if out.ends_with(' ') {
                        out.pop();
                    }
                    for _ in 0..skip - 1 {
                        chars.next();
                    }
                } else if starts_word(rest, "AS INTEGER)") {
                    out.push_str("AS BIGINT)");
                    for _ in 0.."AS INTEGER)".len() - 1 {
                        chars.next();
                    }
                } else if starts_word(rest, "IFNULL(") {
                    out.push_str("COALESCE(");
                    for _ in 0.."IFNULL(".len() - 1 {
                        chars.next();
                    }
                } else {
                    out.push(c);
                }
            }
            c => out.push(c),
        }
    }
    out
}

fn prev_is_word(sql: &str, i: usize) -> bool {
    sql[..i].chars().next_back().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn starts_word(rest: &str, word: &str) -> bool {
    rest.len() >= word.len() && rest[..word.len()].eq_ignore_ascii_case(word)
}

/// The length in bytes of an `INDEXED BY name` or `NOT INDEXED` hint at the start of `rest`.
fn hint_len(rest: &str) -> Option<usize> {
    if starts_word(rest, "NOT INDEXED") && !rest[11..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
        return Some(11);
    }
    if starts_word(rest, "INDEXED BY ") {
        let name = rest[11..].trim_start();
        let pad = rest.len() - 11 - name.len();
        let len = name.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(name.len());
        if len > 0 {
            return Some(11 + pad + len);
        }
    }
    None
}

/// A parameter, as the store's code bound it for SQLite, written in the type PostgreSQL
/// inferred for its place.
#[derive(Debug)]
struct Param(Value);

impl Param {
    fn of(p: &dyn rusqlite::ToSql) -> StoreResult<Param> {
        let out = p.to_sql()?;
        Ok(Param(match out {
            ToSqlOutput::Borrowed(v) => {
                Value::try_from(v).map_err(|e| StoreError::Postgres(format!("a parameter: {e}")))?
            }
            ToSqlOutput::Owned(v) => v,
            _ => return Err(StoreError::Postgres("a parameter of a kind the replica cannot take".into())),
        }))
    }
}

type BoxError = Box<dyn Error + Sync + Send>;

impl ToSql for Param {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match &self.0 {
            Value::Null => Ok(IsNull::Yes),
            Value::Integer(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::NUMERIC if *i >= 0 => {
                    crate::value::numeric_binary(U256::from(*i as u64), out);
                    Ok(IsNull::No)
                }
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                _ => Err(format!("an integer parameter where PostgreSQL expects {ty}").into()),
            },
            Value::Real(r) => r.to_sql(ty, out),
            Value::Text(s) => match *ty {
                Type::NUMERIC => {
                    crate::value::numeric_binary(U256::from_str_radix(s, 10)?, out);
                    Ok(IsNull::No)
                }
                _ => s.to_sql(ty, out),
            },
            Value::Blob(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Column `i` of `row` as a SQLite value.
fn column(row: &postgres::Row, i: usize) -> StoreResult<Value> {
    let ty = row.columns()[i].type_().clone();
    let get = |e: postgres::Error| StoreError::Postgres(format!("column {}: {e}", row.columns()[i].name()));
    Ok(match ty {
        Type::INT8 => row.try_get::<_, Option<i64>>(i).map_err(get)?.map(Value::Integer),
        Type::INT4 => row.try_get::<_, Option<i32>>(i).map_err(get)?.map(|v| Value::Integer(v.into())),
        Type::INT2 => row.try_get::<_, Option<i16>>(i).map_err(get)?.map(|v| Value::Integer(v.into())),
        Type::BOOL => row.try_get::<_, Option<bool>>(i).map_err(get)?.map(|v| Value::Integer(v.into())),
        Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i).map_err(get)?.map(Value::Blob),
        Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => {
            row.try_get::<_, Option<String>>(i).map_err(get)?.map(Value::Text)
        }
        Type::FLOAT8 => row.try_get::<_, Option<f64>>(i).map_err(get)?.map(Value::Real),
        Type::FLOAT4 => row.try_get::<_, Option<f32>>(i).map_err(get)?.map(|v| Value::Real(v.into())),
        Type::NUMERIC => row.try_get::<_, Option<Numeric>>(i).map_err(get)?.map(|n| n.0),
        other => {
            return Err(StoreError::Postgres(format!(
                "column {} has type {other}, which no store column has",
                row.columns()[i].name()
            )));
        }
    }
    .unwrap_or(Value::Null))
}

/// A numeric read from its binary form.
struct Numeric(Value);

impl<'a> FromSql<'a> for Numeric {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        numeric_value(raw).map(Numeric)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

/// Decodes PostgreSQL's binary numeric: digit count, weight (of the first base-10000 digit),
/// sign, display scale, then the digits.
fn numeric_value(raw: &[u8]) -> Result<Value, BoxError> {
    let word = |k: usize| -> Result<u16, BoxError> {
        raw.get(2 * k..2 * k + 2).map(|b| u16::from_be_bytes([b[0], b[1]])).ok_or_else(|| "a numeric cut short".into())
    };
    let ndigits = word(0)? as usize;
    let weight = word(1)? as i16 as i32;
    let sign = word(2)?;
    let digits = (0..ndigits).map(|k| word(4 + k)).collect::<Result<Vec<_>, _>>()?;
    if sign == 0xC000 {
        return Err("a numeric NaN".into());
    }
    let negative = sign == 0x4000;
    // Digits past the decimal point (weight counts base-10000 places left of it, from 0).
    let whole = digits.iter().enumerate().all(|(k, d)| (k as i32) <= weight || *d == 0);
    if !whole {
        let mut f = 0f64;
        for (k, d) in digits.iter().enumerate() {
            f += f64::from(*d) * 10000f64.powi(weight - k as i32);
        }
        return Ok(Value::Real(if negative { -f } else { f }));
    }
    let mut n = U256::ZERO;
    for k in 0..=weight.max(-1) {
        let d = digits.get(k as usize).copied().unwrap_or(0);
        n = n
            .checked_mul(U256::from(10_000u32))
            .and_then(|n| n.checked_add(U256::from(d)))
            .ok_or("a numeric beyond U256")?;
    }
    if n <= U256::from(i64::MAX as u64) {
        let i = n.to::<u64>() as i64;
        return Ok(Value::Integer(if negative { -i } else { i }));
    }
    Ok(Value::Text(if negative { format!("-{n}") } else { n.to_string() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_hints_and_casts_are_translated_and_literals_kept() {
        assert_eq!(
            translate("SELECT a FROM jobs INDEXED BY jobs_by_worker WHERE worker = ?1 AND job_id BETWEEN ?2 AND ?3"),
            "SELECT a FROM jobs WHERE worker = $1 AND job_id BETWEEN $2 AND $3"
        );
        assert_eq!(
            translate("SELECT x FROM t NOT INDEXED WHERE a = ? AND b = ?"),
            "SELECT x FROM t WHERE a = $1 AND b = $2"
        );
        assert_eq!(
            translate("SELECT sum(CAST(x AS INTEGER)), IFNULL(y, 0) FROM t"),
            "SELECT sum(CAST(x AS BIGINT)), COALESCE(y, 0) FROM t"
        );
        assert_eq!(
            translate("SELECT '?1 INDEXED BY x' FROM t WHERE k = ?12"),
            "SELECT '?1 INDEXED BY x' FROM t WHERE k = $12"
        );
        assert_eq!(translate("SELECT reindexed_by FROM t"), "SELECT reindexed_by FROM t", "only whole words");
    }

    fn numeric(ndigits: u16, weight: i16, sign: u16, scale: u16, digits: &[u16]) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [ndigits, weight as u16, sign, scale].iter().chain(digits) {
            v.extend_from_slice(&w.to_be_bytes());
        }
        v
    }

    #[test]
    fn numerics_read_as_integers_decimal_text_or_reals() {
        assert_eq!(numeric_value(&numeric(0, 0, 0, 0, &[])).unwrap(), Value::Integer(0));
        // 12_3456_7890 = digits [12, 3456, 7890], weight 2.
        assert_eq!(numeric_value(&numeric(3, 2, 0, 0, &[12, 3456, 7890])).unwrap(), Value::Integer(1_234_567_890));
        assert_eq!(numeric_value(&numeric(1, 0, 0x4000, 0, &[5])).unwrap(), Value::Integer(-5));
        // Trailing zero digits are left out: 10^12 is [1], weight 3.
        assert_eq!(numeric_value(&numeric(1, 3, 0, 0, &[1])).unwrap(), Value::Integer(1_000_000_000_000));
        // 2^64 reads as decimal text.
        let mut raw = BytesMut::new();
        let big = U256::from(1u8) << 64;
        crate::value::numeric_binary(big, &mut raw);
        assert_eq!(numeric_value(&raw).unwrap(), Value::Text(big.to_string()));
        assert_eq!(numeric_value(&numeric(2, 0, 0, 1, &[2, 5000])).unwrap(), Value::Real(2.5));
        assert!(numeric_value(&numeric(0, 0, 0xC000, 0, &[])).is_err(), "NaN is no store value");
        assert!(numeric_value(&numeric(3, 0, 0, 0, &[1])).is_err(), "cut short");
    }
}
