//! What the worker holds per job, and the background steps (open the prompt, run the model)
//! that move a job along, each bounded by a deadline from chain time.

use super::*;

/// A finished answer, kept until its completion is mined (a completion that leaves the outbox
/// unmined goes out again from it, without running the model again).
#[derive(Debug)]
pub(super) struct Ready {
    pub(super) sidecar: alloy::eips::eip4844::BlobTransactionSidecar,
    pub(super) versioned_hash: B256,
    pub(super) ciphertext_hash: B256,
    pub(super) timing: JobTiming,
    pub(super) ready_at: Instant,
}

/// What the worker holds for one job.
#[derive(Debug)]
pub(super) struct Held {
    pub(super) stage: Local,
    pub(super) prompt: Option<Prompt>,
    pub(super) ready: Option<Ready>,
    pub(super) tries: u32,
    pub(super) retry_at: Instant,
}

impl Held {
    pub(super) fn new(stage: Local) -> Self {
        Held { stage, prompt: None, ready: None, tries: 0, retry_at: Instant::now() }
    }
}

/// What a background step reports.
#[derive(Debug)]
pub(super) enum Outcome {
    Opened(Prompt),
    Answered(Box<Ready>),
    Failed(Failure),
}

/// A served model: its name, its client (at its token limit) and what a job's ack and
/// completion protect (the completion-timeout slash and the worker's share of the fee).
#[derive(Debug, Clone)]
pub(super) struct Served {
    pub(super) name: String,
    pub(super) llm: Llm,
    pub(super) protects: u128,
}

/// What a background step needs to know about its job.
#[derive(Debug, Clone)]
pub(super) struct Spec {
    pub(super) job_id: u64,
    pub(super) session_id: u64,
    pub(super) submitted_block: u64,
    pub(super) model: Served,
    pub(super) key: Arc<SessionKey>,
}

impl Worker {
    /// Why an assignment cannot be served here at all, if it cannot.
    pub(super) fn blocker(&mut self, a: &Assignment) -> Option<(&'static str, String)> {
        if a.state == JobState::Submitted
            && let Some((step, why)) = self.refused.get(&a.job_id)
        {
            return Some((step, why.clone()));
        }
        if a.state == JobState::Submitted
            && let Some(block) = self.deregistered
        {
            return Some((
                "deregistered",
                format!("this worker was deregistered in block {block}: it acks no new job; not acked"),
            ));
        }
        if let Verdict::Refuse(why) = self.models.verdict(a.model_id) {
            return Some(("model", format!("{why}; not acked")));
        }
        session_key(&mut self.keys, &self.config.secret, a).err().map(|why| ("key", why))
    }

    /// What a background step needs for `a`; None when its model or key is gone.
    pub(super) fn spec(&mut self, a: &Assignment) -> Option<Spec> {
        let model = a.model_id.and_then(|m| self.models.served(&m)).cloned()?;
        let key = session_key(&mut self.keys, &self.config.secret, a).ok()?;
        Some(Spec { job_id: a.job_id, session_id: a.session_id, submitted_block: a.submitted_block, model, key })
    }

    /// Starts fetching and opening the prompt of `a`, within `budget` seconds.
    pub(super) fn open(&mut self, a: &Assignment, budget: u64) {
        let Some(spec) = self.spec(a) else { return };
        let held = self.held.entry(a.job_id).or_insert_with(|| Held::new(Local::Opening));
        held.stage = Local::Opening;
        let deadline = Instant::now() + Duration::from_secs(budget);
        let (config, chain, fetches, done) =
            (self.config.clone(), self.chain.clone(), self.fetches.clone(), self.done_tx.clone());
        tokio::spawn(async move {
            let Ok(_slot) = fetches.acquire_owned().await else { return };
            let outcome = match open_prompt(&config, &chain, &spec, deadline).await {
                Ok(prompt) => Outcome::Opened(prompt),
                Err(f) => Outcome::Failed(f),
            };
            let _ = done.send((spec.job_id, outcome));
        });
    }

