//! Prometheus metrics at `GET /metrics` (`lcw index --metrics ADDR`, `lcw run --metrics ADDR`):
//! head, indexed and finalized blocks, blocks behind, events, undecodable logs, reorgs and their
//! depth, RPC requests, retries, range splits and answers refused as wrong (in all and by
//! endpoint); and, from the store, the sortition claims of the workers lcw runs beside it (won,
//! lost, missed by reason, in flight). Other parts of the process add their own families with
//! [`register`] (the PostgreSQL replica's follower: its lag; the settler's and the worker's
//! counters); [`serve_text`] serves any such text alone (`lcw replicate --metrics`), and
//! [`render_registered`] and [`render_store`] what a process that runs no indexer has
//! (`lcw settle --no-index`, `lcw work --no-index`, `lcw serve`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use axum::http::header::CONTENT_TYPE;
use lcw_schema::store::Store;
use lcw_schema::store::raw::Cursor;

use crate::backfill::Progress;
use crate::live::LiveStats;
use crate::rpc::Rpc;

fn render(rpc: &Rpc, live: &LiveStats, progress: &Progress, db: &std::path::Path) -> String {
    let (indexed, events, undecodable) = match Store::open_readonly(db) {
        Ok(store) => {
            use lcw_schema::store::rows::{EventCountRow, ProjectionRow};
            let c = Cursor::get(store.conn()).ok().flatten().map(|c| c.block_number).unwrap_or(0);
            let counts = EventCountRow::all(store.conn()).unwrap_or_default();
            let total: u64 = counts.iter().map(|r| r.count).sum();
            let bad: u64 = counts.iter().filter(|r| r.event == "(undecodable)").map(|r| r.count).sum();
            (c, total, bad)
        }
        Err(_) => (0, 0, 0),
    };
    let head = live.head.load(Ordering::Relaxed);
    let lines = [
        ("lcw_indexer_head_block", "gauge", "Head block of the node", head as f64),
        ("lcw_indexer_indexed_block", "gauge", "Last block committed to the store", indexed as f64),
        (
            "lcw_indexer_finalized_block",
            "gauge",
            "Finalized block of the node",
            live.finalized.load(Ordering::Relaxed) as f64,
        ),
        ("lcw_indexer_blocks_behind", "gauge", "Head minus indexed block", head.saturating_sub(indexed) as f64),
        ("lcw_indexer_events", "gauge", "Logs in the store", events as f64),
        (
            "lcw_indexer_undecodable_events",
            "gauge",
            "Logs kept raw because they could not be decoded",
            undecodable as f64,
        ),
        (
            "lcw_indexer_backfill_events_total",
            "counter",
            "Logs delivered by backfill",
            progress.delivered_logs.load(Ordering::Relaxed) as f64,
        ),
        ("lcw_indexer_live_blocks_total", "counter", "Blocks applied live", live.blocks.load(Ordering::Relaxed) as f64),
        ("lcw_indexer_reorgs_total", "counter", "Reorgs handled", live.reorgs.load(Ordering::Relaxed) as f64),
        (
            "lcw_indexer_reorg_depth_max",
            "gauge",
            "Deepest reorg handled, in blocks",
            live.max_reorg_depth.load(Ordering::Relaxed) as f64,
        ),
        (
            "lcw_indexer_rpc_requests_total",
            "counter",
            "RPC requests sent, retries included",
            rpc.stats.requests.load(Ordering::Relaxed) as f64,
        ),
        (
            "lcw_indexer_rpc_retries_total",
            "counter",
            "RPC requests retried",
            rpc.stats.retries.load(Ordering::Relaxed) as f64,
        ),
        (
            "lcw_indexer_range_splits_total",
            "counter",
            "eth_getLogs ranges split after a refusal",
            rpc.stats.range_splits.load(Ordering::Relaxed) as f64,
        ),
        (
            "lcw_indexer_rpc_bad_answers_total",
            "counter",
            "RPC answers refused as wrong (never stored) and asked of the next endpoint",
            rpc.stats.bad_answers.load(Ordering::Relaxed) as f64,
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in lines {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
    }
    bad_answers(&mut out, &rpc.bad_answers());
    if let Ok(store) = Store::open_readonly(db) {
        claims(&mut out, store.conn());
        refusals(&mut out, store.conn());
    }
    out.push_str(&render_registered());
    out
}

/// The families [`register`]ed in this process.
pub fn render_registered() -> String {
    let extras: Vec<Extra> = EXTRA.lock().unwrap_or_else(PoisonError::into_inner).clone();
    extras.iter().map(|extra| extra()).collect()
}

/// What a store says without its indexer (its last committed block, the workers' claims and
/// refusals), then the families [`register`]ed in this process.
pub fn render_store(db: &std::path::Path) -> String {
    let mut out = String::new();
    if let Ok(store) = Store::open_readonly(db) {
        let indexed = Cursor::get(store.conn()).ok().flatten().map(|c| c.block_number).unwrap_or(0);
        out.push_str(&format!(
            "# HELP lcw_indexer_indexed_block Last block committed to the store\n\
             # TYPE lcw_indexer_indexed_block gauge\nlcw_indexer_indexed_block {indexed}\n"
        ));
        claims(&mut out, store.conn());
        refusals(&mut out, store.conn());
    }
    out.push_str(&render_registered());
    out
}

/// A renderer of metrics text (`# HELP`, `# TYPE` and sample lines), called at each scrape on a
/// blocking thread.
pub type Extra = Arc<dyn Fn() -> String + Send + Sync>;

/// The families registered beside the indexer's. Process-wide rather than in the config, since
/// [`crate::run`] starts the endpoint itself and is started again after a node outage.
static EXTRA: Mutex<Vec<Extra>> = Mutex::new(Vec::new());

/// Adds `extra`'s metrics to every `/metrics` answer of the indexer in this process.
pub fn register(extra: Extra) {
    EXTRA.lock().unwrap_or_else(PoisonError::into_inner).push(extra);
}

/// The answers refused as wrong, by endpoint (redacted) and reason.
fn bad_answers(out: &mut String, by_endpoint: &[crate::rpc::BadAnswers]) {
    if by_endpoint.is_empty() {
        return;
    }
    out.push_str(
        "# HELP lcw_indexer_rpc_endpoint_bad_answers_total RPC answers refused as wrong, by endpoint and reason\n\
         # TYPE lcw_indexer_rpc_endpoint_bad_answers_total counter\n",
    );
    for b in by_endpoint {
        let endpoint = b.endpoint.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        for (reason, n) in &b.reasons {
            out.push_str(&format!(
                "lcw_indexer_rpc_endpoint_bad_answers_total{{endpoint=\"{endpoint}\",reason=\"{reason}\"}} {n}\n"
            ));
        }
    }
}

/// Jobs the workers will not serve (`worker_refusals`, final ones), by worker and the step that
/// refused them.
fn refusals(out: &mut String, conn: &rusqlite::Connection) {
    let Ok(counts) = lcw_schema::store::refusals::counts(conn) else { return };
    out.push_str(
        "# HELP lcw_worker_refused_jobs Jobs a worker of this store will not serve, by the step that refused them\n\
         # TYPE lcw_worker_refused_jobs gauge\n",
    );
    for ((worker, step), n) in counts {
        out.push_str(&format!("lcw_worker_refused_jobs{{worker=\"{worker:#x}\",step=\"{step}\"}} {n}\n"));
    }
}

/// The workers' sortition outcomes (`worker_claims`), labelled by worker and state or reason.
fn claims(out: &mut String, conn: &rusqlite::Connection) {
    use lcw_schema::store::claims::{counts_all, missed_all};
    let (Ok(counts), Ok(missed)) = (counts_all(conn), missed_all(conn)) else { return };
    out.push_str(
        "# HELP lcw_worker_session_requests Session requests by this store's workers' claim outcome\n\
         # TYPE lcw_worker_session_requests gauge\n",
    );
    for (worker, state, n) in counts {
        out.push_str(&format!(
            "lcw_worker_session_requests{{worker=\"{worker:#x}\",state=\"{}\"}} {n}\n",
            state.as_str()
        ));
    }
    out.push_str(
        "# HELP lcw_worker_missed_claims Session requests a worker was eligible for and another took, by reason\n\
         # TYPE lcw_worker_missed_claims gauge\n",
    );
    for (worker, reason, n) in missed {
        out.push_str(&format!("lcw_worker_missed_claims{{worker=\"{worker:#x}\",reason=\"{reason}\"}} {n}\n"));
    }
}

/// Serves `/metrics` on `addr` until the task is aborted.
pub fn serve(
    addr: SocketAddr,
    rpc: Arc<Rpc>,
    live: Arc<LiveStats>,
    progress: Arc<Progress>,
    db: PathBuf,
) -> tokio::task::JoinHandle<()> {
    serve_text(addr, Arc::new(move || render(&rpc, &live, &progress, &db)))
}

/// Serves what `render` returns at `/metrics` on `addr` until the task is aborted.
pub fn serve_text(addr: SocketAddr, render: Extra) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let render = render.clone();
                async move {
                    let body = tokio::task::spawn_blocking(move || render()).await.unwrap_or_default();
                    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], body)
                }
            }),
        );
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                tracing::info!(%addr, "serving metrics at /metrics");
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "metrics server stopped");
                }
            }
            Err(e) => tracing::error!(%addr, error = %e, "cannot serve metrics (address in use?)"),
        }
    })
}

