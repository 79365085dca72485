//! Projection rows: one struct per mutable projection table, with typed reads and writes.
//!
//! Each struct lists its columns once; the SQL is generated from that list. Rows serialize to
//! JSON for the undo journal (before-images of rows changed by non-final blocks).

use alloy::primitives::{Address, B256, Bytes, U256};
use rusqlite::Connection;

use super::StoreResult;
use super::col::{self, Col};
use super::sql::{Db, Query};

fn where_clause(keys: &[&str]) -> String {
    keys.iter().enumerate().map(|(i, k)| format!("{k} = ?{}", i + 1)).collect::<Vec<_>>().join(" AND ")
}

/// A projection row stored in one table.
pub trait ProjectionRow: Sized + Clone + PartialEq + serde::Serialize + serde::de::DeserializeOwned {
    /// Table name.
    const TABLE: &'static str;
    /// Inserts or replaces the row.
    fn put(&self, conn: &Connection) -> StoreResult<()>;
    /// Prepares the statements of a run of [`write`](Self::write)s and
    /// [`overwrite`](Self::overwrite)s to this table.
    fn writer(conn: &Connection) -> StoreResult<TableWriter<'_, Self>>;
    /// Writes the row given its stored image: INSERT when there is none, otherwise an UPDATE of
    /// only the columns that changed (nothing when none did). Much cheaper than `put` for wide
    /// rows that change a few columns at a time.
    fn write(&self, w: &mut TableWriter<'_, Self>, stored: Option<&Self>) -> StoreResult<()>;
    /// Overwrites the stored row with this one without knowing its previous image: every
    /// column but the key and the columns that never change once the row exists (`fixed` in
    /// the table's definition, which keeps the indexes on them untouched).
    fn overwrite(&self, w: &mut TableWriter<'_, Self>) -> StoreResult<()>;
    /// Deletes the row with this row's key.
    fn delete(&self, conn: &Connection) -> StoreResult<()>;
    /// Every row of the table in key order (comparisons, replay checks).
    fn all(conn: &dyn Db) -> StoreResult<Vec<Self>>;
    /// The table's columns, in the order rows are read and written.
    fn columns() -> &'static [&'static str];
    /// The primary key columns.
    fn key_columns() -> &'static [&'static str];
    /// Hands the primary key values to `f`, in [`key_columns`](Self::key_columns) order, as
    /// they are stored (the change log names rows by them).
    fn each_key_value(&self, f: &mut dyn FnMut(rusqlite::types::ValueRef<'_>));
}

/// The statements a run of writes to one table shares, prepared once. Looking a statement up in
/// the connection's cache hashes its whole SQL text, which for a wide row costs about as much
/// as binding the row; a flush writes thousands of rows per table.
pub struct TableWriter<'c, R> {
    conn: &'c Connection,
    insert: rusqlite::CachedStatement<'c>,
    overwrite: rusqlite::CachedStatement<'c>,
    rows: std::marker::PhantomData<fn(&R)>,
}

impl<R: ProjectionRow> std::fmt::Debug for TableWriter<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableWriter").field("table", &R::TABLE).finish()
    }
}

impl<'c, R: ProjectionRow> TableWriter<'c, R> {
    /// The connection written to.
    pub fn conn(&self) -> &'c Connection {
        self.conn
    }
}

