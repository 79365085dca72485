//! The SQLite store: the source of truth of lcw.
//!
//! One file, WAL, `synchronous=NORMAL`, writes in `BEGIN IMMEDIATE` transactions by one writer
//! (the indexer); any number of readers. Migrations (refinery, forward-only) live in
//! `schema/migrations`. The store records the network identity (chain id and contract addresses)
//! when it is created and refuses to open for another network.
//!
//! - [`raw`]: the raw layer: logs verbatim, blocks, cursor, covered ranges, transaction values.
//! - [`rows`]: projection rows (workers, sessions, jobs, models, rollups, ...) with typed get/put.
//! - [`ledger`]: append-only projections (config history, withdrawals, bounties, slashes).
//! - [`projections`]: whole-projection comparison and replacement (replay).
//! - [`undo`]: before-images of projection rows changed by blocks that are not final yet.
//! - [`changes`]: the change log: which projection rows each commit changed, for a copy of the
//!   store elsewhere to follow.
//! - [`sortition`]: session requests, capabilities and the sortition parameters, for the worker
//!   and the API.
//! - [`states`]: job states, session statuses and amounts read back from their columns strictly
//!   (an unknown value is [`StoreError::Corrupt`] naming the row).
//! - [`operator`] and [`claims`]: state the operator verbs and the worker keep for themselves (the
//!   drained flag; the worker's sortition claims), beside the outbox; not projections.
//! - [`export`]: whole tables in key order from one read snapshot, for the PostgreSQL replica.
//!
//! All SQL of lcw lives in this module tree.

pub mod changes;
pub mod claims;
pub mod col;
pub mod export;
mod identity;
pub mod ledger;
pub mod obligations;
pub mod operator;
pub mod outbox;
pub mod projections;
pub mod raw;
pub mod reads;
pub mod refusals;
pub mod rows;
pub mod sortition;
pub mod sql;
pub mod states;
pub mod undo;

use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::primitives::Address;
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use self::sql::{Db, Query};
use crate::profile::Contracts;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The PostgreSQL replica a read ran on reported an error (its message, which never holds
    /// the connection's password).
    #[error("postgresql: {0}")]
    Postgres(String),
    /// The file could not be opened.
    #[error("cannot open store {path}: {source}")]
    Open {
        /// The store file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// Applying migrations failed.
    #[error("migrating store {path}: {message}")]
    Migration {
        /// The store file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The store was created for another network.
    #[error(
        "store {path} belongs to {stored}, not to {requested}; each network needs its own store: use another \
         --data-dir or --db for this network"
    )]
    IdentityMismatch {
        /// The store file.
        path: PathBuf,
        /// What the store records.
        stored: String,
        /// What the caller asked for.
        requested: String,
    },
    /// The OS refused a thread (resource exhaustion).
    #[error("cannot start a thread: {0}")]
    Thread(String),
    /// The store has not been created yet (read-only open of a missing or empty file).
    #[error("no lcw store at {0}; run `lcw index` first")]
    Missing(PathBuf),
    /// A governance parameter the store has not seen (indexing started after it was set).
    #[error(
        "the store has no value for the parameter {0}; index from an earlier start block or read it from the chain"
    )]
    MissingParam(String),
    /// A stored value could not be read back (the file was edited or is from a newer lcw).
    #[error(
        "store value {what} is invalid: {value:?}; the store was edited or written by a newer lcw: read it with \
         that lcw, or index into a new --db"
    )]
    Corrupt {
        /// Which value.
        what: String,
        /// What was found.
        value: String,
    },
}

/// Result alias for store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// The network a store belongs to (checked by every process that uses the store, see
/// [`Store::open_as`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// Chain id.
    pub chain_id: u64,
    /// The watched contracts.
    pub contracts: Contracts,
    /// First block indexed.
    pub start_block: u64,
}

impl Identity {
    /// The network in words: chain id and the three contracts, as messages name it.
    pub fn describe(&self) -> String {
        format!(
            "chain {} (JobRegistry {}, WorkerRegistry {}, AIConfig {})",
            self.chain_id, self.contracts.job_registry, self.contracts.worker_registry, self.contracts.ai_config
        )
    }
}

/// An open store.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// How long a connection to the store waits for a lock another holds before it gives up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

