//! The live model set: [`crate::models::plan`] carried out while the worker runs.
//!
//! At start the chain's set is read from WorkerRegistry (`getWorkerModels`; the store's
//! `worker_models` if the node cannot answer it), the LLM server is listed, and every model to
//! serve is checked, warmed and pinned before the first job is looked at. A mismatch that leaves
//! nothing to serve stops the worker with the fix; any other is a warning with its fix.
//!
//! While it runs, the set is read again from the store whenever the indexer has committed (once
//! its cursor has reached the first head this process saw, so a store catching up never takes a
//! model away), and the LLM server is listed again every [`RELIST_EVERY`]:
//!
//! - a model added on chain is checked on the server, warmed and pinned in the background; its
//!   jobs wait (refused for now, step `llm`) until it is warm, then are acked. One that would not
//!   fit in memory beside the served models (`--memory-limit`, or the machine's memory when the
//!   LLM server runs here) is left cold with an error that says what to remove, and its jobs
//!   wait with that reason;
//! - a model removed on chain is not acked from that moment (its jobs are refused, step
//!   `model`); the jobs already acked are finished, and then the model is unloaded (Ollama
//!   `keep_alive: 0`, llama-server router mode `POST /models/unload`).

use std::collections::BTreeSet;

use lcw_schema::bindings::WorkerRegistry;
use lcw_schema::store::rows::WorkerModelRow;
use tokio::task::JoinHandle;

use super::*;
use crate::fit;
use crate::llm::{LlmError, Unloaded};
use crate::models::{self as set, Inputs, LiveModels, Plan};

/// How often the LLM server's list is read again (a model pulled or dropped there).
pub(super) const RELIST_EVERY: Duration = Duration::from_secs(30);
/// How long after a failed warm-up it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// What the pipeline does with a job's model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Acked.
    Serve,
    /// On chain but not served yet (being warmed, or not on the LLM server): refused for now.
    Wait(String),
    /// Not this worker's model (never added, or removed on chain): refused for good.
    Refuse(String),
}

/// What one background sync did.
struct Synced {
    listed: Option<Vec<String>>,
    warmed: Vec<(String, Result<Served, String>)>,
    unloaded: Vec<String>,
    /// Added models left cold because they do not fit beside the served ones, with the refusal.
    unfit: Vec<(String, String)>,
}

/// The model set as the running worker holds it.
pub(super) struct Models {
    flag: Vec<String>,
    /// Added to the `lcw` commands of the fixes (` --network testnet`).
    network_flag: String,
    api: Api,
    /// The models added to this worker on chain.
    chain: BTreeSet<B256>,
    /// The store's cursor when the chain's set was last read from it.
    read_at: Option<u64>,
    /// Whether the chain's set is known (a deregistered worker serves the `--models` it acked).
    chain_known: bool,
    listed: Option<Vec<String>>,
    /// Warm and pinned, by id, with what a job of each needs. Kept while jobs of a removed model
    /// are still open.
    warm: HashMap<B256, Served>,
    /// Models to warm that the last sync left cold because they do not fit in memory beside the
    /// served ones, with why.
    unfit: HashMap<B256, String>,
    plan: Plan,
    task: Option<JoinHandle<Synced>>,
    next_sync: Instant,
    /// A sync with work to do (a model to warm or unload) starts no earlier than this.
    retry_at: Instant,
    told: BTreeSet<String>,
    rules: ChainRules,
    /// The served set shared with the process (`WorkConfig::live_models`), set at every plan.
    live: LiveModels,
}