macro_rules! projection_rows {
    ($(
        $(#[$meta:meta])*
        $name:ident in $table:literal, key($($key:ident),+) $(fixed($($fixed:ident),+))? {
            $($(#[$fmeta:meta])* $field:ident: $ty:ty,)+
        }
    )+) => {$(
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)+
        }

        impl $name {
            pub(crate) const COLUMNS: &'static [&'static str] = &[$(stringify!($field)),+];
            const KEYS: &'static [&'static str] = &[$(stringify!($key)),+];
            const FIXED: &'static [&'static str] = &[$($(stringify!($fixed)),+)?];

            /// Per column, in `COLUMNS` order: whether `overwrite` sets it.
            fn overwritten() -> &'static [bool] {
                static MASK: std::sync::OnceLock<Vec<bool>> = std::sync::OnceLock::new();
                MASK.get_or_init(|| {
                    Self::COLUMNS.iter().map(|c| !Self::KEYS.contains(c) && !Self::FIXED.contains(c)).collect()
                })
            }

            fn overwrite_sql() -> &'static str {
                static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
                SQL.get_or_init(|| {
                    let set: Vec<String> = Self::COLUMNS
                        .iter()
                        .zip(Self::overwritten())
                        .filter(|(_, set)| **set)
                        .map(|(c, _)| format!("{c} = ?"))
                        .collect();
                    let keys = Self::KEYS.iter().map(|k| format!("{k} = ?")).collect::<Vec<_>>().join(" AND ");
                    format!("UPDATE {} SET {} WHERE {keys}", $table, set.join(", "))
                })
            }

            fn select_sql() -> &'static str {
                static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
                SQL.get_or_init(|| {
                    format!("SELECT {} FROM {} WHERE {}", Self::COLUMNS.join(", "), $table, where_clause(Self::KEYS))
                })
            }

            fn all_sql() -> &'static str {
                static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
                SQL.get_or_init(|| {
                    format!("SELECT {} FROM {} ORDER BY {}", Self::COLUMNS.join(", "), $table, Self::KEYS.join(", "))
                })
            }

            fn insert_sql() -> &'static str {
                static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
                SQL.get_or_init(|| {
                    let marks: Vec<String> = (1..=Self::COLUMNS.len()).map(|i| format!("?{i}")).collect();
                    format!("INSERT OR REPLACE INTO {} ({}) VALUES ({})", $table, Self::COLUMNS.join(", "), marks.join(", "))
                })
            }

            fn insert_new_sql() -> &'static str {
                static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
                SQL.get_or_init(|| {
                    let marks: Vec<String> = (1..=Self::COLUMNS.len()).map(|i| format!("?{i}")).collect();
                    format!("INSERT INTO {} ({}) VALUES ({})", $table, Self::COLUMNS.join(", "), marks.join(", "))
                })
            }

            fn delete_sql() -> &'static str {
                static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
                SQL.get_or_init(|| format!("DELETE FROM {} WHERE {}", $table, where_clause(Self::KEYS)))
            }

            pub(crate) fn from_row<R: super::sql::Row + ?Sized>(row: &R) -> rusqlite::Result<Self> {
                let mut i = 0usize;
                let mut next = || { i += 1; i - 1 };
                Ok(Self { $($field: col::get(row, next())?,)+ })
            }

            /// Loads the row with the given key values (in key order).
            fn load(conn: &dyn Db, key: &[&dyn rusqlite::ToSql]) -> StoreResult<Option<Self>> {
                conn.one(Self::select_sql(), key, |r| Ok(Self::from_row(r)?))
            }
        }

        impl ProjectionRow for $name {
            const TABLE: &'static str = $table;

            fn put(&self, conn: &Connection) -> StoreResult<()> {
                let values = [$(Col::out(&self.$field)),+];
                conn.prepare_cached(Self::insert_sql())?.execute(rusqlite::params_from_iter(values.iter()))?;
                Ok(())
            }

            fn writer(conn: &Connection) -> StoreResult<TableWriter<'_, Self>> {
                Ok(TableWriter {
                    conn,
                    insert: conn.prepare_cached(Self::insert_new_sql())?,
                    overwrite: conn.prepare_cached(Self::overwrite_sql())?,
                    rows: std::marker::PhantomData,
                })
            }

            fn write(&self, w: &mut TableWriter<'_, Self>, stored: Option<&Self>) -> StoreResult<()> {
                let Some(old) = stored else {
                    let values = [$(Col::out(&self.$field)),+];
                    w.insert.execute(rusqlite::params_from_iter(values.iter()))?;
                    return Ok(());
                };
                let mut sql = String::with_capacity(256);
                let mut values: Vec<rusqlite::types::ToSqlOutput<'_>> = Vec::new();
                $(
                    if self.$field != old.$field {
                        sql.push_str(if values.is_empty() { "" } else { ", " });
                        sql.push_str(stringify!($field));
                        sql.push_str(" = ?");
                        values.push(Col::out(&self.$field));
                    }
                )+
                if values.is_empty() {
                    return Ok(());
                }
                let mut full = format!("UPDATE {} SET {sql} WHERE ", $table);
                let keys = [$(Col::out(&self.$key)),+];
                for (i, k) in Self::KEYS.iter().enumerate() {
                    full.push_str(if i == 0 { "" } else { " AND " });
                    full.push_str(k);
                    full.push_str(" = ?");
                }
                values.extend(keys);
                w.conn.prepare_cached(&full)?.execute(rusqlite::params_from_iter(values.iter()))?;
                Ok(())
            }

            fn overwrite(&self, w: &mut TableWriter<'_, Self>) -> StoreResult<()> {
                let mut values: Vec<rusqlite::types::ToSqlOutput<'_>> = Vec::with_capacity(Self::COLUMNS.len());
                let mut set = Self::overwritten().iter();
                $(
                    if set.next().copied().unwrap_or(false) {
                        values.push(Col::out(&self.$field));
                    }
                )+
                values.extend([$(Col::out(&self.$key)),+]);
                w.overwrite.execute(rusqlite::params_from_iter(values.iter()))?;
                Ok(())
            }

            fn delete(&self, conn: &Connection) -> StoreResult<()> {
                let keys = [$(Col::out(&self.$key)),+];
                conn.prepare_cached(Self::delete_sql())?.execute(rusqlite::params_from_iter(keys.iter()))?;
                Ok(())
            }

            fn all(conn: &dyn Db) -> StoreResult<Vec<Self>> {
                Query::all(conn, Self::all_sql(), &[], |r| Ok(Self::from_row(r)?))
            }

            fn columns() -> &'static [&'static str] {
                Self::COLUMNS
            }

            fn key_columns() -> &'static [&'static str] {
                Self::KEYS
            }

            fn each_key_value(&self, f: &mut dyn FnMut(rusqlite::types::ValueRef<'_>)) {
                $( f(col::value_ref(&Col::out(&self.$key))); )+
            }
        }
    )+};
}

