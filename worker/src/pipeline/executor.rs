//! The running worker: connections, what it holds per job, what it has seen of the chain, and
//! each pass's plan carried out.

use super::*;

/// The running worker: its connections, what it holds per job and what it has seen of the chain.
pub(super) struct Worker {
    pub(super) config: WorkConfig,
    pub(super) chain: Chain,
    pub(super) me: Address,
    pub(super) conn: rusqlite::Connection,
    pub(super) outbox: Outbox,
    pub(super) claimer: Claimer,
    pub(super) link: Option<Link>,
    pub(super) summary: WorkSummary,
    /// The live model set (chain, LLM server, `--models`).
    pub(super) models: Models,
    pub(super) completion_timeout: u64,
    pub(super) held: HashMap<u64, Held>,
    pub(super) done_tx: mpsc::UnboundedSender<(u64, Outcome)>,
    pub(super) done_rx: mpsc::UnboundedReceiver<(u64, Outcome)>,
    /// LLM slots.
    pub(super) permits: Arc<tokio::sync::Semaphore>,
    /// Prompt fetches at once.
    pub(super) fetches: Arc<tokio::sync::Semaphore>,
    pub(super) clock: ChainClock,
    pub(super) head_seen: Instant,
    pub(super) last_head: Option<Head>,
    pub(super) fees: Option<Fees>,
    pub(super) blob_fee: u128,
    pub(super) balance: Option<u128>,
    pub(super) timings: HashMap<u64, JobTiming>,
    pub(super) ack_blocks: HashMap<u64, u64>,
    pub(super) keys: KeyCache,
    pub(super) told: HashSet<(u64, &'static str)>,
    pub(super) job_secs: f64,
    pub(super) open_secs: f64,
    /// Claims are planned once per (head, indexed block): a request the indexer stores a moment
    /// after the head arrived is planned at once, not a block later.
    pub(super) claims_planned_at: Option<(u64, u64)>,
    /// Jobs the consumer was told (through the gateway) that this worker gave up on.
    pub(super) gave_up: HashSet<u64>,
    /// Why planning claims last failed, once said.
    pub(super) claims_failing: Option<String>,
    /// Whether the LLM server can take a job now.
    pub(super) llm: LlmHealth,
    /// Chain time of this process's first pass: a job submitted before it arrived while lcw was
    /// not running.
    pub(super) started: Option<f64>,
    /// Chain time each job not yet acked was first seen in the store by this process, so that a
    /// job seen too late to ack is put down to what kept it out of sight.
    pub(super) first_seen: HashMap<u64, f64>,
    /// Jobs that timed out in blocks up to this one have been checked for ones this process
    /// never saw (see [`Worker::record_missed`]).
    pub(super) missed_checked: u64,
    /// Jobs refused for good, with the step and why: never planned again, not even as an ack
    /// "unopened" when little time is left. Read back from the store when a job is first seen,
    /// so a restart keeps them.
    pub(super) refused: HashMap<u64, (&'static str, String)>,
    /// The first head this process saw: the store decides nothing about the registration
    /// before its cursor reaches it (see [`super::registration`]).
    pub(super) first_head: Option<u64>,
    /// The block of the worker's `WorkerDeregistered`, once the store shows it.
    pub(super) deregistered: Option<u64>,
    /// The deregistration and what it still owes were said.
    pub(super) deregistration_told: bool,
    /// Jobs counted as refused for good in the metrics (once each).
    pub(super) refusals_counted: HashSet<u64>,
}

impl Worker {
    /// Connects, checks everything a job will need before the first ack, and reconciles the
    /// outbox.
    pub(super) async fn start(config: WorkConfig, shutdown: &watch::Receiver<bool>) -> Result<Worker, WorkerError> {
        let chain = Chain::open(&config.profile, config.rpc_timeout).await?;
        let me = config.signer.address();
        let mut llm = LlmHealth::up();
        // The KZG trusted setup loads on first use (seconds): paid here, not by the first job.
        let kzg = Instant::now();
        tokio::task::spawn_blocking(|| lcw_schema::blob::sidecar(&[b"lcw".as_slice()]))
            .await
            .map_err(|e| WorkerError::Config(format!("loading the KZG setup: {e}")))?
            .map_err(|e| WorkerError::Config(format!("loading the KZG setup: {e}")))?;
        tracing::debug!(ms = kzg.elapsed().as_millis() as u64, "KZG setup loaded");
        let network = Identity::of(&config.profile);
        let conn = Store::connect_as(&config.db, &network)?;
        // Deregistered, the worker has no key on chain any more; it still finishes what it owes.
        let deregistered = lcw_schema::store::rows::WorkerRow::get(&conn, &me)?
            .filter(|r| !r.registered)
            .and_then(|r| r.deregistered_block);
        check_encryption_key(&config, &chain, me, deregistered).await?;
        let rules = ChainRules::read(&config, &chain).await?;
        // The model set must be there, and warm, before any job is acked. A server that is down
        // now holds back new jobs until it answers; nothing to serve stops the worker.
        let stored = lcw_schema::store::rows::WorkerModelRow::of_worker(&conn, &me)?;
        let models = Models::start(&config, &chain, stored, me, deregistered, rules, &mut llm).await?;
        let mut outbox = Outbox::open(&config.db, config.signer.clone(), chain.chain_id, Lane::Worker)?
            .with_filler_cap(config.fee_cap);
        let claimer = Claimer::new(
            Store::connect_as(&config.db, &network)?,
            me,
            models.ids(),
            config.claims.clone(),
            config.fee_cap,
        );
        let link = match &config.gateway {
            Some(g) => Some(Link::start(g.clone(), &config, shutdown)?),
            None => None,
        };
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let reconciled = outbox.reconcile(&chain).await?;
        tracing::info!(
            worker = %me,
            models = ?models.names(),
            concurrency = config.concurrency,
            sortition = rules.sortition,
            session_manager = %rules.manager,
            claims = if config.claims.enabled == Some(false) { "off" } else { config.claims.rule.as_str() },
            gateway = link.as_ref().map(|l| l.gateway.url().to_owned()),
            fee_cap = %config.fee_cap,
            "worker started"
        );
        let slots = config.concurrency.max(1);
        let mut w = Worker {
            chain,
            me,
            conn,
            outbox,
            claimer,
            link,
            summary: WorkSummary::default(),
            models,
            completion_timeout: rules.completion_timeout,
            held: HashMap::new(),
            done_tx,
            done_rx,
            permits: Arc::new(tokio::sync::Semaphore::new(slots)),
            fetches: Arc::new(tokio::sync::Semaphore::new(2 * slots + 2)),
            clock: ChainClock::default(),
            head_seen: Instant::now(),
            last_head: None,
            fees: None,
            blob_fee: 1,
            balance: None,
            timings: HashMap::new(),
            ack_blocks: HashMap::new(),
            keys: HashMap::new(),
            told: HashSet::new(),
            job_secs: config.expected_job_secs,
            open_secs: 2.0,
            claims_planned_at: None,
            gave_up: HashSet::new(),
            claims_failing: None,
            llm,
            started: None,
            first_seen: HashMap::new(),
            missed_checked: 0,
            refused: HashMap::new(),
            first_head: None,
            deregistered: None,
            deregistration_told: false,
            refusals_counted: HashSet::new(),
            config,
        };
        for e in reconciled {
            w.note(&e);
        }
        Ok(w)
    }

    /// Results of background steps.
    pub(super) fn collect(&mut self) {
        while let Ok((job, outcome)) = self.done_rx.try_recv() {
            let Some(held) = self.held.get_mut(&job) else { continue };
            match outcome {
                Outcome::Opened(prompt) => {
                    self.open_secs = 0.8 * self.open_secs + 0.2 * (prompt.fetch + prompt.decrypt).as_secs_f64();
                    held.stage = Local::Opened;
                    held.prompt = Some(prompt);
                }
                Outcome::Answered(ready) => {
                    self.llm.answered();
                    let t = &ready.timing;
                    self.config.metrics.llm(t.inference.as_secs_f64());
                    let secs = (t.fetch + t.decrypt + t.inference + t.encrypt).as_secs_f64();
                    self.job_secs = 0.8 * self.job_secs + 0.2 * secs;
                    held.stage = Local::Ready;
                    held.ready = Some(*ready);
                }
                Outcome::Failed(f) => {
                    if f.llm_down {
                        self.llm.failed(&f.reason);
                    }
                    // A prompt that could not be fetched yet (the node failing) holds the job back
                    // before its ack: recorded for now, so that a job whose ack deadline passes
                    // meanwhile is put down to the node, not to the worker.
                    if matches!(held.stage, Local::Opening) && !f.permanent {
                        let why = format!("{}; not acked until the prompt is fetched", f.reason);
                        if let Err(e) = refusals::put(&self.conn, self.me, job, "node", &why, false, false) {
                            tracing::warn!(job, error = %e, "recording the refusal failed");
                        }
                    }
                    let backoff = Duration::from_millis(250u64 << held.tries.min(5));
                    held.tries += 1;
                    held.retry_at = Instant::now() + backoff;
                    held.stage = Local::Failed { reason: f.reason.clone(), permanent: f.permanent, retry_due: false };
                    if !f.permanent {
                        tracing::warn!(job, reason = %f.reason, "job work failed; retrying while the deadline allows");
                    }
                    let reasons = self.summary.retried.entry(job).or_default();
                    if !reasons.contains(&f.reason) && reasons.len() < 8 {
                        reasons.push(f.reason.clone());
                    }
                    self.summary.failed.insert(job, f.reason);
                }
            }
        }
    }

    /// A head: the chain's clock moves on. Whether it is a new one, to be tracked.
    pub(super) fn observe(&mut self, head: Head) -> bool {
        if self.last_head.map(|h| (h.number, h.hash)) == Some((head.number, head.hash)) {
            return false;
        }
        self.clock.observe(head.number, head.timestamp);
        self.first_head.get_or_insert(head.number);
        self.head_seen = Instant::now();
        self.last_head = Some(head);
        true
    }

    /// What a new head brings: fees, the wallet, and the outbox's receipts and bumps. On a slow
    /// node this takes seconds; the jobs are passed over before it as well as after it.
    pub(super) async fn on_head(&mut self, head: Head) -> Result<(), WorkerError> {
        // Independent reads, at once, each given up after a while (the last value is kept).
        let provider = self.chain.provider();
        let (fees, blob_fee, balance) = tokio::join!(
            tokio::time::timeout(HEAD_READ_BUDGET, self.chain.fees(self.config.min_tip)),
            tokio::time::timeout(HEAD_READ_BUDGET, provider.get_blob_base_fee()),
            tokio::time::timeout(HEAD_READ_BUDGET, self.chain.balance(self.me))
        );
        let slow = || format!("no answer within {} s", HEAD_READ_BUDGET.as_secs());
        match fees {
            Ok(Ok(f)) => self.fees = Some(f),
            Ok(Err(e)) => tracing::warn!(error = %e, "eth_feeHistory failed; keeping the last fees"),
            Err(_) => tracing::warn!(error = slow(), "eth_feeHistory failed; keeping the last fees"),
        }
        if let Ok(Ok(b)) = blob_fee {
            // Room for the blob base fee to double before the completion lands.
            self.blob_fee = b.max(1).saturating_mul(2);
        }
        let balance = balance.unwrap_or_else(|_| Err(ChainError::Rpc(slow())));
        match balance {
            Ok(b) => self.balance = Some(b.try_into().unwrap_or(u128::MAX)),
            Err(e) => tracing::warn!(error = %e, "reading the balance failed; keeping the last one"),
        }
        if let Some(balance) = self.balance {
            let job_cost = self.funds().map(|f| f.ack_cost.saturating_add(f.complete_cost));
            self.config.metrics.wallet(balance, job_cost);
        }
        // Receipts, bumps and gap fills: no new step is started past the budget; the rest
        // waits for the next head (the jobs are passed over in between).
        let until = Instant::now() + TRACK_BUDGET;
        match self.outbox.track_until(&self.chain, &head, self.fees, Some(until)).await {
            Ok(events) => {
                for e in events {
                    self.note(&e);
                }
            }
            Err(ChainError::Rpc(m)) => tracing::warn!(error = %m, "tracking transactions failed; retrying"),
            Err(e) => return Err(e.into()),
        }
        let live =
            self.outbox.counts()?.iter().filter(|(s, _)| matches!(s.as_str(), "intent" | "sent")).map(|(_, n)| n).sum();
        self.config.metrics.set_outbox_live(live);
        Ok(())
    }

    /// One pass over the assignments: plan, then carry the plan out. Returns whether anything
    /// was sent.
    pub(super) async fn pass(&mut self, head: &Head) -> Result<bool, WorkerError> {
        let live_ids = self.outbox.live_by_job()?;
        let live: HashSet<u64> = live_ids.keys().copied().collect();
        // The outbox's own record of recent mined acks and completions wins over the store,
        // which may lag, or show the other side of a reorg the outbox has not noticed yet.
        let recent = head.number.saturating_sub(REORG_WINDOW);
        let ack_mined = self.outbox.mined_since("ack", recent)?;
        let complete_mined = self.outbox.mined_since("complete", recent)?;
        let assignments = obligations::assignments(&self.conn, self.me)?;
        self.read_registration()?;
        let now = Instant::now();
        for h in self.held.values_mut() {
            if let Local::Failed { retry_due, .. } = &mut h.stage {
                *retry_due = now >= h.retry_at;
            }
        }
        self.follow_models(&assignments, &live, &ack_mined)?;
        self.llm.poll(&self.config.llm, &self.models.names());
        let now_chain = head.timestamp as f64 + self.head_seen.elapsed().as_secs_f64();
        let started = *self.started.get_or_insert(now_chain);
        self.record_missed(started);
        for a in assignments.iter().filter(|a| a.state == JobState::Submitted) {
            if !self.first_seen.contains_key(&a.job_id)
                && let Ok(Some(r)) = refusals::get(&self.conn, self.me, a.job_id)
                && r.last
            {
                self.refused.insert(a.job_id, (r.step_name(), r.reason));
            }
        }
        let blockers: Vec<Option<(&'static str, String)>> = assignments.iter().map(|a| self.blocker(a)).collect();
        let waits: Vec<Option<String>> = assignments
            .iter()
            .map(|a| match self.models.verdict(a.model_id) {
                Verdict::Wait(why) => Some(why),
                _ => None,
            })
            .collect();
        let views: Vec<JobView<'_>> = assignments
            .iter()
            .zip(blockers)
            .zip(&waits)
            .map(|((a, blocker), wait)| JobView {
                assignment: a,
                ack_mined: ack_mined.contains(&a.job_id),
                complete_mined: complete_mined.contains(&a.job_id),
                live: live.contains(&a.job_id),
                local: self.held.get(&a.job_id).map(|h| &h.stage),
                blocker,
                hold: self.llm.down().or(wait.as_deref()),
            })
            .collect();
        let busy = self.held.values().filter(|h| matches!(h.stage, Local::Working | Local::Ready)).count();
        let clock = plan::Clock {
            now: head.timestamp as f64 + self.head_seen.elapsed().as_secs_f64(),
            next_ts: self.clock.next_ts(),
            completion_timeout: self.completion_timeout,
            margin: self.config.deadline_margin,
            job_secs: self.job_secs,
            open_secs: self.open_secs,
            concurrency: self.config.concurrency,
        };
        for a in assignments.iter().filter(|a| a.state == JobState::Submitted) {
            self.first_seen.entry(a.job_id).or_insert_with(|| {
                tracing::debug!(
                    job = a.job_id,
                    after_s = clock.now - a.submitted_at as f64,
                    left_s = a.deadline.map(|d| d as f64 - clock.now),
                    "job seen"
                );
                clock.now
            });
        }
        let actions = plan::plan(&views, &clock, self.funds(), busy);
        drop(views);
        let by_id: HashMap<u64, &Assignment> = assignments.iter().map(|a| (a.job_id, a)).collect();
        let mut sent_any = false;
        let mut unsent: HashSet<u64> = HashSet::new();
        for action in actions {
            match action {
                Action::Open { job, budget } => self.open(by_id[&job], budget),
                Action::Ack { job, unopened } => {
                    if self.ack(by_id[&job], head, unopened).await {
                        sent_any = true;
                    } else {
                        unsent.insert(job);
                    }
                }
                Action::Work { job, budget } if !unsent.contains(&job) => self.work(by_id[&job], budget),
                Action::Work { .. } => {}
                Action::Complete { job } => sent_any |= self.complete(by_id[&job], head).await,
                Action::Cancel { job, reason } => {
                    if let Some(id) = live_ids.get(&job) {
                        self.cancel(by_id[&job], *id, &reason).await;
                    }
                }
                Action::Refuse { job, what, reason, last } => self.refuse(by_id[&job], what, &reason, last),
            }
        }
        // What the worker holds for jobs that are no longer its own (completed, timed out,
        // reassigned) is let go, answers included.
        let assigned: HashSet<u64> = assignments.iter().map(|a| a.job_id).collect();
        self.held.retain(|job, _| assigned.contains(job) || live.contains(job));
        self.first_seen.retain(|job, _| assigned.contains(job));
        self.refused.retain(|job, _| assigned.contains(job));
        self.refusals_counted.retain(|job| assigned.contains(job));
        Ok(sent_any)
    }

    /// The model set follows the chain and the LLM server (see [`super::models`]). A model is
    /// busy while a job of it is acked and not completed, or its ack is in flight.
    fn follow_models(
        &mut self,
        assignments: &[Assignment],
        live: &HashSet<u64>,
        ack_mined: &HashSet<u64>,
    ) -> Result<(), WorkerError> {
        let busy: std::collections::BTreeSet<B256> = assignments
            .iter()
            .filter(|a| a.state != JobState::Submitted || live.contains(&a.job_id) || ack_mined.contains(&a.job_id))
            .filter_map(|a| a.model_id)
            .collect();
        let tick = Tick {
            config: &self.config,
            chain: &self.chain,
            conn: &self.conn,
            me: self.me,
            first_head: self.first_head,
            deregistered: self.deregistered.is_some(),
            busy: &busy,
            llm_down: self.llm.down().is_some(),
        };
        if self.models.tick(tick)? {
            self.claimer.set_models(self.models.ids());
        }
        Ok(())
    }

    /// Records why the jobs that timed out unacked before this process could see them were
    /// missed: their ack deadline passed before it started (`offline`: lcw was not running), or
    /// while it ran but before the store showed the job (`node`: the node or the indexer reading
    /// it was behind). A job this process saw is left alone: whatever kept it from an ack is
    /// recorded where it happened, or nowhere if lcw itself failed. Without this such a job would
    /// have no reason at all.
    fn record_missed(&mut self, started: f64) {
        let missed = match refusals::missed(&self.conn, self.me, self.missed_checked) {
            Ok(m) => m,
            Err(e) => return tracing::warn!(error = %e, "reading the jobs that timed out failed"),
        };
        let Some(last) = missed.last() else { return };
        self.missed_checked = last.timed_out_block;
        let (mut offline, mut late) = (Vec::new(), Vec::new());
        for m in missed.iter().filter(|m| !self.first_seen.contains_key(&m.job_id)) {
            let (step, why) = match m.deadline {
                Some(deadline) if deadline as f64 <= started => (
                    "offline",
                    format!(
                        "its ack deadline ({deadline}) passed while lcw was not running: it started {:.0} s after \
                         the job's submission",
                        started - m.submitted_at as f64
                    ),
                ),
                _ => (
                    "node",
                    format!(
                        "the store showed it only once it had timed out (block {}): the node or the indexer \
                         reading it was behind",
                        m.timed_out_block
                    ),
                ),
            };
            if let Err(e) = refusals::put(&self.conn, self.me, m.job_id, step, &why, true, false) {
                tracing::warn!(job = m.job_id, error = %e, "recording the refusal failed");
            }
            self.config.metrics.refused(step);
            if step == "offline" { offline.push(m.job_id) } else { late.push(m.job_id) }
        }
        if !offline.is_empty() {
            tracing::warn!(jobs = ?offline, "jobs timed out unacked while lcw was not running (recorded, step offline)");
        }
        if !late.is_empty() {
            tracing::warn!(
                jobs = ?late,
                "jobs timed out unacked before the store showed them (recorded, step node)"
            );
        }
    }

    /// Sortition: once per (head, indexed block), after the jobs owed have been looked after.
    pub(super) async fn claims(&mut self, head: &Head) -> bool {
        let indexed = obligations::cursor(&self.conn).unwrap_or_default();
        if self.claims_planned_at == Some((head.number, indexed)) {
            return false;
        }
        self.claims_planned_at = Some((head.number, indexed));
        let Some(fees) = self.fees else { return false };
        let in_progress = self.held.values().filter(|h| matches!(h.stage, Local::Working | Local::Ready)).count();
        let busy = in_progress >= self.config.concurrency.max(1);
        // A session claimed while the LLM server is down brings jobs it cannot serve.
        let llm_down = self.llm.down().is_some();
        // A deregistered worker claims nothing (the claim would revert: it is not eligible).
        let claiming = if self.deregistered.is_some() {
            Ok(Default::default())
        } else {
            self.claimer.tick(&mut self.outbox, &self.chain, head, &self.clock, fees, busy, llm_down).await
        };
        let sent = match claiming {
            Ok(t) => {
                self.claims_failing = None;
                self.config.metrics.claims(&self.claimer.stats);
                t.sent > 0
            }
            Err(e) => {
                // Said once per distinct reason: a store indexed from after the deployment lacks
                // the sortition parameters for as long as it runs.
                let why = e.to_string();
                if self.claims_failing.as_deref() != Some(why.as_str()) {
                    tracing::warn!(error = %why, "planning claims failed; retrying on every head");
                    self.claims_failing = Some(why);
                }
                false
            }
        };
        if let Some(link) = &self.link {
            link.update(&self.conn, self.me, in_progress);
        }
        sent
    }

    /// Accounts for an outbox event.
    pub(super) fn note(&mut self, e: &Tracked) {
        match e {
            Tracked::Mined { kind, block, jobs, .. } if kind == "ack" => {
                self.summary.acked += jobs.len() as u64;
                self.config.metrics.acked(jobs.len());
                for j in jobs {
                    self.ack_blocks.insert(*j, *block);
                }
            }
            Tracked::Mined { kind, block, jobs, .. } if kind == "complete" => {
                self.summary.completed += jobs.len() as u64;
                self.config.metrics.completed(jobs.len());
                for j in jobs {
                    tracing::info!(job = j, block, "completed");
                    self.summary.failed.remove(j);
                    // Every map forgets the job once it is completed (a long run keeps none growing).
                    self.held.remove(j);
                    let ack_block = self.ack_blocks.remove(j);
                    if let Some(mut t) = self.timings.remove(j) {
                        t.complete_block = Some(*block);
                        t.ack_block = ack_block;
                        self.summary.timings.push(t);
                    }
                }
            }
            // A claim that reverts lost the race (or came too late): the claimer records it.
            Tracked::Reverted { id, kind, block, .. } if kind == "claim" => {
                tracing::debug!(id, block, "a claim reverted");
            }
            Tracked::Reverted { id, kind, block, jobs } => {
                self.summary.reverted += 1;
                self.config.metrics.reverted();
                tracing::error!(id, kind, block, ?jobs, "a worker transaction reverted");
                // Sending the same again would revert again: the job is given up.
                for j in jobs {
                    let reason = format!("its {kind} reverted in block {block}");
                    let held = self.held.entry(*j).or_insert_with(|| Held::new(Local::Working));
                    held.stage = Local::Failed { reason, permanent: true, retry_due: true };
                }
            }
            _ => {}
        }
    }

    pub(super) fn finish(mut self) -> WorkSummary {
        self.summary.claims = self.claimer.stats.clone();
        let mut rest: Vec<JobTiming> = self.timings.into_values().filter(|t| t.complete_block.is_some()).collect();
        self.summary.timings.append(&mut rest);
        self.summary.timings.sort_by_key(|t| t.job_id);
        self.summary
    }
}