impl Models {
    /// The set at start: read, reported, and every model to serve warmed and pinned. `stored`
    /// is the store's set, used when the node cannot answer `getWorkerModels`.
    pub(super) async fn start(
        config: &WorkConfig,
        chain: &Chain,
        stored: Vec<B256>,
        me: Address,
        deregistered: Option<u64>,
        rules: ChainRules,
        llm: &mut LlmHealth,
    ) -> Result<Models, WorkerError> {
        let on_chain = if deregistered.is_some() {
            None
        } else {
            let wr = WorkerRegistry::new(config.profile.contracts.worker_registry, chain.provider());
            match wr.getWorkerModels(me).call().await {
                Ok(ids) => Some(ids.into_iter().collect::<BTreeSet<B256>>()),
                Err(e) => {
                    let error = lcw_schema::profile::redact_urls(&e.to_string());
                    tracing::warn!(%error, "getWorkerModels failed; the store's models stand in");
                    // A store still empty (catching up) says nothing: the flag stands in until
                    // it has reached the first head.
                    (!stored.is_empty()).then(|| stored.into_iter().collect())
                }
            }
        };
        let listed = match config.llm.models().await {
            Ok(l) => Some(l),
            Err(e) if e.is_outage() => {
                llm.failed(&e.to_string());
                None
            }
            Err(e) => return Err(WorkerError::config(e)),
        };
        let mut m = Models {
            flag: config.models.clone(),
            network_flag: config.network_flag.clone(),
            api: config.llm.config().api,
            chain_known: on_chain.is_some(),
            chain: on_chain.unwrap_or_default(),
            read_at: None,
            listed,
            warm: HashMap::new(),
            unfit: HashMap::new(),
            plan: Plan::default(),
            task: None,
            next_sync: Instant::now() + RELIST_EVERY,
            retry_at: Instant::now(),
            told: BTreeSet::new(),
            rules,
            live: config.live_models.clone(),
        };
        m.replan(&BTreeSet::new());
        if m.listed.is_some() && m.plan.nothing_to_serve() && deregistered.is_none() {
            return Err(WorkerError::Config(m.report("no model can be served")));
        }
        m.tell_mismatches();
        let mut failed = Vec::new();
        for name in m.plan.warm.clone() {
            let started = Instant::now();
            match warm_up(config, chain, &rules, &name).await {
                Ok(served) => {
                    tracing::info!(model = %name, ms = started.elapsed().as_millis() as u64, "model warm and pinned");
                    m.warm.insert(ModelId::from_name(&name).0, served);
                }
                Err(WarmError::Llm(e)) if e.is_outage() => llm.failed(&e.to_string()),
                Err(e) => failed.push(format!("{name}: {e}")),
            }
        }
        m.replan(&BTreeSet::new());
        if !failed.is_empty() && m.plan.serve.is_empty() && llm.down().is_none() {
            return Err(WorkerError::Config(format!(
                "no model can be served: {}; see the LLM server's log",
                failed.join("; ")
            )));
        }
        for f in &failed {
            tracing::warn!(failure = %f, "a model could not be warmed; its jobs are not acked, it is tried again");
        }
        Ok(m)
    }

    /// The command line the operator types for the sub-command `c` on this network.
    fn lcw(&self, c: &str) -> String {
        format!("lcw {c}{}", self.network_flag)
    }

    /// The lines of the mismatch report, each with its fix, after `what`.
    fn report(&self, what: &str) -> String {
        let lcw = |c: &str| self.lcw(c);
        let mut lines: Vec<String> =
            self.plan.mismatches.iter().map(|m| format!("{m}; fix: {}", m.fix(&lcw))).collect();
        if lines.is_empty() {
            lines.push(format!(
                "no model is added to this worker on chain; fix: `{}` (or `{}` once registered)",
                self.lcw("register --models NAME"),
                self.lcw("add-models --models NAME")
            ));
        }
        format!("{what}: {}", lines.join("; "))
    }

    fn tell_mismatches(&mut self) {
        for m in &self.plan.mismatches {
            let line = m.to_string();
            if self.told.insert(line.clone()) {
                let fix = m.fix(&|c: &str| self.lcw(c));
                tracing::warn!(model = %m.model(), fix = %fix, "{line}");
            }
        }
    }