projection_rows! {
    /// A worker: registration, stake, slashes, suspension and derived counters.
    WorkerRow in "workers", key(address) {
        address: Address,
        registered: bool,
        encryption_key: Option<Bytes>,
        suite: Option<String>,
        stake_wei: U256,
        offense_count: u64,
        slash_count: u64,
        slashed_wei: U256,
        suspended_until: u64,
        deactivated: bool,
        active_jobs: i64,
        balance_wei: U256,
        earned_wei: U256,
        withdrawn_wei: U256,
        registered_block: Option<u64>,
        registered_at: Option<u64>,
        deregistered_block: Option<u64>,
        deregistered_at: Option<u64>,
        updated_block: u64,
        /// Capability bits (WorkerCapabilitiesSet). Defaults when absent from an undo image
        /// recorded before the column existed.
        #[serde(default)]
        capabilities: U256,
    }

    /// A model a worker supports.
    WorkerModelRow in "worker_models", key(worker, model_id) {
        worker: Address,
        model_id: B256,
        added_block: u64,
    }

    /// A model: WorkerRegistry whitelist and AIConfig registration.
    ModelRow in "models", key(model_id) {
        model_id: B256,
        whitelisted: bool,
        registered: bool,
        enabled: bool,
        fee_wei: Option<U256>,
        max_output_tokens: Option<u64>,
        updated_block: u64,
    }

    /// A session.
    SessionRow in "sessions", key(session_id) {
        session_id: u64,
        user: Option<Address>,
        model_id: Option<B256>,
        worker: Option<Address>,
        status: String,
        enc_worker_key: Option<Bytes>,
        enc_disputer_key: Option<Bytes>,
        job_count: u64,
        created_block: Option<u64>,
        created_at: Option<u64>,
        closed_block: Option<u64>,
        closed_at: Option<u64>,
        key_updated_block: Option<u64>,
        updated_block: u64,
    }

    /// A job and its whole lifecycle.
    JobRow in "jobs", key(job_id) fixed(session_id, worker, consumer, model_id, submitted_block, submitted_at, submit_tx) {
        job_id: u64,
        session_id: u64,
        worker: Address,
        consumer: Option<Address>,
        model_id: Option<B256>,
        state: String,
        fee_wei: Option<U256>,
        deadline: Option<u64>,
        submitted_block: u64,
        submitted_at: u64,
        submit_tx: B256,
        acknowledged_block: Option<u64>,
        acknowledged_at: Option<u64>,
        completed_block: Option<u64>,
        completed_at: Option<u64>,
        response_blob_hash: Option<B256>,
        response_ciphertext_hash: Option<B256>,
        disputed_block: Option<u64>,
        disputed_at: Option<u64>,
        disputer: Option<Address>,
        resolved_block: Option<u64>,
        resolved_at: Option<u64>,
        guilty: Option<bool>,
        similarity_score: Option<U256>,
        defaulted_block: Option<u64>,
        defaulted_at: Option<u64>,
        timed_out_block: Option<u64>,
        timed_out_at: Option<u64>,
        settled_no_fault: bool,
        slash_wei: Option<U256>,
        refund_wei: Option<U256>,
        released_block: Option<u64>,
        released_at: Option<u64>,
        release_tx: Option<B256>,
        worker_share_wei: Option<U256>,
        protocol_share_wei: Option<U256>,
        fee_pool_share_wei: Option<U256>,
        keeper: Option<Address>,
        keeper_bounty_wei: Option<U256>,
        bounty_kind: Option<u64>,
        updated_block: u64,
    }

    /// Hourly analytics for one worker and model.
    RollupRow in "rollups_hourly", key(hour, worker, model_id) {
        hour: u64,
        worker: Address,
        model_id: B256,
        submitted: u64,
        acknowledged: u64,
        completed: u64,
        released: u64,
        timed_out: u64,
        settled: u64,
        disputed: u64,
        guilty: u64,
        not_guilty: u64,
        defaulted: u64,
        fees_wei: U256,
        worker_share_wei: U256,
        protocol_share_wei: U256,
        fee_pool_share_wei: U256,
        keeper_bounty_wei: U256,
        slashed_wei: U256,
        refunded_wei: U256,
        ack_latency_sum: u64,
        ack_latency_count: u64,
        ack_latency_max: u64,
        completion_latency_sum: u64,
        completion_latency_count: u64,
        completion_latency_max: u64,
        ack_latency_hist: String,
        completion_latency_hist: String,
    }

    /// How many logs of one event name the store holds.
    EventCountRow in "event_counts", key(event) {
        event: String,
        count: u64,
    }

    /// A session request of a SessionManager (see `V8__sortition.sql`; typed reads in
    /// [`super::sortition`]). `status` is a [`super::sortition::RequestStatus`] spelling.
    SessionRequestRow in "session_requests",
        key(manager, req_id) fixed(user, model_id, request_block, request_block_hash, requested_at) {
        manager: Address,
        req_id: u64,
        user: Address,
        model_id: B256,
        request_block: u64,
        request_block_hash: B256,
        requested_at: u64,
        expiry: u64,
        required_caps: U256,
        status: String,
        worker: Option<Address>,
        claimed_block: Option<u64>,
        claimed_at: Option<u64>,
        claim_tx: Option<B256>,
        session_id: Option<u64>,
        ready_block: Option<u64>,
        ready_at: Option<u64>,
        updated_block: u64,
    }

    /// A registered capability bit (CapabilityRegistered).
    CapabilityRow in "capabilities", key(bit) {
        bit: u64,
        name: String,
        registered_block: u64,
    }
}

