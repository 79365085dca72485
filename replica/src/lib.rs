//! # lcw-replica: a PostgreSQL copy of the store for many readers
//!
//! The SQLite store stays the source of truth; the replica is a copy of the tables readers use
//! (raw layer, projections, ledger, rollups; [`tables::TABLES`]) with the analyst views, in a
//! PostgreSQL database that any number of dashboards and analysts can query at once.
//!
//! - [`Replica::connect`] opens the database ([`ReplicaUrl`]: its password never reaches a
//!   message), applies the replica's migrations (`replica/migrations`, refinery) and checks that
//!   the replica belongs to the store's network (chain id and contracts, recorded in its `meta`
//!   on first connect): a replica of another network is refused.
//! - [`Replica::copy_from`] copies one read snapshot of the store into the replica with binary
//!   COPY, in one PostgreSQL transaction that empties the tables first and moves
//!   `replica_cursor` to the snapshot's cursor; readers see the old copy or the new one.
//! - [`Replica::follow_once`] brings the replica to a newer snapshot through the store's change
//!   log: the projection rows its entries name, the raw and ledger rows above the lowest block
//!   they touch, in one transaction with `replica_cursor`; or copies the store anew when the
//!   entries it needs were pruned.
//! - [`Follower`] ([`run`]) is the loop `lcw replicate`, `lcw index --replica` and `lcw run
//!   --replica` share: copy when needed, then `follow_once` at each commit of the store, through
//!   PostgreSQL outages (retried with backoff), until stopped; it keeps a [`ReplicaStatus`]
//!   (block, lag in blocks and seconds, last error) that the metrics endpoint and the API read.
//! - [`verify()`] compares the store with the replica table by table: row counts and a SHA-256
//!   digest of every row in key order, encoded the same way from both sides ([`value`]), and the
//!   cursors.
//!
//! Data flow: SQLite snapshot (`lcw_schema::store::export`) → [`value::Value`] per column, by the
//! column's [`tables::Kind`] → binary COPY → PostgreSQL; and back for the digests.
//!
//! The client is the synchronous `postgres` crate, which runs its own small runtime: async
//! callers call into this crate from a blocking thread (`spawn_blocking`).

pub mod copy;
pub mod follow;
pub mod reader;
pub mod run;
pub mod status;
pub mod tables;
pub mod url;
pub mod value;
pub mod verify;

use alloy::primitives::Address;
use lcw_schema::store::{Identity, StoreError};

pub use copy::CopyReport;
pub use follow::{Applied, Recopy};
pub use run::{FollowConfig, Follower, Signal, Step};
pub use status::{ReplicaState, ReplicaStatus};
pub use url::ReplicaUrl;
pub use verify::{VerifyReport, verify};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Why a replica operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The URL is not one the replica accepts.
    #[error("replica URL {url}: {reason}")]
    Url {
        /// The URL, password redacted.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The database could not be reached or refused the login.
    #[error("cannot connect to the replica {url}: {source}; check that PostgreSQL runs there and the user may log in")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// The client's error.
        #[source]
        source: postgres::Error,
    },
    /// The replica's migrations failed.
    #[error("migrating the replica {url}: {source}")]
    Migration {
        /// The URL, password redacted.
        url: String,
        /// refinery's error.
        #[source]
        source: refinery::Error,
    },
    /// The replica was made from a store of another network.
    #[error(
        "the replica {url} holds {replica}, not this store's {store} ({differs}); a replica holds one network: \
         give --to another database for this store, or empty this one (DROP SCHEMA public CASCADE; CREATE SCHEMA \
         public) and replicate again"
    )]
    OtherNetwork {
        /// The URL, password redacted.
        url: String,
        /// The network the replica records.
        replica: String,
        /// The store's network.
        store: String,
        /// Which of chain id and contracts differ.
        differs: String,
    },
    /// The store the caller passed belongs to another network than the one connected with.
    #[error(
        "the store belongs to {store}, but the replica was opened for {replica}; connect with this store's identity"
    )]
    StoreMismatch {
        /// The store's network.
        store: String,
        /// The network the replica was opened for.
        replica: String,
    },
    /// The database holds no replica of a store (for a reader, which never creates one).
    #[error(
        "{url} holds no lcw replica; make one with `lcw replicate --to URL` (or `lcw index --replica URL`) and \
         serve it once it has copied the store"
    )]
    NotReplica {
        /// The database, password redacted.
        url: String,
    },
    /// The replica was migrated by another version of lcw than this reader's.
    #[error(
        "the replica {url} is at schema version {found}, this lcw reads version {expected}: run the same lcw \
         version for `lcw replicate` and `lcw serve` (the replicating one migrates the replica on connect)"
    )]
    ReaderVersion {
        /// The database, password redacted.
        url: String,
        /// The replica's newest migration.
        found: i32,
        /// This lcw's newest.
        expected: i32,
    },
    /// PostgreSQL refused a statement.
    #[error("replica {what}: {source}")]
    Postgres {
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: postgres::Error,
    },
    /// Reading the store failed.
    #[error("reading the store: {0}")]
    Store(#[from] StoreError),
    /// A store value does not fit its column's kind (a value the replica cannot represent).
    #[error(
        "{table} row {key}: column {column} holds {found}, expected {expected}; the store was edited or written by a newer lcw"
    )]
    Value {
        /// The table.
        table: &'static str,
        /// The row's primary key.
        key: String,
        /// The column.
        column: &'static str,
        /// What it holds.
        found: String,
        /// What its kind allows.
        expected: &'static str,
    },
    /// The change log describes a keyed table otherwise than the replica does: this build of
    /// lcw is inconsistent (its tests hold both descriptions to the store's schema).
    #[error(
        "table {table}: {what} in the store's change log but not in the replica's description; this lcw was built \
         from mismatched sources: rebuild it, or report it"
    )]
    Layout {
        /// The table.
        table: &'static str,
        /// What is missing.
        what: String,
    },
    /// A value read back from the replica is not one the replica writes.
    #[error("replica table {table}: column {column} holds {found}, which lcw never writes; the replica was edited")]
    Foreign {
        /// The table.
        table: &'static str,
        /// The column.
        column: &'static str,
        /// What it holds.
        found: String,
    },
}

