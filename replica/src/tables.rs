//! What is replicated: one static description per table of the SQLite store that the replica
//! holds, read by the copy, the digests and the checks against both schemas, so that no table or
//! column is listed twice.

/// How a column is stored on each side. SQLite declares INTEGER, TEXT or BLOB; the kind says
/// what the value means, and so its PostgreSQL type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// SQLite INTEGER (u64 or i64 values: blocks, times, ids, counters): `bigint`.
    Int,
    /// SQLite INTEGER holding 0 or 1: `boolean`.
    Flag,
    /// SQLite TEXT: `text`.
    Text,
    /// SQLite BLOB (addresses, hashes, keys, log data): `bytea`.
    Bytes,
    /// SQLite TEXT holding a U256 in decimal (wei amounts, capability masks, scores):
    /// `numeric(78,0)`, which holds every U256 exactly.
    Wei,
}

impl Kind {
    /// The type SQLite declares for the column.
    pub fn sqlite_type(self) -> &'static str {
        match self {
            Kind::Int | Kind::Flag => "INTEGER",
            Kind::Text | Kind::Wei => "TEXT",
            Kind::Bytes => "BLOB",
        }
    }

    /// The column's PostgreSQL type, as `information_schema.columns.data_type` names it.
    pub fn pg_type(self) -> &'static str {
        match self {
            Kind::Int => "bigint",
            Kind::Flag => "boolean",
            Kind::Text => "text",
            Kind::Bytes => "bytea",
            Kind::Wei => "numeric",
        }
    }
}

/// A column of a replicated table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// Its name, the same on both sides.
    pub name: &'static str,
    /// What it holds.
    pub kind: Kind,
    /// Whether it may be NULL.
    pub nullable: bool,
}

/// A replicated table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    /// Its name, the same on both sides.
    pub name: &'static str,
    /// Every column, in declaration order.
    pub columns: &'static [Column],
    /// The primary key: rows are copied and digested in its order.
    pub key: &'static [&'static str],
    /// The column holding the block a row belongs to, when rows are tied to blocks (what a reorg
    /// removes above a fork).
    pub block: Option<&'static str>,
}

impl Table {
    /// The names of the columns, in order.
    pub fn column_names(&self) -> Vec<&'static str> {
        self.columns.iter().map(|c| c.name).collect()
    }

    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&'static Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// The tables of the store that are not replicated, and why: the outbox and its attempts and
/// jobs (signing keys' transactions), the operator's and worker's own state (drained flag,
/// sortition claims, refused jobs) and the undo log (before-images for reorgs, internal to the
/// writer) are local to the machine that runs lcw and mean nothing to readers; the change log
/// is how the replica follows the store, not data.
pub const NOT_REPLICATED: &[&str] = &[
    "outbox",
    "outbox_attempts",
    "outbox_jobs",
    "operator_state",
    "worker_claims",
    "worker_refusals",
    "undo",
    "changes",
];

const fn col(name: &'static str, kind: Kind) -> Column {
    Column { name, kind, nullable: false }
}

const fn opt(name: &'static str, kind: Kind) -> Column {
    Column { name, kind, nullable: true }
}

use Kind::{Bytes, Flag, Int, Text, Wei};