    /// Plans again from what is held now; says what changed.
    fn replan(&mut self, busy: &BTreeSet<B256>) {
        let warm: BTreeSet<String> = self.warm.values().map(|s| s.name.clone()).collect();
        let plan = set::plan(Inputs {
            chain: self.chain_known.then_some(&self.chain),
            flag: &self.flag,
            server: self.listed.as_deref(),
            api: self.api,
            warm: &warm,
            busy,
        });
        for (id, name) in plan.serve.iter().filter(|(id, _)| !self.plan.serve.contains_key(*id)) {
            tracing::info!(model = %name, id = %id, "model served: its jobs are acked");
        }
        for (id, name) in self.plan.serve.iter().filter(|(id, _)| !plan.serve.contains_key(*id)) {
            let why =
                plan.waiting.get(id).cloned().unwrap_or_else(|| "it was removed from this worker on chain".into());
            tracing::info!(model = %name, id = %id, reason = %why, "model no longer served: no new job of it is acked");
        }
        self.plan = plan;
        self.live.set(&self.plan.serve);
        self.tell_mismatches();
    }

    /// What to do with a job of `model`.
    pub(super) fn verdict(&self, model: Option<B256>) -> Verdict {
        let Some(id) = model else { return Verdict::Refuse("the store does not show its session's model".into()) };
        if self.plan.serve.contains_key(&id) && self.warm.contains_key(&id) {
            return Verdict::Serve;
        }
        if let Some(why) = self.plan.waiting.get(&id) {
            if let Some(unfit) = self.unfit.get(&id) {
                return Verdict::Wait(format!("its model is not loaded: {unfit}"));
            }
            return Verdict::Wait(format!("{why}; not acked until it is served"));
        }
        match self.warm.get(&id) {
            Some(s) => Verdict::Refuse(format!("its model {} was removed from this worker on chain", s.name)),
            None => Verdict::Refuse("its model is not served here".into()),
        }
    }

    /// The name of `id` as `--models`, the server's list or the warm set give it, else the id.
    fn name_of(&self, id: &B256) -> String {
        let listed = self.listed.iter().flatten();
        let warm = self.warm.values().map(|s| &s.name);
        self.flag
            .iter()
            .chain(listed)
            .chain(warm)
            .find(|n| ModelId::from_name(n).0 == *id)
            .cloned()
            .unwrap_or_else(|| id.to_string())
    }

    /// What a job of `model` needs, while the model is warm (also after it was removed, until its
    /// jobs are done).
    pub(super) fn served(&self, model: &B256) -> Option<&Served> {
        self.warm.get(model)
    }

    /// The names served now (for the LLM server's health probe: it warms them again).
    pub(super) fn names(&self) -> Vec<String> {
        self.plan.serve.values().cloned().collect()
    }

    /// The ids served now (sortition claims).
    pub(super) fn ids(&self) -> HashSet<B256> {
        self.plan.serve.keys().copied().collect()
    }