fn configure(conn: &Connection, readonly: bool) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    if !readonly {
        conn.pragma_update(None, "journal_mode", "WAL")?;
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // 16 MiB page cache: the hot projection pages of a backfill batch stay resident.
    conn.pragma_update(None, "cache_size", -16_000)?;
    if !readonly {
        // Checkpoint the WAL every ~64 MiB instead of every 4 MiB: backfill commits tens of MiB
        // per second, and each checkpoint copies pages a second time.
        conn.pragma_update(None, "wal_autocheckpoint", 16_384)?;
    }
    // The query planner stability guarantee: plans never depend on bound values. Without it
    // SQLite marks parameters it compared during planning (against partial-index conditions,
    // small-integer heuristics) and re-prepares the statement whenever a new value is bound:
    // a fifth of the CPU of a `job(id)` request went to re-parsing its timeline query. Every
    // query here is written for the index it should use, and the EXPLAIN tests hold them to it.
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the store at `path` for writing, migrates it, and records or
    /// checks the network identity.
    pub fn open(path: &Path, identity: &Identity) -> StoreResult<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(path).map_err(|source| StoreError::Open { path: path.to_owned(), source })?;
        Self::init(conn, path, identity)
    }

    /// An in-memory store (tests, scratch replays).
    pub fn open_in_memory(identity: &Identity) -> StoreResult<Store> {
        let conn = Connection::open_in_memory()?;
        Self::init(conn, Path::new(":memory:"), identity)
    }

    fn init(mut conn: Connection, path: &Path, identity: &Identity) -> StoreResult<Store> {
        configure(&conn, false).map_err(|source| StoreError::Open { path: path.to_owned(), source })?;
        embedded::migrations::runner()
            .run(&mut conn)
            .map_err(|e| StoreError::Migration { path: path.to_owned(), message: e.to_string() })?;
        let store = Store { conn, path: path.to_owned() };
        match store.identity()? {
            None => store.record_identity(identity)?,
            Some(stored) => identity.check(&stored, path)?,
        }
        Ok(store)
    }

    /// Opens an existing store read-only (queries, reports); never migrates or writes.
    pub fn open_readonly(path: &Path) -> StoreResult<Store> {
        if !path.exists() {
            return Err(StoreError::Missing(path.to_owned()));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(path, flags)
            .map_err(|source| StoreError::Open { path: path.to_owned(), source })?;
        configure(&conn, true).map_err(|source| StoreError::Open { path: path.to_owned(), source })?;
        let store = Store { conn, path: path.to_owned() };
        match store.identity() {
            Ok(Some(_)) => Ok(store),
            // A file SQLite opens but that has no `meta` table (or no identity in it) is not an
            // lcw store yet; an identity that does not read back is corruption, said as such.
            Ok(None) | Err(StoreError::Sqlite(_)) => Err(StoreError::Missing(path.to_owned())),
            Err(e) => Err(e),
        }
    }

    /// Opens an existing store for writing from a component other than the indexer (the
    /// settler's outbox, the worker's progress): migrates it and requires a recorded identity.
    pub fn open_existing(path: &Path) -> StoreResult<Store> {
        if !path.exists() {
            return Err(StoreError::Missing(path.to_owned()));
        }
        let mut conn = Connection::open(path).map_err(|source| StoreError::Open { path: path.to_owned(), source })?;
        configure(&conn, false).map_err(|source| StoreError::Open { path: path.to_owned(), source })?;
        embedded::migrations::runner()
            .run(&mut conn)
            .map_err(|e| StoreError::Migration { path: path.to_owned(), message: e.to_string() })?;
        let store = Store { conn, path: path.to_owned() };
        if store.identity()?.is_none() {
            return Err(StoreError::Missing(path.to_owned()));
        }
        Ok(store)
    }

    /// [`Store::open_existing`], keeping only the connection.
    pub fn connect(path: &Path) -> StoreResult<Connection> {
        Ok(Self::open_existing(path)?.conn)
    }

    /// The file path (`:memory:` for in-memory stores).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection, for reads.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Starts a write transaction (`BEGIN IMMEDIATE`: the writer lock is taken up front).
    pub fn begin(&mut self) -> StoreResult<Transaction<'_>> {
        Ok(self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
    }

    /// The recorded identity, or None for a store that has none yet.
    pub fn identity(&self) -> StoreResult<Option<Identity>> {
        let Some(chain_id) = chain_id(&self.conn)? else { return Ok(None) };
        // The identity is recorded whole: a key missing beside `chain_id` reads as "" and fails
        // as corruption naming the key.
        let addr = |key: &str| -> StoreResult<Address> {
            let v = meta_get(&self.conn, key)?.unwrap_or_default();
            v.parse().map_err(|_| StoreError::Corrupt { what: format!("meta.{key}"), value: v })
        };
        let num = |key: &str, v: String| -> StoreResult<u64> {
            v.parse().map_err(|_| StoreError::Corrupt { what: format!("meta.{key}"), value: v })
        };
        Ok(Some(Identity {
            chain_id,
            contracts: Contracts {
                worker_registry: addr("worker_registry")?,
                job_registry: addr("job_registry")?,
                ai_config: addr("ai_config")?,
            },
            start_block: num("start_block", meta_get(&self.conn, "start_block")?.unwrap_or_default())?,
        }))
    }

    fn record_identity(&self, id: &Identity) -> StoreResult<()> {
        let now = unix_now().to_string();
        for (k, v) in [
            ("chain_id", id.chain_id.to_string()),
            ("worker_registry", id.contracts.worker_registry.to_string()),
            ("job_registry", id.contracts.job_registry.to_string()),
            ("ai_config", id.contracts.ai_config.to_string()),
            ("start_block", id.start_block.to_string()),
            ("created_at", now),
        ] {
            meta_set(&self.conn, k, &v)?;
        }
        Ok(())
    }
}

/// The chain id the store belongs to (`None` before the store records its identity).
pub fn chain_id(conn: &dyn Db) -> StoreResult<Option<u64>> {
    meta_get(conn, "chain_id")?
        .map(|v| v.parse().map_err(|_| StoreError::Corrupt { what: "meta.chain_id".into(), value: v }))
        .transpose()
}

/// Reads a `meta` value.
pub fn meta_get(conn: &dyn Db, key: &str) -> StoreResult<Option<String>> {
    conn.one("SELECT value FROM meta WHERE key = ?1", &[&key], |r| Ok(col::get::<String>(r, 0)?))
}

/// Writes a `meta` value.
pub fn meta_set(conn: &Connection, key: &str, value: &str) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute([key, value])?;
    Ok(())
}

/// Seconds since the epoch (wall clock; only for bookkeeping columns, never for chain logic).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

#[cfg(test)]
mod tests;