/// Result alias for replica operations.
pub type ReplicaResult<T> = Result<T, ReplicaError>;

pub(crate) fn pg(what: impl Into<String>) -> impl FnOnce(postgres::Error) -> ReplicaError {
    let what = what.into();
    move |source| ReplicaError::Postgres { what, source }
}

/// An open replica: a connection with the migrations applied, for one network.
pub struct Replica {
    client: postgres::Client,
    url: ReplicaUrl,
    identity: Identity,
    /// Change-log entries one catch-up applies at most.
    max_entries: usize,
    /// Logs a catch-up must bring, at least, to be made as a whole copy ([`Recopy::Behind`]).
    bulk_min_logs: u64,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica").field("url", &self.url).field("chain_id", &self.identity.chain_id).finish()
    }
}

/// The `meta` keys that say which network a store or replica belongs to.
const IDENTITY_KEYS: [&str; 4] = ["chain_id", "worker_registry", "job_registry", "ai_config"];

impl Replica {
    /// Connects to `url` (no TLS: a replica is reached over a trusted network or a local
    /// socket), applies the migrations, and checks that the replica belongs to `store`'s network;
    /// a fresh replica records it.
    pub fn connect(url: &ReplicaUrl, store: &Identity) -> ReplicaResult<Replica> {
        let mut config = url.config().clone();
        // A replica that stops answering must not hold a follower (and the store snapshot it
        // reads) forever: connecting gives up after 10 s unless the URL says otherwise, and
        // keepalives find a connection whose server went away.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        config.keepalives(true).keepalives_idle(std::time::Duration::from_secs(30));
        let mut client =
            config.connect(postgres::NoTls).map_err(|source| ReplicaError::Connect { url: url.to_string(), source })?;
        // The follower's staging tables are dropped `IF EXISTS`, and each drop of one that is
        // not there would come back as a NOTICE, which the client logs at INFO.
        client
            .batch_execute("SET client_min_messages = warning")
            .map_err(|source| ReplicaError::Connect { url: url.to_string(), source })?;
        embedded::migrations::runner()
            .run(&mut client)
            .map_err(|source| ReplicaError::Migration { url: url.to_string(), source })?;
        let mut replica = Replica {
            client,
            url: url.clone(),
            identity: *store,
            max_entries: follow::MAX_ENTRIES,
            bulk_min_logs: follow::BULK_MIN_LOGS,
        };
        replica.check_identity()?;
        Ok(replica)
    }

    /// The URL, password redacted when shown.
    pub fn url(&self) -> &ReplicaUrl {
        &self.url
    }

    /// The network this replica holds.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Sets how many change-log entries one catch-up applies at most (at least 1; default
    /// 10,000): fewer keep each transaction smaller on a replica far behind.
    pub fn set_max_entries(&mut self, max: usize) {
        self.max_entries = max.max(1);
    }

    /// Sets how many logs, at least, a catch-up must bring (and more than the replica holds) to
    /// be made as a whole copy instead (default 100,000).
    pub fn set_bulk_min_logs(&mut self, logs: u64) {
        self.bulk_min_logs = logs;
    }