    /// One pass: collects a finished sync, reads the chain's set again after a commit, plans
    /// again, and starts a sync when one is due. Returns whether the served set changed.
    pub(super) fn tick(&mut self, w: Tick<'_>) -> Result<bool, WorkerError> {
        let before = self.ids();
        if self.task.as_ref().is_some_and(JoinHandle::is_finished)
            && let Some(Some(Ok(done))) = self.task.take().map(futures::FutureExt::now_or_never)
        {
            self.collect(done);
        }
        if let Some(first) = w.first_head
            && !w.deregistered
        {
            let cursor = obligations::cursor(w.conn)?;
            if cursor >= first && self.read_at != Some(cursor) {
                self.read_at = Some(cursor);
                let now: BTreeSet<B256> = WorkerModelRow::of_worker(w.conn, &w.me)?.into_iter().collect();
                if now != self.chain || !self.chain_known {
                    for id in now.difference(&self.chain) {
                        let model = self.name_of(id);
                        tracing::info!(model = %model, id = %id, block = cursor, "model added to this worker on chain");
                    }
                    for id in self.chain.difference(&now) {
                        let (model, open) = (self.name_of(id), w.busy.contains(id));
                        tracing::info!(
                            model = %model,
                            id = %id,
                            block = cursor,
                            jobs_open = open,
                            "model removed from this worker on chain"
                        );
                    }
                    self.chain = now;
                    self.chain_known = true;
                    // A change on chain is acted on now, not at the next listing.
                    self.next_sync = Instant::now();
                }
            }
        }
        self.replan(w.busy);
        // A list never read (the server was down at start) is read as soon as the server answers.
        let work = !self.plan.warm.is_empty() || !self.plan.unload.is_empty() || self.listed.is_none();
        if self.task.is_none()
            && !w.llm_down
            && (Instant::now() >= self.next_sync || (work && Instant::now() >= self.retry_at))
        {
            self.spawn(w.config, w.chain);
        }
        Ok(self.ids() != before)
    }

    fn spawn(&mut self, config: &WorkConfig, chain: &Chain) {
        self.next_sync = Instant::now() + RELIST_EVERY;
        self.retry_at = Instant::now() + RETRY_AFTER;
        let (config, chain, rules, plan) = (config.clone(), chain.clone(), self.rules, self.plan.clone());
        let (flag, api, chain_set, known) = (self.flag.clone(), self.api, self.chain.clone(), self.chain_known);
        let warm: BTreeSet<String> = self.warm.values().map(|s| s.name.clone()).collect();
        let busy: BTreeSet<B256> = plan.draining.iter().map(|n| ModelId::from_name(n).0).collect();
        self.task = Some(tokio::spawn(async move {
            let listed = match config.llm.models().await {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::debug!(error = %e, "listing the LLM server's models failed");
                    None
                }
            };
            // Planned again on the fresh list: only what it still asks for is done.
            let plan = set::plan(Inputs {
                chain: known.then_some(&chain_set),
                flag: &flag,
                server: listed.as_deref(),
                api,
                warm: &warm,
                busy: &busy,
            });
            let mut unloaded = Vec::new();
            for name in &plan.unload {
                match config.llm.unload(name).await {
                    Ok(Unloaded::Done) => tracing::info!(model = %name, "model unloaded: its last job is done"),
                    Ok(Unloaded::NoUnload) => {
                        tracing::debug!(model = %name, "the LLM server has no way to unload a model; nothing to unload")
                    }
                    Ok(Unloaded::NotLoaded(answer)) => {
                        tracing::debug!(model = %name, %answer, "the LLM server does not hold it; nothing to unload")
                    }
                    Err(e) => {
                        tracing::warn!(model = %name, error = %e, "unloading the model failed; it is forgotten here")
                    }
                }
                unloaded.push(name.clone());
            }
            let (admitted, unfit) = admit(&config, &warm, &plan.warm).await;
            let mut warmed = Vec::new();
            for name in &admitted {
                let started = Instant::now();
                let result = warm_up(&config, &chain, &rules, name).await.map_err(|e| e.to_string());
                if result.is_ok() {
                    tracing::info!(model = %name, ms = started.elapsed().as_millis() as u64, "model warm and pinned");
                }
                warmed.push((name.clone(), result));
            }
            Synced { listed, warmed, unloaded, unfit }
        }));
    }

    fn collect(&mut self, done: Synced) {
        if done.listed.is_some() {
            self.listed = done.listed;
        }
        for name in done.unloaded {
            self.warm.remove(&ModelId::from_name(&name).0);
        }
        self.unfit.clear();
        for (model, why) in done.unfit {
            if self.told.insert(format!("unfit {model}: {why}")) {
                tracing::error!(%model, %why, "a model added on chain is not loaded: it does not fit in memory beside the served ones; its jobs are not acked");
            }
            self.unfit.insert(ModelId::from_name(&model).0, why);
        }
        for (name, result) in done.warmed {
            match result {
                Ok(served) => {
                    self.warm.insert(ModelId::from_name(&name).0, served);
                }
                Err(e) => {
                    let (model, error) = (name, e);
                    tracing::warn!(%model, %error, "warming the model failed; its jobs wait, it is tried again");
                }
            }
        }
    }
}