/// Every replicated table, in the order they are copied: raw layer, projections, ledger, rollups.
pub const TABLES: &[Table] = &[
    Table { name: "meta", columns: &[col("key", Text), col("value", Text)], key: &["key"], block: None },
    Table {
        name: "cursor",
        columns: &[
            col("id", Int),
            col("block_number", Int),
            col("block_hash", Bytes),
            col("finalized_number", Int),
            col("updated_at", Int),
        ],
        key: &["id"],
        block: None,
    },
    Table {
        name: "blocks",
        columns: &[
            col("number", Int),
            col("hash", Bytes),
            opt("parent_hash", Bytes),
            col("timestamp", Int),
            col("log_count", Int),
        ],
        key: &["number"],
        block: Some("number"),
    },
    Table {
        name: "ranges",
        columns: &[col("from_block", Int), col("to_block", Int), col("log_count", Int), col("source", Text)],
        key: &["from_block"],
        // A live range's row is extended in place (its to_block grows), so its rows change below
        // any block: the follower copies the table whole.
        block: None,
    },
    Table {
        name: "logs",
        columns: &[
            col("block_number", Int),
            col("log_index", Int),
            col("block_hash", Bytes),
            col("block_timestamp", Int),
            col("tx_hash", Bytes),
            col("tx_index", Int),
            col("address", Bytes),
            opt("topic0", Bytes),
            opt("topic1", Bytes),
            opt("topic2", Bytes),
            opt("topic3", Bytes),
            col("data", Bytes),
            opt("event", Text),
            opt("decode_error", Text),
            opt("job_id", Int),
        ],
        key: &["block_number", "log_index"],
        block: Some("block_number"),
    },
    Table {
        name: "tx_values",
        columns: &[col("tx_hash", Bytes), col("block_number", Int), col("value_wei", Wei)],
        key: &["tx_hash"],
        block: Some("block_number"),
    },
    Table {
        name: "call_results",
        columns: &[
            col("contract", Bytes),
            col("method", Text),
            col("id", Int),
            col("block_number", Int),
            col("data", Bytes),
        ],
        key: &["contract", "method", "id"],
        block: Some("block_number"),
    },
    Table {
        name: "workers",
        columns: &[
            col("address", Bytes),
            col("registered", Flag),
            opt("encryption_key", Bytes),
            opt("suite", Text),
            col("stake_wei", Wei),
            col("offense_count", Int),
            col("slash_count", Int),
            col("slashed_wei", Wei),
            col("suspended_until", Int),
            col("deactivated", Flag),
            col("active_jobs", Int),
            col("balance_wei", Wei),
            col("earned_wei", Wei),
            col("withdrawn_wei", Wei),
            opt("registered_block", Int),
            opt("registered_at", Int),
            opt("deregistered_block", Int),
            opt("deregistered_at", Int),
            col("updated_block", Int),
            col("capabilities", Wei),
        ],
        key: &["address"],
        block: Some("updated_block"),
    },
    Table {
        name: "worker_models",
        columns: &[col("worker", Bytes), col("model_id", Bytes), col("added_block", Int)],
        key: &["worker", "model_id"],
        block: Some("added_block"),
    },
    Table {
        name: "models",
        columns: &[
            col("model_id", Bytes),
            col("whitelisted", Flag),
            col("registered", Flag),
            col("enabled", Flag),
            opt("fee_wei", Wei),
            opt("max_output_tokens", Int),
            col("updated_block", Int),
        ],
        key: &["model_id"],
        block: Some("updated_block"),
    },
    Table {
        name: "sessions",
        columns: &[
            col("session_id", Int),
            opt("user", Bytes),
            opt("model_id", Bytes),
            opt("worker", Bytes),
            col("status", Text),
            opt("enc_worker_key", Bytes),
            opt("enc_disputer_key", Bytes),
            col("job_count", Int),
            opt("created_block", Int),
            opt("created_at", Int),
            opt("closed_block", Int),
            opt("closed_at", Int),
            opt("key_updated_block", Int),
            col("updated_block", Int),
        ],
        key: &["session_id"],
        block: Some("updated_block"),
    },
    Table {
        name: "jobs",
        columns: &[
            col("job_id", Int),
            col("session_id", Int),
            col("worker", Bytes),
            opt("consumer", Bytes),
            opt("model_id", Bytes),
            col("state", Text),
            opt("fee_wei", Wei),
            opt("deadline", Int),
            col("submitted_block", Int),
            col("submitted_at", Int),
            col("submit_tx", Bytes),
            opt("acknowledged_block", Int),
            opt("acknowledged_at", Int),
            opt("completed_block", Int),
            opt("completed_at", Int),
            opt("response_blob_hash", Bytes),
            opt("response_ciphertext_hash", Bytes),
            opt("disputed_block", Int),
            opt("disputed_at", Int),
            opt("disputer", Bytes),
            opt("resolved_block", Int),
            opt("resolved_at", Int),
            opt("guilty", Flag),
            opt("similarity_score", Wei),
            opt("defaulted_block", Int),
            opt("defaulted_at", Int),
            opt("timed_out_block", Int),
            opt("timed_out_at", Int),
            col("settled_no_fault", Flag),
            opt("slash_wei", Wei),
            opt("refund_wei", Wei),
            opt("released_block", Int),
            opt("released_at", Int),
            opt("release_tx", Bytes),
            opt("worker_share_wei", Wei),
            opt("protocol_share_wei", Wei),
            opt("fee_pool_share_wei", Wei),
            opt("keeper", Bytes),
            opt("keeper_bounty_wei", Wei),
            opt("bounty_kind", Int),
            col("updated_block", Int),
        ],
        key: &["job_id"],
        block: Some("updated_block"),
    },
    Table {
        name: "session_requests",
        columns: &[
            col("manager", Bytes),
            col("req_id", Int),
            col("user", Bytes),
            col("model_id", Bytes),
            col("request_block", Int),
            col("request_block_hash", Bytes),
            col("requested_at", Int),
            col("expiry", Int),
            col("required_caps", Wei),
            col("status", Text),
            opt("worker", Bytes),
            opt("claimed_block", Int),
            opt("claimed_at", Int),
            opt("claim_tx", Bytes),
            opt("session_id", Int),
            opt("ready_block", Int),
            opt("ready_at", Int),
            col("updated_block", Int),
        ],
        key: &["manager", "req_id"],
        block: Some("updated_block"),
    },
    Table {
        name: "capabilities",
        columns: &[col("bit", Int), col("name", Text), col("registered_block", Int)],
        key: &["bit"],
        block: Some("registered_block"),
    },
    Table {
        name: "config_history",
        columns: &[
            col("block_number", Int),
            col("log_index", Int),
            col("param", Text),
            col("value", Text),
            col("block_timestamp", Int),
        ],
        key: &["block_number", "log_index", "param"],
        block: Some("block_number"),
    },
    Table {
        name: "withdrawals",
        columns: &[
            col("block_number", Int),
            col("log_index", Int),
            col("worker", Bytes),
            col("amount_wei", Wei),
            col("tx_hash", Bytes),
            col("block_timestamp", Int),
        ],
        key: &["block_number", "log_index"],
        block: Some("block_number"),
    },
    Table {
        name: "bounties",
        columns: &[
            col("block_number", Int),
            col("log_index", Int),
            col("job_id", Int),
            col("keeper", Bytes),
            opt("worker", Bytes),
            col("amount_wei", Wei),
            col("kind", Int),
            col("tx_hash", Bytes),
            col("block_timestamp", Int),
        ],
        key: &["block_number", "log_index"],
        block: Some("block_number"),
    },
    Table {
        name: "slashes",
        columns: &[
            col("block_number", Int),
            col("log_index", Int),
            col("worker", Bytes),
            col("amount_wei", Wei),
            col("new_stake_wei", Wei),
            opt("job_id", Int),
            col("reason", Text),
            col("tx_hash", Bytes),
            col("block_timestamp", Int),
        ],
        key: &["block_number", "log_index"],
        block: Some("block_number"),
    },
    Table {
        name: "rollups_hourly",
        columns: &[
            col("hour", Int),
            col("worker", Bytes),
            col("model_id", Bytes),
            col("submitted", Int),
            col("acknowledged", Int),
            col("completed", Int),
            col("released", Int),
            col("timed_out", Int),
            col("settled", Int),
            col("disputed", Int),
            col("guilty", Int),
            col("not_guilty", Int),
            col("defaulted", Int),
            col("fees_wei", Wei),
            col("worker_share_wei", Wei),
            col("protocol_share_wei", Wei),
            col("fee_pool_share_wei", Wei),
            col("keeper_bounty_wei", Wei),
            col("slashed_wei", Wei),
            col("refunded_wei", Wei),
            col("ack_latency_sum", Int),
            col("ack_latency_count", Int),
            col("ack_latency_max", Int),
            col("completion_latency_sum", Int),
            col("completion_latency_count", Int),
            col("completion_latency_max", Int),
            col("ack_latency_hist", Text),
            col("completion_latency_hist", Text),
        ],
        key: &["hour", "worker", "model_id"],
        block: None,
    },
    Table { name: "event_counts", columns: &[col("event", Text), col("count", Int)], key: &["event"], block: None },
];

