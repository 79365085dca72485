//! The footprints of the worker's models for the API of `lcw run --work`: measured on the LLM
//! server at start and every [`MEASURE_EVERY`] in the background, answered from memory.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use alloy::primitives::B256;
use lcw_queries::Footprint;
use lcw_queries::operator::FootprintSource;
use lcw_schema::types::ModelId;
use lcw_worker::llm::Llm;
use lcw_worker::models::LiveModels;
use tokio::sync::watch;

/// How often the footprints are measured again (a model loaded, unloaded or added).
pub(super) const MEASURE_EVERY: Duration = Duration::from_secs(60);

/// The footprint of each model the worker serves (the live set once the worker runs, `flag`
/// until then), keyed by its on-chain id (keccak256 of the name), kept up to date by a task that
/// ends when `stop` turns true.
pub(super) fn start(llm: Llm, flag: Vec<String>, live: LiveModels, mut stop: watch::Receiver<bool>) -> FootprintSource {
    let measured: Arc<RwLock<HashMap<B256, Footprint>>> = Arc::default();
    let into = measured.clone();
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            let names = Some(live.names()).filter(|n| !n.is_empty()).unwrap_or_else(|| flag.clone());
            let round = tokio::select! {
                r = llm.footprints(&names) => r,
                _ = stop.wait_for(|s| *s) => return,
            };
            match round {
                Ok(f) => {
                    if failing {
                        tracing::info!("the model footprints are measured again");
                    }
                    failing = false;
                    for model in &f.unknown {
                        tracing::debug!(%model, "the LLM server reports no size for the model; its footprint is unknown");
                    }
                    let fresh: HashMap<B256, Footprint> = f
                        .sized
                        .iter()
                        .map(|s| {
                            (ModelId::from_name(&s.model).0, Footprint { bytes: s.total, detail: Some(s.describe()) })
                        })
                        .collect();
                    if let Ok(mut map) = into.write() {
                        *map = fresh;
                    }
                }
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(
                        error = %e,
                        "measuring the model footprints on the LLM server failed; the API shows the last figures, \
                         tried again every minute"
                    );
                }
                Err(e) => tracing::debug!(error = %e, "measuring the model footprints failed again"),
            }
            tokio::select! {
                _ = tokio::time::sleep(MEASURE_EVERY) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    });
    Arc::new(move |id| measured.read().ok()?.get(&id).cloned())
}