    /// Starts the model on `a` (opening its prompt first if it is not open), within `budget`
    /// seconds of chain time.
    pub(super) fn work(&mut self, a: &Assignment, budget: u64) {
        let Some(spec) = self.spec(a) else { return };
        let held = self.held.entry(a.job_id).or_insert_with(|| Held::new(Local::Working));
        held.stage = Local::Working;
        let prompt = held.prompt.take();
        let deadline = Instant::now() + Duration::from_secs(budget);
        let gateway = self.link.as_ref().map(|l| l.gateway.clone());
        let (config, chain, permits, done) =
            (self.config.clone(), self.chain.clone(), self.permits.clone(), self.done_tx.clone());
        tokio::spawn(async move {
            let job = spec.job_id;
            let outcome = match work(&config, &chain, gateway.as_ref(), &spec, prompt, deadline, permits).await {
                Ok(ready) => Outcome::Answered(Box::new(ready)),
                Err(f) => Outcome::Failed(f),
            };
            let _ = done.send((job, outcome));
        });
    }
}

/// Session keys by (session, block of its last key update): unwrapped, or why not.
pub(super) type KeyCache = HashMap<(u64, Option<u64>), Result<Arc<SessionKey>, String>>;

/// The session key of an assignment, unwrapped once per session key version.
pub(super) fn session_key(
    cache: &mut KeyCache,
    secret: &EncryptionSecret,
    a: &Assignment,
) -> Result<Arc<SessionKey>, String> {
    cache
        .entry((a.session_id, a.key_updated_block))
        .or_insert_with(|| {
            let wrapped = a.enc_worker_key.as_deref().ok_or("the store has no session key for its session")?;
            secret.unwrap_session_key(wrapped).map(Arc::new).map_err(|e| {
                format!(
                    "the session key of session {} cannot be decrypted with this worker's key ({e}); the consumer \
                     must call updateSessionKey",
                    a.session_id
                )
            })
        })
        .clone()
}

/// The prompt of a job: its blob hash from the chain, then the blob, opened, by `deadline`.
pub(super) async fn open_prompt(
    config: &WorkConfig,
    chain: &Chain,
    spec: &Spec,
    deadline: Instant,
) -> Result<Prompt, Failure> {
    let jr = JobRegistry::new(config.profile.contracts.job_registry, chain.provider());
    let j = tokio::time::timeout_at(deadline.into(), jr.getJob(U256::from(spec.job_id)).call())
        .await
        .map_err(|_| Failure::transient("getJob did not answer before the deadline"))?
        .map_err(|e| Failure::transient(format_args!("getJob: {e}")))?;
    job::open(&config.blobs, &spec.key, j.promptBlobHash, spec.submitted_block, deadline).await
}

/// One job's work: the prompt (opened now if it was not), the model, the sealed answer and its
/// blob, all by `deadline`.
pub(super) async fn work(
    config: &WorkConfig,
    chain: &Chain,
    gateway: Option<&Gateway>,
    spec: &Spec,
    prompt: Option<Prompt>,
    deadline: Instant,
    permits: Arc<tokio::sync::Semaphore>,
) -> Result<Ready, Failure> {
    let prompt = match prompt {
        Some(p) => p,
        None => open_prompt(config, chain, spec, deadline).await?,
    };
    let _slot = permits.acquire_owned().await.map_err(|_| Failure::transient("the worker is stopping"))?;
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Failure::transient("no time left before the completion deadline"));
    }
    let a = job::infer(&spec.model.llm, &spec.model.name, &spec.key, &prompt, left).await?;
    if a.truncated > 0 {
        tracing::warn!(job = spec.job_id, cut = a.truncated, "the answer was cut to fit one blob");
    }
    if let Some(gateway) = gateway {
        // The consumer hears the answer now; the blob settles it on chain right after.
        gateway.publish_complete(spec.job_id, spec.session_id, 1, &a.ciphertext).await;
    }
    let timing = JobTiming {
        job_id: spec.job_id,
        submitted_block: spec.submitted_block,
        fetch: prompt.fetch,
        decrypt: a.decrypt,
        inference: a.inference,
        encrypt: a.encrypt,
        completion_tokens: a.generation.completion_tokens,
        ..JobTiming::default()
    };
    Ok(Ready {
        sidecar: a.sidecar,
        versioned_hash: a.versioned_hash,
        ciphertext_hash: a.ciphertext_hash,
        timing,
        ready_at: Instant::now(),
    })
}