#[cfg(test)]
mod tests {
    use alloy::primitives::{Address, B256};
    use lcw_schema::profile::Contracts;
    use lcw_schema::store::claims::{ClaimRow, ClaimState, put};
    use lcw_schema::store::{Identity, Store};

    #[test]
    fn claim_outcomes_are_exposed_per_worker_and_missed_ones_per_reason() {
        let contracts = Contracts {
            worker_registry: Address::repeat_byte(1),
            job_registry: Address::repeat_byte(2),
            ai_config: Address::repeat_byte(3),
        };
        let store = Store::open_in_memory(&Identity { chain_id: 1, contracts, start_block: 0 }).unwrap();
        let row = |req: u64, state: ClaimState, reason: Option<&str>| ClaimRow {
            worker: Address::repeat_byte(0xab),
            manager: Address::repeat_byte(9),
            req_id: req,
            model_id: B256::repeat_byte(4),
            request_block: 10,
            first_block: Some(12),
            state,
            reason: reason.map(str::to_owned),
            sent_block: None,
            claim_tx: None,
            winner: None,
            claimed_block: None,
        };
        put(store.conn(), &row(1, ClaimState::Won, None)).unwrap();
        put(store.conn(), &row(2, ClaimState::Won, None)).unwrap();
        put(store.conn(), &row(3, ClaimState::Missed, Some("busy"))).unwrap();
        let mut out = String::new();
        super::claims(&mut out, store.conn());
        let w = format!("{:#x}", Address::repeat_byte(0xab));
        assert!(out.contains(&format!("lcw_worker_session_requests{{worker=\"{w}\",state=\"won\"}} 2\n")), "{out}");
        assert!(out.contains(&format!("lcw_worker_session_requests{{worker=\"{w}\",state=\"missed\"}} 1\n")), "{out}");
        assert!(out.contains(&format!("lcw_worker_missed_claims{{worker=\"{w}\",reason=\"busy\"}} 1\n")), "{out}");
        assert!(out.contains("# TYPE lcw_worker_missed_claims gauge"), "{out}");

        let w = Address::repeat_byte(0xab);
        lcw_schema::store::refusals::put(store.conn(), w, 7, "prompt", "blob not found; not acked", true, false)
            .unwrap();
        lcw_schema::store::refusals::put(store.conn(), w, 8, "funds", "top up", false, false).unwrap();
        let mut out = String::new();
        super::refusals(&mut out, store.conn());
        assert!(out.contains(&format!("lcw_worker_refused_jobs{{worker=\"{w:#x}\",step=\"prompt\"}} 1\n")), "{out}");
        assert!(!out.contains("step=\"funds\""), "a job held back is not counted as refused: {out}");
    }