/// The analyst views the replica defines (its first migration), each answering over the tables.
pub const VIEWS: &[&str] = &[
    "v_jobs",
    "v_workers",
    "v_sessions",
    "v_config_current",
    "v_dispute_window_history",
    "v_rollups_daily",
    "v_undecodable_logs",
    "v_session_requests",
];

/// The replicated table called `name`.
pub fn table(name: &str) -> Option<&'static Table> {
    TABLES.iter().find(|t| t.name == name)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use lcw_schema::store::export;

    use super::*;

    fn store() -> lcw_schema::store::Store {
        lcw_schema::store::Store::open_in_memory(&crate::tests::identity(31337)).unwrap()
    }

    /// A migration of the SQLite store that adds a table or a column fails here until the table
    /// is described (and the replica's migrations follow).
    #[test]
    fn every_store_table_is_replicated_or_listed_as_local() {
        let store = store();
        let tables: BTreeSet<String> = export::tables(store.conn()).unwrap().into_iter().collect();
        for name in &tables {
            assert!(
                table(name).is_some() || NOT_REPLICATED.contains(&name.as_str()),
                "the store table {name} is neither replicated (replica/src/tables.rs) nor listed in NOT_REPLICATED"
            );
        }
        for t in TABLES {
            assert!(tables.contains(t.name), "{} is described but the store has no such table", t.name);
        }
    }

    #[test]
    fn descriptions_match_the_store_column_by_column() {
        let store = store();
        for t in TABLES {
            let cols = export::columns(store.conn(), t.name).unwrap();
            let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
            assert_eq!(names, t.column_names(), "columns of {}", t.name);
            for (c, d) in cols.iter().zip(t.columns) {
                assert_eq!(c.declared, d.kind.sqlite_type(), "{}.{}", t.name, c.name);
                // SQLite reports a rowid table's INTEGER PRIMARY KEY as nullable; it never is.
                let not_null = c.not_null || c.key_position > 0;
                assert_eq!(not_null, !d.nullable, "nullability of {}.{}", t.name, c.name);
            }
            let mut key: Vec<(u32, &str)> =
                cols.iter().filter(|c| c.key_position > 0).map(|c| (c.key_position, c.name.as_str())).collect();
            key.sort();
            let key: Vec<&str> = key.into_iter().map(|(_, n)| n).collect();
            assert_eq!(key, t.key, "primary key of {}", t.name);
            if let Some(b) = t.block {
                assert_eq!(t.column(b).map(|c| c.kind), Some(Kind::Int), "block column of {}", t.name);
            }
        }
    }
}