impl WorkerRow {
    /// The worker with `address`.
    pub fn get(conn: &dyn Db, address: &Address) -> StoreResult<Option<Self>> {
        Self::load(conn, &[&address.as_slice()])
    }

    /// A worker never seen before.
    pub fn new(address: Address, block: u64) -> Self {
        WorkerRow {
            address,
            registered: false,
            encryption_key: None,
            suite: None,
            stake_wei: U256::ZERO,
            offense_count: 0,
            slash_count: 0,
            slashed_wei: U256::ZERO,
            suspended_until: 0,
            deactivated: false,
            active_jobs: 0,
            balance_wei: U256::ZERO,
            earned_wei: U256::ZERO,
            withdrawn_wei: U256::ZERO,
            registered_block: None,
            registered_at: None,
            deregistered_block: None,
            deregistered_at: None,
            updated_block: block,
            capabilities: U256::ZERO,
        }
    }
}

impl WorkerModelRow {
    /// The (worker, model) row.
    pub fn get(conn: &dyn Db, worker: &Address, model: &B256) -> StoreResult<Option<Self>> {
        Self::load(conn, &[&worker.as_slice(), &model.as_slice()])
    }

    /// Models a worker supports.
    pub fn of_worker(conn: &dyn Db, worker: &Address) -> StoreResult<Vec<B256>> {
        conn.all("SELECT model_id FROM worker_models WHERE worker = ?1 ORDER BY model_id", &[&worker.as_slice()], |r| {
            Ok(col::get::<B256>(r, 0)?)
        })
    }
}