    /// The connection, for readers and tests.
    pub fn client(&mut self) -> &mut postgres::Client {
        &mut self.client
    }

    /// The store's cursor the replica stands at (block number and hash) and the change-log
    /// sequence number it has applied, or None before the first copy.
    pub fn cursor(&mut self) -> ReplicaResult<Option<ReplicaCursor>> {
        read_cursor(&mut self.client)
    }

    /// PostgreSQL's count of the rows in `table`, without reading them: the larger of the
    /// planner's estimate (as of the last ANALYZE) and the live rows the statistics collector
    /// has counted since; 0 when it knows neither.
    pub(crate) fn estimated_rows(&mut self, table: &str) -> ReplicaResult<u64> {
        let row = self
            .client
            .query_one(
                "SELECT GREATEST(c.reltuples::float8, COALESCE(s.n_live_tup, 0)::float8, 0) FROM pg_class c \
                 LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.oid = to_regclass($1)",
                &[&table],
            )
            .map_err(pg(format!("estimating the rows of {table}")))?;
        Ok(row.get::<_, f64>(0) as u64)
    }

    fn check_identity(&mut self) -> ReplicaResult<()> {
        let rows = self
            .client
            .query("SELECT key, value FROM meta WHERE key = ANY($1)", &[&IDENTITY_KEYS.as_slice()])
            .map_err(pg("reading meta"))?;
        let recorded = |key: &str| rows.iter().find(|r| r.get::<_, &str>(0) == key).map(|r| r.get::<_, String>(1));
        let Some(chain_id) = recorded("chain_id") else {
            return self.record_identity();
        };
        let mine = self.identity;
        let mut differs = Vec::new();
        if chain_id.parse::<u64>().ok() != Some(mine.chain_id) {
            differs.push(format!("chain id {chain_id} here, {} in the store", mine.chain_id));
        }
        for (key, name, address) in [
            ("job_registry", "JobRegistry", mine.contracts.job_registry),
            ("worker_registry", "WorkerRegistry", mine.contracts.worker_registry),
            ("ai_config", "AIConfig", mine.contracts.ai_config),
        ] {
            let value = recorded(key).unwrap_or_default();
            if value.parse::<Address>().ok() != Some(address) {
                differs.push(format!("{name} {value} here, {address} in the store"));
            }
        }
        if differs.is_empty() {
            return Ok(());
        }
        let value = |key: &str| recorded(key).unwrap_or_else(|| "(none)".into());
        Err(ReplicaError::OtherNetwork {
            url: self.url.to_string(),
            replica: format!(
                "chain {chain_id} (JobRegistry {}, WorkerRegistry {}, AIConfig {})",
                value("job_registry"),
                value("worker_registry"),
                value("ai_config")
            ),
            store: mine.describe(),
            differs: differs.join("; "),
        })
    }

    fn record_identity(&mut self) -> ReplicaResult<()> {
        let id = self.identity;
        let mut tx = self.client.transaction().map_err(pg("recording the network"))?;
        for (key, value) in [
            ("chain_id", id.chain_id.to_string()),
            ("worker_registry", id.contracts.worker_registry.to_string()),
            ("job_registry", id.contracts.job_registry.to_string()),
            ("ai_config", id.contracts.ai_config.to_string()),
        ] {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&key, &value],
            )
            .map_err(pg("recording the network"))?;
        }
        tx.commit().map_err(pg("recording the network"))
    }
}

/// Where a replica stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaCursor {
    /// The store's cursor block.
    pub block_number: i64,
    /// Its hash.
    pub block_hash: Vec<u8>,
    /// The store's change-log sequence number applied (for a copy, the newest entry of its
    /// snapshot).
    pub seq: i64,
}

/// `replica_cursor`, read through a client or a transaction. A column of another type than the
/// migration made is an error naming it, not a panic.
pub(crate) fn read_cursor(client: &mut impl postgres::GenericClient) -> ReplicaResult<Option<ReplicaCursor>> {
    let Some(row) = client
        .query_opt("SELECT block_number, block_hash, seq FROM replica_cursor WHERE id = 1", &[])
        .map_err(pg("reading replica_cursor"))?
    else {
        return Ok(None);
    };
    let foreign = |column: &'static str| {
        move |e: postgres::Error| ReplicaError::Foreign { table: "replica_cursor", column, found: e.to_string() }
    };
    Ok(Some(ReplicaCursor {
        block_number: row.try_get(0).map_err(foreign("block_number"))?,
        block_hash: row.try_get(1).map_err(foreign("block_hash"))?,
        seq: row.try_get(2).map_err(foreign("seq"))?,
    }))
}

#[cfg(test)]
pub(crate) mod tests;
