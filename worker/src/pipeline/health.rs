//! Whether the LLM server can take a job now. An outage (the server restarting, overloaded,
//! unreachable) must not stop the worker, whose transactions in flight still need it, nor let
//! it ack jobs it cannot serve: while the server is down no new job is acked (each is refused
//! for now, step `llm`), acked jobs keep retrying within their deadlines, and the server is
//! probed in the background every few seconds until it answers again.

use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::llm::{Llm, LlmResult};

/// How often a down server is probed.
const PROBE_EVERY: Duration = Duration::from_secs(3);

/// The LLM server's state as the worker last saw it.
#[derive(Debug)]
pub(super) struct LlmHealth {
    /// Why it is down, when it is.
    down: Option<String>,
    probe: Option<JoinHandle<LlmResult<()>>>,
    next_probe: Instant,
}

impl LlmHealth {
    pub(super) fn up() -> Self {
        LlmHealth { down: None, probe: None, next_probe: Instant::now() }
    }

    /// Why new jobs are not taken now, if they are not.
    pub(super) fn down(&self) -> Option<&str> {
        self.down.as_deref()
    }

    /// A call failed because of the server itself.
    pub(super) fn failed(&mut self, reason: &str) {
        if self.down.is_none() {
            tracing::warn!(reason, "the LLM server is down; no new job is acked until it answers again");
            self.next_probe = Instant::now() + PROBE_EVERY;
        }
        self.down = Some(format!("the LLM server is down ({reason}); not acked while it is"));
    }

    /// A generation succeeded.
    pub(super) fn answered(&mut self) {
        if self.down.take().is_some() {
            tracing::info!("the LLM server answers again");
        }
    }

    /// While down: collects a finished probe and starts the next one when due. A probe lists
    /// the models and warms each one, as at start.
    pub(super) fn poll(&mut self, llm: &Llm, models: &[String]) {
        if self.down.is_none() {
            return;
        }
        if let Some(p) = &self.probe {
            if !p.is_finished() {
                return;
            }
            let result = self.probe.take().and_then(futures::FutureExt::now_or_never).and_then(Result::ok);
            match result {
                Some(Ok(())) => return self.answered(),
                Some(Err(e)) => self.down = Some(format!("the LLM server is down ({e}); not acked while it is")),
                None => {}
            }
        }
        if Instant::now() >= self.next_probe {
            self.next_probe = Instant::now() + PROBE_EVERY;
            let (llm, models) = (llm.clone(), models.to_vec());
            self.probe = Some(tokio::spawn(async move { ready(&llm, &models).await }));
        }
    }
}

/// The models are served and warm.
pub(super) async fn ready(llm: &Llm, models: &[String]) -> LlmResult<()> {
    llm.check_models(models).await?;
    for m in models {
        llm.warm(m).await?;
    }
    Ok(())
}
