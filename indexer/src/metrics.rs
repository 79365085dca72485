//! Prometheus metrics at `GET /metrics` (`lcw index --metrics ADDR`): head, indexed and finalized
//! blocks, blocks behind, events, undecodable logs, reorgs and their depth, RPC requests, retries
//! and range splits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

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
    ];
    let mut out = String::new();
    for (name, kind, help, value) in lines {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
    }
    out
}

/// Serves `/metrics` on `addr` until the task is aborted.
pub fn serve(
    addr: SocketAddr,
    rpc: Arc<Rpc>,
    live: Arc<LiveStats>,
    progress: Arc<Progress>,
    db: PathBuf,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let (rpc, live, progress, db) = (rpc.clone(), live.clone(), progress.clone(), db.clone());
                async move {
                    let body = tokio::task::spawn_blocking(move || render(&rpc, &live, &progress, &db))
                        .await
                        .unwrap_or_default();
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
