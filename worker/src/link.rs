//! The worker-gateway link of a running worker: sign-in, heartbeats that follow the pipeline
//! (jobs in progress, slots, the models served now, capabilities, LLM status, uptime), and the
//! drained flag mirrored to the gateway when the operator changes it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lcw_schema::store::obligations;
use tokio::sync::watch;

use crate::gateway::{Gateway, GatewayConfig, Heartbeat};
use crate::models::LiveModels;
use crate::pipeline::{WorkConfig, WorkerError};

/// The worker-gateway link of a running worker: the client, the heartbeat it reports (updated
/// every head), and the drained flag it last told the gateway.
pub(crate) struct Link {
    pub(crate) gateway: Gateway,
    heartbeat: Arc<std::sync::Mutex<Heartbeat>>,
    llm_ready: Arc<std::sync::atomic::AtomicBool>,
    drained: std::sync::Mutex<Option<bool>>,
    started: Instant,
}

impl Link {
    /// Signs in lazily, sends heartbeats in the background and probes the LLM server for them.
    pub(crate) fn start(
        config: GatewayConfig,
        work: &WorkConfig,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Link, WorkerError> {
        let gateway = Gateway::new(config, work.signer.clone())
            .map_err(|e| WorkerError::config(format_args!("the worker gateway: {e}")))?;
        let heartbeat = Arc::new(std::sync::Mutex::new(Heartbeat {
            max_jobs: work.concurrency.max(1) as u32,
            llm_ready: true,
            ..Heartbeat::default()
        }));
        let llm_ready = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (probe, llm, mut stop) = (llm_ready.clone(), work.llm.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                let ok = tokio::time::timeout(Duration::from_secs(2), llm.health()).await.is_ok_and(|r| r.is_ok());
                probe.store(ok, std::sync::atomic::Ordering::Relaxed);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                    _ = stop.changed() => return,
                }
            }
        });
        let (state, ready, live) = (heartbeat.clone(), llm_ready.clone(), work.live_models.clone());
        let started = Instant::now();
        tokio::spawn(crate::gateway::run(
            gateway.clone(),
            move || beat(&state, &ready, &live, started),
            shutdown.clone(),
        ));
        Ok(Link { gateway, heartbeat, llm_ready, drained: std::sync::Mutex::new(None), started })
    }

    /// The heartbeat's view of this head; the drained flag mirrored to the gateway when it changed.
    pub(crate) fn update(&self, conn: &rusqlite::Connection, me: alloy::primitives::Address, in_progress: usize) {
        let capabilities = lcw_schema::store::sortition::worker_capabilities(conn, me).ok();
        let names = lcw_schema::store::sortition::capability_names(conn).unwrap_or_default();
        if let Ok(mut hb) = self.heartbeat.lock() {
            hb.active_jobs = in_progress as u32;
            hb.llm_ready = self.llm_ready.load(std::sync::atomic::Ordering::Relaxed);
            hb.uptime_secs = self.started.elapsed().as_secs();
            if let Some(mask) = capabilities {
                hb.capabilities =
                    names.into_iter().filter(|(bit, _)| mask.bit(usize::from(*bit))).map(|(_, n)| n).collect();
            }
        }
        let Ok(drained) = obligations::drained(conn, me) else { return };
        let Ok(mut told) = self.drained.lock() else { return };
        if *told != Some(drained) {
            *told = Some(drained);
            let gateway = self.gateway.clone();
            tokio::spawn(async move {
                let r = if drained { gateway.drain().await } else { gateway.undrain().await };
                match r {
                    Ok(()) => tracing::info!(drained, "the worker gateway was told"),
                    Err(e) => {
                        tracing::warn!(drained, error = %e, "telling the worker gateway failed; the flag holds locally")
                    }
                }
            });
        }
    }
}

/// The heartbeat to send now: the pipeline's last view, with the LLM status, the uptime and the
/// models served at this moment (a model added or removed on chain shows at the next beat).
fn beat(
    state: &std::sync::Mutex<Heartbeat>,
    ready: &std::sync::atomic::AtomicBool,
    live: &LiveModels,
    started: Instant,
) -> Heartbeat {
    let mut hb = state.lock().map(|h| h.clone()).unwrap_or_default();
    hb.llm_ready = ready.load(std::sync::atomic::Ordering::Relaxed);
    hb.uptime_secs = started.elapsed().as_secs();
    hb.models = live.ids();
    hb
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::AtomicBool;

    use alloy::primitives::B256;
    use lcw_schema::types::ModelId;

    use super::*;

    #[test]
    fn each_beat_names_the_models_served_at_that_moment() {
        let state = std::sync::Mutex::new(Heartbeat { max_jobs: 2, models: vec![B256::ZERO], ..Heartbeat::default() });
        let (ready, live) = (AtomicBool::new(true), LiveModels::default());
        let id = |n: &str| ModelId::from_name(n).0;
        live.set(&BTreeMap::from([(id("a"), "a".to_owned())]));
        let first = beat(&state, &ready, &live, Instant::now());
        assert_eq!((first.models, first.max_jobs, first.llm_ready), (vec![id("a")], 2, true));
        // "b" added on chain and warmed, "a" removed: the next beat says so, without a restart.
        live.set(&BTreeMap::from([(id("b"), "b".to_owned())]));
        ready.store(false, std::sync::atomic::Ordering::Relaxed);
        let next = beat(&state, &ready, &live, Instant::now());
        assert_eq!((next.models, next.llm_ready), (vec![id("b")], false));
    }
}