/// What [`Models::tick`] reads.
pub(super) struct Tick<'a> {
    pub(super) config: &'a WorkConfig,
    pub(super) chain: &'a Chain,
    pub(super) conn: &'a rusqlite::Connection,
    pub(super) me: Address,
    pub(super) first_head: Option<u64>,
    pub(super) deregistered: bool,
    pub(super) busy: &'a BTreeSet<B256>,
    pub(super) llm_down: bool,
}

/// Why a model could not be warmed.
#[derive(Debug, thiserror::Error)]
enum WarmError {
    #[error(transparent)]
    Llm(LlmError),
    #[error(transparent)]
    Chain(WorkerError),
}

/// Of the models `added` (to be warmed beside the `served` ones), those that fit in memory with
/// them and those that do not, each with the refusal and its fix ([`fit::admit`]). A fit that
/// cannot be judged (a remote LLM server without `--memory-limit`, sizes the server does not
/// report) keeps none of them cold.
async fn admit(
    config: &WorkConfig,
    served: &BTreeSet<String>,
    added: &[String],
) -> (Vec<String>, Vec<(String, String)>) {
    if added.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let served: Vec<String> = served.iter().cloned().collect();
    match fit::assess(&config.llm, &served, added, config.memory_limit).await {
        Ok(Some(judged)) => {
            let (fits, unfit) = fit::admit(added, &judged);
            let why = judged.refusal(&config.network_flag);
            (fits, unfit.into_iter().map(|m| (m, why.clone())).collect())
        }
        Ok(None) => (added.to_vec(), Vec::new()),
        Err(e) => {
            tracing::debug!(error = %e, "the memory fit of the models to warm could not be judged");
            (added.to_vec(), Vec::new())
        }
    }
}