impl ModelRow {
    /// The model with `id`.
    pub fn get(conn: &dyn Db, id: &B256) -> StoreResult<Option<Self>> {
        Self::load(conn, &[&id.as_slice()])
    }

    /// A model never seen before.
    pub fn new(model_id: B256, block: u64) -> Self {
        ModelRow {
            model_id,
            whitelisted: false,
            registered: false,
            enabled: false,
            fee_wei: None,
            max_output_tokens: None,
            updated_block: block,
        }
    }
}

impl SessionRow {
    /// The session with `id`.
    pub fn get(conn: &dyn Db, id: u64) -> StoreResult<Option<Self>> {
        Self::load(conn, &[&(id as i64)])
    }
}

impl JobRow {
    /// The job with `id`.
    pub fn get(conn: &dyn Db, id: u64) -> StoreResult<Option<Self>> {
        Self::load(conn, &[&(id as i64)])
    }
}

impl RollupRow {
    /// The rollup of `(hour, worker, model)`.
    pub fn get(conn: &dyn Db, hour: u64, worker: &Address, model: &B256) -> StoreResult<Option<Self>> {
        Self::load(conn, &[&(hour as i64), &worker.as_slice(), &model.as_slice()])
    }

    /// An empty rollup.
    pub fn new(hour: u64, worker: Address, model_id: B256) -> Self {
        RollupRow {
            hour,
            worker,
            model_id,
            submitted: 0,
            acknowledged: 0,
            completed: 0,
            released: 0,
            timed_out: 0,
            settled: 0,
            disputed: 0,
            guilty: 0,
            not_guilty: 0,
            defaulted: 0,
            fees_wei: U256::ZERO,
            worker_share_wei: U256::ZERO,
            protocol_share_wei: U256::ZERO,
            fee_pool_share_wei: U256::ZERO,
            keeper_bounty_wei: U256::ZERO,
            slashed_wei: U256::ZERO,
            refunded_wei: U256::ZERO,
            ack_latency_sum: 0,
            ack_latency_count: 0,
            ack_latency_max: 0,
            completion_latency_sum: 0,
            completion_latency_count: 0,
            completion_latency_max: 0,
            ack_latency_hist: String::new(),
            completion_latency_hist: String::new(),
        }
    }
}

impl SessionRequestRow {
    /// The request `req_id` of `manager`.
    pub fn get(conn: &dyn Db, manager: &Address, req_id: u64) -> StoreResult<Option<Self>> {
        Self::load(conn, &[&manager.as_slice(), &(req_id as i64)])
    }
}

impl CapabilityRow {
    /// The capability with `bit`.
    pub fn get(conn: &dyn Db, bit: u64) -> StoreResult<Option<Self>> {
        Self::load(conn, &[&(bit as i64)])
    }
}

impl EventCountRow {
    /// The count of `event`.
    pub fn get(conn: &dyn Db, event: &str) -> StoreResult<Option<Self>> {
        Self::load(conn, &[&event])
    }
}