    #[test]
    fn bad_answers_are_exposed_per_endpoint_and_reason_with_the_label_escaped() {
        let mut out = String::new();
        super::bad_answers(&mut out, &[]);
        assert!(out.is_empty());
        let b = |endpoint: &str, reasons: &[(&'static str, u64)]| crate::rpc::BadAnswers {
            endpoint: endpoint.into(),
            count: reasons.iter().map(|r| r.1).sum(),
            reasons: reasons.iter().copied().collect(),
            last: "x".into(),
        };
        super::bad_answers(
            &mut out,
            &[
                b("https://eth.example/…", &[("duplicate", 2), ("out_of_range", 1)]),
                b("http://a\"b", &[("malformed", 1)]),
            ],
        );
        assert!(out.contains("# TYPE lcw_indexer_rpc_endpoint_bad_answers_total counter\n"), "{out}");
        let line = |endpoint: &str, reason: &str, n: u64| {
            format!("lcw_indexer_rpc_endpoint_bad_answers_total{{endpoint=\"{endpoint}\",reason=\"{reason}\"}} {n}\n")
        };
        assert!(out.contains(&line("https://eth.example/…", "duplicate", 2)), "{out}");
        assert!(out.contains(&line("https://eth.example/…", "out_of_range", 1)), "{out}");
        assert!(out.contains(&line("http://a\\\"b", "malformed", 1)), "{out}");
    }
}