/// Checks `name` is listed, loads and pins it, and reads what a job of it needs from AIConfig.
async fn warm_up(config: &WorkConfig, chain: &Chain, rules: &ChainRules, name: &str) -> Result<Served, WarmError> {
    config.llm.check_models(&[name.to_owned()]).await.map_err(WarmError::Llm)?;
    config.llm.warm(name).await.map_err(WarmError::Llm)?;
    rules::served_model(config, chain, rules, name).await.map_err(WarmError::Chain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::LlmConfig;

    fn served(name: &str) -> Served {
        Served { name: name.into(), llm: Llm::new(LlmConfig::default()).unwrap(), protects: 0 }
    }

    fn rules() -> ChainRules {
        ChainRules {
            completion_timeout: 60,
            manager: Address::ZERO,
            sortition: false,
            completion_slash: 0,
            worker_fee_bps: 0,
        }
    }

    /// A set with `chain` added on chain (and in `--models`), `listed` on the server and `warm`
    /// warm.
    fn models(chain: &[&str], listed: &[&str], warm: &[&str]) -> Models {
        let mut m = Models {
            flag: chain.iter().map(|n| (*n).to_owned()).collect(),
            api: Api::OpenAi,
            chain: chain.iter().map(|n| ModelId::from_name(n).0).collect(),
            read_at: None,
            chain_known: true,
            listed: Some(listed.iter().map(|n| (*n).to_owned()).collect()),
            warm: warm.iter().map(|n| (ModelId::from_name(n).0, served(n))).collect(),
            unfit: HashMap::new(),
            plan: Plan::default(),
            task: None,
            next_sync: Instant::now(),
            retry_at: Instant::now(),
            told: BTreeSet::new(),
            rules: rules(),
            live: LiveModels::default(),
            network_flag: String::new(),
        };
        m.replan(&BTreeSet::new());
        m
    }

    fn id(name: &str) -> Option<B256> {
        Some(ModelId::from_name(name).0)
    }

    #[test]
    fn only_a_warm_model_on_chain_is_acked_and_one_being_warmed_waits() {
        let m = models(&["a", "b"], &["a", "b"], &["a"]);
        assert_eq!(m.verdict(id("a")), Verdict::Serve);
        assert!(matches!(m.verdict(id("b")), Verdict::Wait(why) if why.contains("being loaded")));
        assert_eq!(m.names(), vec!["a".to_owned()]);
    }

    #[test]
    fn a_removed_model_is_refused_for_good_but_its_open_jobs_keep_their_client() {
        let m = models(&["a"], &["a", "b"], &["a", "b"]);
        assert!(
            matches!(m.verdict(id("b")), Verdict::Refuse(why) if why.contains("removed from this worker on chain"))
        );
        assert!(m.served(&ModelId::from_name("b").0).is_some(), "acked jobs of it still run");
        assert!(matches!(m.verdict(id("c")), Verdict::Refuse(why) if why.contains("not served here")));
        assert!(matches!(m.verdict(None), Verdict::Refuse(_)));
    }

    #[test]
    fn a_model_the_server_does_not_list_waits_with_the_reason() {
        let m = models(&["a"], &["other"], &[]);
        assert!(matches!(m.verdict(id("a")), Verdict::Wait(why) if why.contains("does not serve its model a")));
        assert!(m.report("no model can be served").contains("--alias a"));
    }

    #[test]
    fn a_model_left_cold_for_memory_waits_with_the_refusal() {
        let mut m = models(&["a", "b"], &["a", "b"], &["a"]);
        let why = "the served models do not fit in memory together (each stays loaded): …; do not add b";
        m.collect(Synced { listed: None, warmed: vec![], unloaded: vec![], unfit: vec![("b".into(), why.into())] });
        assert!(matches!(m.verdict(id("b")), Verdict::Wait(w) if w.contains("do not add b")));
        assert_eq!(m.verdict(id("a")), Verdict::Serve);
        // A later sync that loads it serves it.
        m.collect(Synced {
            listed: None,
            warmed: vec![("b".into(), Ok(served("b")))],
            unloaded: vec![],
            unfit: vec![],
        });
        m.replan(&BTreeSet::new());
        assert_eq!(m.verdict(id("b")), Verdict::Serve);
    }

    #[test]
    fn the_fixes_name_the_network() {
        let mut m = models(&["a"], &["other"], &[]);
        m.network_flag = " --network testnet".into();
        let report = m.report("no model can be served");
        assert!(report.contains("remove-models --models a --network testnet"), "{report}");
        m.chain.clear();
        m.replan(&BTreeSet::new());
        let report = m.report("no model can be served");
        assert!(report.contains("`lcw add-models --models a --network testnet`"), "{report}");
        m.flag.clear();
        m.replan(&BTreeSet::new());
        let report = m.report("no model can be served");
        assert!(report.contains("`lcw register --models NAME --network testnet`"), "{report}");
    }

    #[test]
    fn the_shared_served_set_follows_every_plan() {
        let mut m = models(&["a", "b"], &["a", "b"], &["a"]);
        let shared = m.live.clone();
        assert_eq!(shared.names(), vec!["a".to_owned()], "b is still being warmed");
        m.warm.insert(ModelId::from_name("b").0, served("b"));
        m.replan(&BTreeSet::new());
        assert_eq!(shared.ids().len(), 2, "b warm: both served");
        m.chain.remove(&ModelId::from_name("a").0);
        m.replan(&BTreeSet::new());
        assert_eq!(shared.ids(), vec![ModelId::from_name("b").0], "a removed on chain");
    }
}
