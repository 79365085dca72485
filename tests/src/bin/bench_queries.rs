//! `bench-queries` (`make bench-queries`): latency and throughput of the GraphQL API on a store
//! holding `--jobs` jobs (1,000,000 by default), under concurrent load from wrk.
//!
//! Part 1 builds the store without a chain: simulating a million jobs on anvil takes hours, so a
//! seeded generator writes 30 days of synthetic raw logs (12 s blocks) exactly as the indexer
//! stores them: AIConfig parameters, models, ~100 workers with their stake in `tx_values`,
//! sessions, then jobs that are acknowledged, completed and released (by a keeper or the worker
//! itself), a share timing out (slash, refund, keeper bounty), a share disputed (guilty, not
//! guilty, defaulted), stake top-ups, suspensions, daily withdrawals. Jobs near the head are
//! still open, so exit plans and the release queue hold real obligations. Every log is ABI-encoded
//! from the `sol!` bindings and named by the indexer's own decoder; the projections are then built
//! by the indexer's replay (`lcw_indexer::replay::rebuild`), never by hand-written SQL.
//!
//! Part 2 starts `lcw serve` on the store, checks each query once (a response with `errors` or
//! null data stops the benchmark), then runs wrk against each: `job(id)` with a random id per
//! request, `jobs(worker, first: 50)` and `exitPlan(worker)` with a random worker per request, and
//! network-wide daily `earnings` over 30 days. It prints the flags `lcw serve` ran with,
//! requests/s, p50, p90 and p99 per query and the server's peak RSS. Figures only: nothing here
//! asserts a timing, but a query that answered errors under load (timeouts) is marked invalid and
//! the run exits non-zero, since the latency of error responses means nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, Bytes, Log, U256, keccak256};
use alloy::sol_types::SolEvent;
use anyhow::{Context, bail, ensure};
use clap::Parser;
use lcw_indexer::decode::Decoder;
use lcw_schema::bindings::{AIConfig, JobRegistry, WorkerRegistry};
use lcw_schema::profile::Contracts;
use lcw_schema::store::raw::{BlockRow, Cursor, LogInserter, RangeRow, RawLog};
use lcw_schema::store::{Identity, Store};
use lcw_tests::graphql_load::{
    LoadResult, check_query, queries, run_wrk, serve_flags, targets, warm_page_cache, wrk_script,
};
use rand::distributions::{Distribution, WeightedIndex};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Parser)]
#[command(name = "bench-queries", about = "GraphQL latency and throughput on a store with a million jobs")]
struct Args {
    /// Jobs in the generated store.
    #[arg(long, default_value_t = 1_000_000)]
    jobs: u64,
    /// The store (default: lcw-bench-queries/jobs-<N>.db under the temp dir).
    #[arg(long)]
    db: Option<PathBuf>,
    /// Use the store at --db as it is when it exists, instead of generating it again.
    #[arg(long)]
    reuse: bool,
    /// Seconds of load per query.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of unmeasured load per query before the measured run.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Open HTTP connections (wrk -c).
    #[arg(long, default_value_t = 16)]
    connections: u64,
    /// Load generator threads (wrk -t).
    #[arg(long, default_value_t = 2)]
    threads: u64,
    /// The lcw binary (default: the lcw next to this binary, i.e. target/release/lcw).
    #[arg(long)]
    lcw: Option<PathBuf>,
    /// Registered workers in the generated history.
    #[arg(long, default_value_t = 100)]
    workers: usize,
    /// Days of history the jobs are spread over.
    #[arg(long, default_value_t = 30)]
    days: u64,
    /// Dispute window of the generated history, in seconds (jobs completed within it of the head
    /// are still open).
    #[arg(long, default_value_t = 7_200)]
    dispute_window: u64,
    /// Seed of the generator (the same seed gives the same history, ending at the current time).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Build (or reuse) the store and stop: no server, no load.
    #[arg(long)]
    no_load: bool,
    /// Also replay the finished store into a scratch copy and require equal projections (the
    /// `lcw replay` check; doubles the build time).
    #[arg(long)]
    check: bool,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

// ------------------------------------------------------------------------------------------------
// The synthetic network: parameters (AIConfig defaults unless noted).

const BLOCK_SECS: u64 = 12;
const BLOCKS_PER_DAY: u64 = 86_400 / BLOCK_SECS;
/// Blocks before the first job: configuration, models, worker registrations.
const SETUP_BLOCKS: u64 = 20;
/// Blocks below the head that were followed live (undo images, parent hashes, a row each).
const LIVE_BLOCKS: u64 = 64;
/// Logs per generator transaction.
const COMMIT_LOGS: u64 = 250_000;
const ACK_TIMEOUT: u64 = 90;
const COMPLETION_TIMEOUT: u64 = 120;
/// Shorter than the 24 h default so a defaulted dispute resolves within a day.
const RESOLUTION_TIMEOUT: u64 = 4 * 3_600;
const BPS: u64 = 10_000;
const WORKER_FEE_BPS: u64 = 8_000;
const PROTOCOL_FEE_BPS: u64 = 1_500;
const FEE_POOL_BPS: u64 = 500;
const RELEASE_BOUNTY_BPS: u64 = 100;
const TIMEOUT_BOUNTY_BPS: u64 = 1_000;
const TIMEOUT_SLASH_BPS: u64 = 200;
const COMPLETION_TIMEOUT_SLASH_BPS: u64 = 500;
const DISPUTE_SLASH_BPS: u64 = 1_500;
const DISPUTE_BOND_MULTIPLIER: u64 = 2;
const MIN_STAKE_ETHER: u64 = 5_000;
/// Raised from 3 / 24 h: at the generated timeout rate the defaults would suspend every worker
/// for most of the month.
const SUSPENSION_THRESHOLD: u32 = 20;
const SUSPENSION_COOLDOWN: u64 = 3_600;
/// Raised from 16: a worker holds every job of the last dispute window.
const MAX_CONCURRENT_JOBS: u64 = 256;
/// Jobs per releaseJobs batch.
const RELEASE_BATCH: usize = 50;
/// Outcomes per thousand jobs; the rest are released without a dispute.
const ACK_TIMEOUT_PER_MILLE: u32 = 12;
const COMPLETION_TIMEOUT_PER_MILLE: u32 = 8;
const DISPUTED_PER_MILLE: u32 = 15;
/// Share of undisputed releases sent by a keeper (the rest by the worker, later and without a
/// bounty), per thousand.
const KEEPER_RELEASE_PER_MILLE: u32 = 700;
const MODELS: [(&str, u64); 4] = [
    ("llama-3.1-8b-instruct", 500_000_000_000_000),
    ("qwen2.5-7b-instruct", 800_000_000_000_000),
    ("mistral-7b-instruct-v0.3", 1_000_000_000_000_000),
    ("deepseek-r1-distill-qwen-7b", 2_000_000_000_000_000),
];
const CONSUMERS: u64 = 2_000;

fn ether(n: u64) -> U256 {
    U256::from(n) * U256::from(1_000_000_000_000_000_000u128)
}

fn bps(amount: U256, bps: u64) -> U256 {
    amount * U256::from(bps) / U256::from(BPS)
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A deterministic pseudo-random 32-byte value for (tag, a, b): block and transaction hashes,
/// response hashes. Cheaper than keccak and as unique for this purpose.
fn synth(tag: u64, a: u64, b: u64) -> B256 {
    let mut s = splitmix(splitmix(splitmix(tag) ^ a) ^ b);
    let mut out = [0u8; 32];
    for chunk in out.chunks_mut(8) {
        s = splitmix(s);
        chunk.copy_from_slice(&s.to_be_bytes());
    }
    B256::from(out)
}

const TAG_BLOCK: u64 = 1;
const TAG_TX: u64 = 2;
const TAG_ADDRESS: u64 = 3;
const TAG_RESPONSE: u64 = 4;
const TAG_KEY: u64 = 5;

fn synth_address(kind: u64, i: u64) -> Address {
    Address::from_slice(&synth(TAG_ADDRESS, kind, i)[12..])
}

fn block_hash(number: u64) -> B256 {
    synth(TAG_BLOCK, number, 0)
}

fn contracts() -> Contracts {
    Contracts {
        worker_registry: synth_address(0, 1),
        job_registry: synth_address(0, 2),
        ai_config: synth_address(0, 3),
    }
}

// ------------------------------------------------------------------------------------------------
// The raw layer writer: blocks, transactions and logs, named by the indexer's decoder.

struct Chain<'c> {
    conn: &'c Connection,
    logs: LogInserter<'c>,
    decoder: Decoder,
    /// Blocks above it were "followed live": a row each, with the parent hash.
    floor: u64,
    block: u64,
    time: u64,
    txs: u64,
    tx_hash: B256,
    log_index: u64,
    block_logs: u64,
    batch_logs: u64,
    total_logs: u64,
    counts: BTreeMap<&'static str, u64>,
}

impl<'c> Chain<'c> {
    fn new(conn: &'c Connection, floor: u64) -> anyhow::Result<Self> {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(Chain {
            conn,
            logs: LogInserter::new(conn)?,
            decoder: Decoder::new(contracts()),
            floor,
            block: 0,
            time: 0,
            txs: 0,
            tx_hash: B256::ZERO,
            log_index: 0,
            block_logs: 0,
            batch_logs: 0,
            total_logs: 0,
            counts: BTreeMap::new(),
        })
    }

    fn next_block(&mut self, number: u64, time: u64) -> anyhow::Result<()> {
        self.close_block()?;
        (self.block, self.time, self.txs, self.log_index, self.block_logs) = (number, time, 0, 0, 0);
        Ok(())
    }

    /// Records the current block (when it has logs or was followed live) and commits every
    /// `COMMIT_LOGS` logs, at block boundaries.
    fn close_block(&mut self) -> anyhow::Result<()> {
        if self.block == 0 {
            return Ok(());
        }
        let live = self.block > self.floor;
        if self.block_logs > 0 || live {
            BlockRow {
                number: self.block,
                hash: block_hash(self.block),
                parent_hash: live.then(|| block_hash(self.block - 1)),
                timestamp: self.time,
                log_count: self.block_logs,
            }
            .put(self.conn)?;
        }
        if self.batch_logs >= COMMIT_LOGS {
            self.conn.execute_batch("COMMIT; BEGIN IMMEDIATE")?;
            self.batch_logs = 0;
        }
        Ok(())
    }

    /// Starts a transaction in the current block; the logs emitted next belong to it.
    fn tx(&mut self) -> B256 {
        self.tx_hash = synth(TAG_TX, self.block, self.txs);
        self.txs += 1;
        self.tx_hash
    }

    fn emit<E: SolEvent>(&mut self, address: Address, event: &E) -> anyhow::Result<()> {
        let log = Log { address, data: event.encode_log_data() };
        let decoded = self.decoder.decode(&log);
        let name = match (decoded.name, &decoded.event) {
            (Some(name), Ok(_)) => name,
            (_, Err(reason)) => bail!("generated an undecodable {} log: {reason}", E::SIGNATURE),
            (None, Ok(_)) => bail!("generated a {} log the decoder does not name", E::SIGNATURE),
        };
        *self.counts.entry(name).or_default() += 1;
        let (topics, data) = log.data.split();
        self.logs.insert(RawLog {
            block_number: self.block,
            log_index: self.log_index,
            block_hash: block_hash(self.block),
            block_timestamp: self.time,
            tx_hash: self.tx_hash,
            tx_index: self.txs.saturating_sub(1),
            address,
            topics,
            data,
            event: Some(name.to_owned()),
            decode_error: None,
            job_id: decoded.job_id,
        })?;
        self.log_index += 1;
        self.block_logs += 1;
        self.batch_logs += 1;
        self.total_logs += 1;
        Ok(())
    }

    /// Writes the last block, the covered ranges (backfill up to the floor, live above it), the
    /// cursor and the undo floor, and commits.
    fn finish(mut self, head: u64) -> anyhow::Result<(u64, BTreeMap<&'static str, u64>)> {
        self.close_block()?;
        self.logs.finish()?;
        let conn = self.conn;
        let count = |from: u64, to: u64| RawLog::count(conn, from, to);
        RangeRow { from_block: 1, to_block: self.floor, log_count: count(1, self.floor)?, source: "backfill".into() }
            .insert(conn)?;
        RangeRow::extend_live(conn, self.floor + 1, head, count(self.floor + 1, head)?)?;
        Cursor { block_number: head, block_hash: block_hash(head), finalized_number: self.floor }.set(conn)?;
        lcw_schema::store::meta_set(conn, lcw_indexer::writer::UNDO_FLOOR, &self.floor.to_string())?;
        conn.execute_batch("COMMIT")?;
        Ok((self.total_logs, self.counts))
    }
}

// ------------------------------------------------------------------------------------------------
// The simulation: who does what when.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Released { by_keeper: bool },
    AckTimeout,
    CompletionTimeout,
    Guilty,
    NotGuilty,
    Defaulted,
}

/// The on-chain id of the session at `index` in [`Sim::sessions`] (ids start at 1).
fn session_id(index: u32) -> u64 {
    u64::from(index) + 1
}

#[derive(Debug, Clone, Copy)]
struct JobSim {
    worker: u32,
    session: u32,
    outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Ack(u64),
    Complete(u64),
    Timeout(u64),
    Dispute(u64),
    Resolve(u64),
    TopUp(u32),
    Reinstate(u32),
    Withdraw(u32),
    Close(u32),
    /// Batched per sender (keeper or worker) and block; last in the order so the batches can be
    /// split off after sorting.
    Release(u64),
}

#[derive(Debug)]
struct WorkerSim {
    address: Address,
    models: Vec<usize>,
    stake: U256,
    balance: U256,
    offenses: u32,
    suspended_until: u64,
    session: Option<u32>,
    top_up_pending: bool,
}

#[derive(Debug)]
struct SessionSim {
    user: Address,
    model: usize,
    jobs_left: u32,
}

struct Sim<'c> {
    chain: Chain<'c>,
    rng: StdRng,
    contracts: Contracts,
    keeper: Address,
    disputer: Address,
    window: u64,
    head: u64,
    first_time: u64,
    models: Vec<(B256, U256)>,
    workers: Vec<WorkerSim>,
    load: WeightedIndex<u32>,
    sessions: Vec<SessionSim>,
    jobs: Vec<JobSim>,
    schedule: BTreeMap<u64, Vec<Action>>,
}

impl Sim<'_> {
    fn time_of(&self, block: u64) -> u64 {
        self.first_time + (block - 1) * BLOCK_SECS
    }

    /// The first block whose timestamp is at or after `t`.
    fn block_at(&self, t: u64) -> u64 {
        1 + t.saturating_sub(self.first_time).div_ceil(BLOCK_SECS)
    }

    /// Schedules `action` at `block` (at the earliest the next block); actions past the head
    /// never happen, which is what leaves the newest jobs open.
    fn at(&mut self, block: u64, action: Action) {
        let block = block.max(self.chain.block + 1);
        if block <= self.head {
            self.schedule.entry(block).or_default().push(action);
        }
    }

    fn job(&self, id: u64) -> JobSim {
        self.jobs[(id - 1) as usize]
    }

    fn fee(&self, job: &JobSim) -> U256 {
        self.models[self.sessions[job.session as usize].model].1
    }

    fn run(&mut self, total_jobs: u64) -> anyhow::Result<()> {
        let first_job_block = SETUP_BLOCKS;
        let span = (self.head - first_job_block + 1) as u128;
        let mut next_job = 1u64;
        let mut last_report = Instant::now();
        for block in 1..=self.head {
            let time = self.time_of(block);
            self.chain.next_block(block, time)?;
            match block {
                1 => self.configure()?,
                2 => self.register_models()?,
                3..SETUP_BLOCKS => self.register_workers(block)?,
                _ => {}
            }
            if let Some(actions) = self.schedule.remove(&block) {
                self.run_actions(actions)?;
            }
            if block >= first_job_block {
                let i = (block - first_job_block) as u128;
                let due = ((i + 1) * total_jobs as u128 / span) as u64;
                while next_job <= due {
                    self.submit(next_job)?;
                    next_job += 1;
                }
            }
            if last_report.elapsed() > Duration::from_secs(10) {
                last_report = Instant::now();
                eprintln!("  block {block}/{}: {} jobs, {} logs", self.head, next_job - 1, self.chain.total_logs);
            }
        }
        Ok(())
    }

    fn configure(&mut self) -> anyhow::Result<()> {
        use AIConfig as C;
        let (a, n) = (self.contracts.ai_config, U256::from);
        self.chain.tx();
        self.chain.emit(a, &C::DispatcherAddressUpdated { newDispatcher: synth_address(1, 1) })?;
        self.chain.emit(a, &C::DisputerAddressUpdated { newDisputer: self.disputer })?;
        self.chain.emit(
            a,
            &C::DisputeParamsUpdated {
                bondMultiplier: n(DISPUTE_BOND_MULTIPLIER),
                window: n(self.window),
                resolutionTimeout: n(RESOLUTION_TIMEOUT),
            },
        )?;
        self.chain.emit(
            a,
            &C::FeeDistributionUpdated {
                workerBps: n(WORKER_FEE_BPS),
                protocolBps: n(PROTOCOL_FEE_BPS),
                feePoolBps: n(FEE_POOL_BPS),
            },
        )?;
        self.chain.emit(
            a,
            &C::KeeperParamsUpdated {
                timeoutBountyBps: n(TIMEOUT_BOUNTY_BPS),
                releaseBountyBps: n(RELEASE_BOUNTY_BPS),
            },
        )?;
        self.chain.emit(
            a,
            &C::SlashingParamsUpdated {
                timeoutSlashBps: n(TIMEOUT_SLASH_BPS),
                completionTimeoutSlashBps: n(COMPLETION_TIMEOUT_SLASH_BPS),
                disputeSlashBps: n(DISPUTE_SLASH_BPS),
            },
        )?;
        self.chain.emit(
            a,
            &C::SuspensionParamsUpdated {
                threshold: n(u64::from(SUSPENSION_THRESHOLD)),
                cooldown: n(SUSPENSION_COOLDOWN),
            },
        )?;
        self.chain.emit(a, &C::MinWorkerStakeUpdated { newStake: ether(MIN_STAKE_ETHER) })?;
        self.chain.emit(a, &C::MaxConcurrentJobsUpdated { value: n(MAX_CONCURRENT_JOBS) })?;
        self.chain.emit(a, &C::ClaimWindowBlocksUpdated { value: n(10) })?;
        for (param, value) in [
            ("ackTimeout", ACK_TIMEOUT),
            ("minAckTimeout", 1),
            ("completionTimeout", COMPLETION_TIMEOUT),
            ("minDisputeWindow", 1),
            ("minResolutionTimeout", 1),
            ("sessionInactivityTimeout", 3_600),
            ("blobRetentionPeriod", 18 * 86_400),
            ("maxSlashBps", 5_000),
            ("similarityThreshold", 8_000),
        ] {
            self.chain.emit(a, &C::InfraParamsUpdated { param: param.into(), value: n(value) })?;
        }
        Ok(())
    }

    fn register_models(&mut self) -> anyhow::Result<()> {
        for (name, fee) in MODELS {
            let id = keccak256(name.as_bytes());
            self.models.push((id, U256::from(fee)));
            self.chain.tx();
            self.chain.emit(
                self.contracts.ai_config,
                &AIConfig::ModelRegistered { modelId: id, fee: U256::from(fee), maxOutputTokens: U256::from(4_096) },
            )?;
            self.chain.tx();
            self.chain.emit(self.contracts.worker_registry, &WorkerRegistry::ModelWhitelisted { modelId: id })?;
        }
        Ok(())
    }

    /// Registers the workers over the setup blocks, each with its stake as the transaction value
    /// (which the indexer stores in `tx_values`) and one to three models.
    fn register_workers(&mut self, block: u64) -> anyhow::Result<()> {
        let per_block = self.workers.len().div_ceil((SETUP_BLOCKS - 3) as usize);
        let from = (block - 3) as usize * per_block;
        for w in from..(from + per_block).min(self.workers.len()) {
            let address = self.workers[w].address;
            let stake = ether(self.rng.gen_range(2..=4) * MIN_STAKE_ETHER);
            let tx = self.chain.tx();
            let key = Bytes::copy_from_slice(synth(TAG_KEY, w as u64, 0).as_slice());
            self.chain.emit(
                self.contracts.worker_registry,
                &WorkerRegistry::WorkerRegistered { worker: address, encryptionPubKey: key },
            )?;
            lcw_schema::store::raw::put_tx_value(self.chain.conn, &tx, block, &stake)?;
            self.workers[w].stake = stake;
            let mut models: Vec<usize> = (0..self.models.len()).collect();
            for _ in 0..self.models.len() - self.rng.gen_range(1..=3) {
                models.swap_remove(self.rng.gen_range(0..models.len()));
            }
            for &m in &models {
                self.chain.tx();
                self.chain.emit(
                    self.contracts.worker_registry,
                    &WorkerRegistry::ModelAdded { worker: address, modelId: self.models[m].0 },
                )?;
            }
            self.workers[w].models = models;
            let first_withdrawal = SETUP_BLOCKS + self.rng.gen_range(0..BLOCKS_PER_DAY);
            self.at(first_withdrawal, Action::Withdraw(w as u32));
        }
        Ok(())
    }

    fn run_actions(&mut self, mut actions: Vec<Action>) -> anyhow::Result<()> {
        // Everything but releases is one transaction per action; releases go in releaseJobs
        // batches, one series per sender (the keeper, or each worker).
        let sender = |sim: &Sim<'_>, job: u64| -> u32 {
            let j = sim.job(job);
            match j.outcome {
                Outcome::Released { by_keeper: false } => j.worker + 1,
                _ => 0,
            }
        };
        actions.sort_unstable();
        let split = actions.partition_point(|a| !matches!(a, Action::Release(_)));
        let mut releases: Vec<(u32, u64)> = actions[split..]
            .iter()
            .filter_map(|a| if let Action::Release(job) = a { Some((sender(self, *job), *job)) } else { None })
            .collect();
        actions.truncate(split);
        for action in actions {
            self.chain.tx();
            match action {
                Action::Ack(job) => self.ack(job)?,
                Action::Complete(job) => self.complete(job)?,
                Action::Timeout(job) => self.time_out(job)?,
                Action::Dispute(job) => self.dispute(job)?,
                Action::Resolve(job) => self.resolve(job)?,
                Action::TopUp(w) => self.top_up(w)?,
                Action::Reinstate(w) => self.reinstate(w)?,
                Action::Withdraw(w) => self.withdraw(w)?,
                Action::Close(s) => self.chain.emit(
                    self.contracts.job_registry,
                    &JobRegistry::SessionClosed { sessionId: U256::from(session_id(s)) },
                )?,
                Action::Release(_) => unreachable!("releases were split off"),
            }
        }
        releases.sort_unstable();
        for group in releases.chunk_by(|a, b| a.0 == b.0) {
            for batch in group.chunks(RELEASE_BATCH) {
                self.chain.tx();
                for &(sender, job) in batch {
                    self.release(job, sender == 0)?;
                }
            }
        }
        Ok(())
    }

    fn pick_worker(&mut self) -> u32 {
        let now = self.chain.time;
        for _ in 0..64 {
            let w = self.load.sample(&mut self.rng);
            if self.workers[w].suspended_until <= now {
                return w as u32;
            }
        }
        self.load.sample(&mut self.rng) as u32
    }

    fn open_session(&mut self, w: u32) -> anyhow::Result<u32> {
        let worker = &self.workers[w as usize];
        let model = worker.models[self.rng.gen_range(0..worker.models.len())];
        let user = synth_address(2, self.rng.gen_range(0..CONSUMERS));
        let id = self.sessions.len() as u32;
        let jobs_left = self.rng.gen_range(20..=200);
        self.sessions.push(SessionSim { user, model, jobs_left });
        self.chain.tx();
        let wrap =
            |tag: u64| Bytes::copy_from_slice(&[synth(TAG_KEY, tag, u64::from(id)).as_slice(); 3].concat()[..92]);
        self.chain.emit(
            self.contracts.job_registry,
            &JobRegistry::SessionCreated {
                sessionId: U256::from(session_id(id)),
                user,
                modelId: self.models[model].0,
                worker: worker.address,
                encWorkerKey: wrap(1),
                encDisputerKey: wrap(2),
            },
        )?;
        let deposit = self.models[model].1 * U256::from(jobs_left);
        self.chain.emit(
            self.contracts.job_registry,
            &JobRegistry::Deposited { user, amount: deposit, newBalance: deposit },
        )?;
        self.workers[w as usize].session = Some(id);
        Ok(id)
    }

    fn submit(&mut self, job: u64) -> anyhow::Result<()> {
        let w = self.pick_worker();
        let session = match self.workers[w as usize].session {
            Some(s) => s,
            None => self.open_session(w)?,
        };
        let roll = self.rng.gen_range(0..1_000u32);
        let outcome = if roll < ACK_TIMEOUT_PER_MILLE {
            Outcome::AckTimeout
        } else if roll < ACK_TIMEOUT_PER_MILLE + COMPLETION_TIMEOUT_PER_MILLE {
            Outcome::CompletionTimeout
        } else if roll < ACK_TIMEOUT_PER_MILLE + COMPLETION_TIMEOUT_PER_MILLE + DISPUTED_PER_MILLE {
            match self.rng.gen_range(0..5) {
                0 | 1 => Outcome::Guilty,
                2 | 3 => Outcome::NotGuilty,
                _ => Outcome::Defaulted,
            }
        } else {
            Outcome::Released { by_keeper: self.rng.gen_range(0..1_000) < KEEPER_RELEASE_PER_MILLE }
        };
        self.jobs.push(JobSim { worker: w, session, outcome });
        self.chain.tx();
        self.chain.emit(
            self.contracts.job_registry,
            &JobRegistry::JobSubmitted {
                jobId: U256::from(job),
                sessionId: U256::from(session_id(session)),
                worker: self.workers[w as usize].address,
            },
        )?;
        let now = self.chain.block;
        if outcome == Outcome::AckTimeout {
            let deadline = self.chain.time + ACK_TIMEOUT;
            let at = self.block_at(deadline + 1) + self.rng.gen_range(0..=3);
            self.at(at, Action::Timeout(job));
        } else {
            let at = now + self.rng.gen_range(1..=3);
            self.at(at, Action::Ack(job));
        }
        let s = &mut self.sessions[session as usize];
        s.jobs_left -= 1;
        if s.jobs_left == 0 {
            self.workers[w as usize].session = None;
            let at = now + self.rng.gen_range(300..=900);
            self.at(at, Action::Close(session));
        }
        Ok(())
    }

    fn ack(&mut self, job: u64) -> anyhow::Result<()> {
        let j = self.job(job);
        let worker = self.workers[j.worker as usize].address;
        self.chain
            .emit(self.contracts.job_registry, &JobRegistry::JobAcknowledged { jobId: U256::from(job), worker })?;
        let now = self.chain.block;
        if j.outcome == Outcome::CompletionTimeout {
            let deadline = self.chain.time + COMPLETION_TIMEOUT;
            let at = self.block_at(deadline + 1) + self.rng.gen_range(0..=3);
            self.at(at, Action::Timeout(job));
        } else {
            let at = now + self.rng.gen_range(1..=8);
            self.at(at, Action::Complete(job));
        }
        Ok(())
    }

    fn complete(&mut self, job: u64) -> anyhow::Result<()> {
        let j = self.job(job);
        let worker = self.workers[j.worker as usize].address;
        self.chain.emit(
            self.contracts.job_registry,
            &JobRegistry::JobCompleted {
                jobId: U256::from(job),
                worker,
                responseBlobHash: synth(TAG_RESPONSE, job, 0),
                responseCiphertextHash: synth(TAG_RESPONSE, job, 1),
            },
        )?;
        let releasable = self.block_at(self.chain.time + self.window);
        match j.outcome {
            Outcome::Released { by_keeper: true } => {
                let at = releasable + self.rng.gen_range(0..=1);
                self.at(at, Action::Release(job));
            }
            Outcome::Released { by_keeper: false } => {
                let at = releasable + self.rng.gen_range(0..=300);
                self.at(at, Action::Release(job));
            }
            _ => {
                let latest = (self.window / BLOCK_SECS).max(2) - 1;
                let at = self.chain.block + self.rng.gen_range(1..=latest.min(300));
                self.at(at, Action::Dispute(job));
            }
        }
        Ok(())
    }

    fn dispute(&mut self, job: u64) -> anyhow::Result<()> {
        let j = self.job(job);
        self.chain.emit(
            self.contracts.job_registry,
            &JobRegistry::DisputeCreated { jobId: U256::from(job), disputer: self.disputer },
        )?;
        let now = self.chain.block;
        if j.outcome == Outcome::Defaulted {
            let at = self.block_at(self.chain.time + RESOLUTION_TIMEOUT) + self.rng.gen_range(0..=5);
            self.at(at, Action::Release(job));
        } else {
            let at = now + self.rng.gen_range(10..=300);
            self.at(at, Action::Resolve(job));
        }
        Ok(())
    }

    fn resolve(&mut self, job: u64) -> anyhow::Result<()> {
        let j = self.job(job);
        let guilty = j.outcome == Outcome::Guilty;
        let score =
            U256::from(if guilty { self.rng.gen_range(1_000..7_000) } else { self.rng.gen_range(8_500..10_000) });
        if guilty {
            self.slash(j.worker, DISPUTE_SLASH_BPS)?;
            let (user, fee) = (self.sessions[j.session as usize].user, self.fee(&j));
            let r = self.contracts.job_registry;
            self.chain.emit(r, &JobRegistry::RefundCreditedToBalance { user, jobId: U256::from(job), amount: fee })?;
            let bond = fee * U256::from(DISPUTE_BOND_MULTIPLIER);
            self.chain.emit(r, &JobRegistry::RefundEscrowed { recipient: self.disputer, amount: bond })?;
        }
        self.chain.emit(
            self.contracts.job_registry,
            &JobRegistry::DisputeResolved { jobId: U256::from(job), workerGuilty: guilty, similarityScore: score },
        )?;
        if !guilty {
            let at = self.chain.block + self.rng.gen_range(1..=20);
            self.at(at, Action::Release(job));
        }
        Ok(())
    }

    fn release(&mut self, job: u64, by_keeper: bool) -> anyhow::Result<()> {
        let j = self.job(job);
        let r = self.contracts.job_registry;
        let fee = self.fee(&j);
        if j.outcome == Outcome::Defaulted {
            self.chain.emit(r, &JobRegistry::DisputeDefaulted { jobId: U256::from(job) })?;
            let bond = fee * U256::from(DISPUTE_BOND_MULTIPLIER);
            self.chain.emit(r, &JobRegistry::RefundEscrowed { recipient: self.disputer, amount: bond })?;
        }
        let mut worker_share = bps(fee, WORKER_FEE_BPS);
        let protocol_share = bps(fee, PROTOCOL_FEE_BPS);
        let fee_pool_share = fee - worker_share - protocol_share;
        let bounty = if by_keeper { bps(fee, RELEASE_BOUNTY_BPS).min(worker_share) } else { U256::ZERO };
        worker_share -= bounty;
        self.workers[j.worker as usize].balance += worker_share;
        self.chain.emit(
            r,
            &JobRegistry::JobReleased {
                jobId: U256::from(job),
                workerShare: worker_share,
                protocolShare: protocol_share,
                feePoolShare: fee_pool_share,
            },
        )?;
        if by_keeper {
            self.chain.emit(
                r,
                &JobRegistry::KeeperBountyPaid { jobId: U256::from(job), keeper: self.keeper, amount: bounty, kind: 0 },
            )?;
        }
        Ok(())
    }

    fn time_out(&mut self, job: u64) -> anyhow::Result<()> {
        let j = self.job(job);
        let slash_bps = if j.outcome == Outcome::AckTimeout { TIMEOUT_SLASH_BPS } else { COMPLETION_TIMEOUT_SLASH_BPS };
        let slashed = self.slash(j.worker, slash_bps)?;
        let (user, fee) = (self.sessions[j.session as usize].user, self.fee(&j));
        let worker = self.workers[j.worker as usize].address;
        let r = self.contracts.job_registry;
        self.chain.emit(r, &JobRegistry::RefundCreditedToBalance { user, jobId: U256::from(job), amount: fee })?;
        self.chain.emit(r, &JobRegistry::JobTimedOut { jobId: U256::from(job), worker, slashAmount: slashed })?;
        let bounty = bps(slashed, TIMEOUT_BOUNTY_BPS);
        self.chain.emit(
            r,
            &JobRegistry::KeeperBountyPaid { jobId: U256::from(job), keeper: self.keeper, amount: bounty, kind: 1 },
        )?;
        Ok(())
    }

    /// The WorkerRegistry half of a slash (WorkerSlashed, and WorkerSuspended at the threshold),
    /// in the current transaction; schedules a top-up when the stake runs low and the
    /// reinstatement after a suspension. Returns the amount slashed.
    fn slash(&mut self, w: u32, slash_bps: u64) -> anyhow::Result<U256> {
        let (time, block) = (self.chain.time, self.chain.block);
        let worker = &mut self.workers[w as usize];
        let amount = bps(ether(MIN_STAKE_ETHER), slash_bps).min(worker.stake);
        worker.stake -= amount;
        worker.offenses += 1;
        let (address, stake) = (worker.address, worker.stake);
        let suspend = worker.suspended_until == 0 && worker.offenses >= SUSPENSION_THRESHOLD;
        if suspend {
            worker.suspended_until = time + SUSPENSION_COOLDOWN;
        }
        let until = worker.suspended_until;
        let top_up = !worker.top_up_pending && stake < ether(MIN_STAKE_ETHER + 2 * MIN_STAKE_ETHER / 5);
        worker.top_up_pending |= top_up;
        let reg = self.contracts.worker_registry;
        self.chain.emit(reg, &WorkerRegistry::WorkerSlashed { worker: address, amount, newStake: stake })?;
        if suspend {
            self.chain.emit(reg, &WorkerRegistry::WorkerSuspended { worker: address, until: U256::from(until) })?;
            let at = self.block_at(until) + self.rng.gen_range(1..=30);
            self.at(at, Action::Reinstate(w));
        }
        if top_up {
            let at = block + self.rng.gen_range(5..=50);
            self.at(at, Action::TopUp(w));
        }
        Ok(amount)
    }

    fn top_up(&mut self, w: u32) -> anyhow::Result<()> {
        let worker = &mut self.workers[w as usize];
        let amount = ether(2 * MIN_STAKE_ETHER);
        worker.stake += amount;
        worker.top_up_pending = false;
        let (address, stake) = (worker.address, worker.stake);
        self.chain.emit(
            self.contracts.worker_registry,
            &WorkerRegistry::StakeTopUp { worker: address, amount, newStake: stake },
        )
    }

    fn reinstate(&mut self, w: u32) -> anyhow::Result<()> {
        let worker = &mut self.workers[w as usize];
        let previous = worker.offenses;
        (worker.offenses, worker.suspended_until) = (0, 0);
        let address = worker.address;
        let reg = self.contracts.worker_registry;
        self.chain.emit(reg, &WorkerRegistry::OffensesReset { worker: address, previousCount: previous })?;
        self.chain.emit(reg, &WorkerRegistry::WorkerReinstated { worker: address })
    }

    fn withdraw(&mut self, w: u32) -> anyhow::Result<()> {
        let worker = &mut self.workers[w as usize];
        let amount = std::mem::take(&mut worker.balance);
        let address = worker.address;
        if !amount.is_zero() {
            self.chain.emit(self.contracts.job_registry, &JobRegistry::WorkerWithdrawal { worker: address, amount })?;
        }
        let at = self.chain.block + BLOCKS_PER_DAY - 300 + self.rng.gen_range(0..600);
        self.at(at, Action::Withdraw(w));
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------------
// Part 1: the store.

/// What the generator leaves next to the store (`<db>.bench.json`), so `--reuse` knows what the
/// store holds and a store without it is never deleted.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Generated {
    jobs: u64,
    workers: usize,
    days: u64,
    dispute_window: u64,
    seed: u64,
    logs: u64,
    head: u64,
    head_time: u64,
}

#[derive(Debug, Default, Serialize)]
struct BuildReport {
    reused: bool,
    logs: u64,
    events: BTreeMap<String, u64>,
    generate_secs: f64,
    replay_events: u64,
    replay_secs: f64,
    replay_events_per_sec: f64,
    check_equal: Option<bool>,
    store_bytes: u64,
    jobs_by_state: BTreeMap<String, u64>,
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

fn sidecar(db: &Path) -> PathBuf {
    with_suffix(db, ".bench.json")
}

/// Where a store is generated until it is complete, so an interrupted run never leaves a store
/// at `db` that the next run would have to refuse (it has no notes).
fn partial(db: &Path) -> PathBuf {
    with_suffix(db, ".partial")
}

fn store_files(db: &Path) -> Vec<PathBuf> {
    ["", "-wal", "-shm", ".bench.json"].iter().map(|suffix| with_suffix(db, suffix)).collect()
}

fn store_bytes(db: &Path) -> u64 {
    store_files(db).iter().take(2).filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum()
}

fn build_store(args: &Args, db: &Path) -> anyhow::Result<BuildReport> {
    let mut report = BuildReport::default();
    if db.exists() {
        if args.reuse {
            // Any store will do (one from a real indexer too); the notes only say what it holds.
            match std::fs::read(sidecar(db)).ok().and_then(|b| serde_json::from_slice::<Generated>(&b).ok()) {
                Some(notes) if notes.jobs != args.jobs => {
                    eprintln!("note: reusing a store generated with --jobs {}, not {}", notes.jobs, args.jobs)
                }
                Some(_) => {}
                None => eprintln!("note: {} was not generated by this benchmark; using it as it is", db.display()),
            }
            report.reused = true;
            report.store_bytes = store_bytes(db);
            report.jobs_by_state = jobs_by_state(db)?;
            return Ok(report);
        }
        ensure!(
            sidecar(db).exists(),
            "{} exists and was not generated by this benchmark; pass --reuse to use it or choose another --db",
            db.display()
        );
        for file in store_files(db) {
            let _ = std::fs::remove_file(file);
        }
    }
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    ensure!(args.workers > 0 && args.days > 0 && args.jobs > 0, "--jobs, --workers and --days must be positive");
    let building = partial(db);
    for file in store_files(&building) {
        let _ = std::fs::remove_file(file);
    }

    let head = SETUP_BLOCKS + args.days * BLOCKS_PER_DAY;
    let now = lcw_schema::store::unix_now();
    let head_time = now - now % BLOCK_SECS;
    let identity = Identity { chain_id: 31_337, contracts: contracts(), start_block: 1 };
    eprintln!(
        "generating {} jobs over {} days ({head} blocks), {} workers, {} s dispute window into {}",
        args.jobs,
        args.days,
        args.workers,
        args.dispute_window,
        db.display()
    );
    let started = Instant::now();
    let store = Store::open(&building, &identity).with_context(|| format!("creating {}", building.display()))?;
    // The generator's own connection: a large page cache for the bulk insert.
    store.conn().execute_batch("PRAGMA cache_size = -262144")?;
    let (logs, counts) = {
        let chain = Chain::new(store.conn(), head - LIVE_BLOCKS)?;
        let mut rng = StdRng::seed_from_u64(args.seed);
        let workers: Vec<WorkerSim> = (0..args.workers)
            .map(|i| WorkerSim {
                address: synth_address(3, i as u64),
                models: Vec::new(),
                stake: U256::ZERO,
                balance: U256::ZERO,
                offenses: 0,
                suspended_until: 0,
                session: None,
                top_up_pending: false,
            })
            .collect();
        // Uneven load: some workers get five times the jobs of others.
        let load = WeightedIndex::new((0..args.workers).map(|_| rng.gen_range(1..=5u32)))?;
        let mut sim = Sim {
            chain,
            rng,
            contracts: contracts(),
            keeper: synth_address(1, 2),
            disputer: synth_address(1, 3),
            window: args.dispute_window,
            head,
            first_time: head_time - (head - 1) * BLOCK_SECS,
            models: Vec::new(),
            workers,
            load,
            sessions: Vec::new(),
            jobs: Vec::with_capacity(args.jobs as usize),
            schedule: BTreeMap::new(),
        };
        sim.run(args.jobs)?;
        sim.chain.finish(head)?
    };
    drop(store);
    report.generate_secs = started.elapsed().as_secs_f64();
    report.logs = logs;
    report.events = counts.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    eprintln!("generated {logs} logs in {:.1} s; replaying them into the projections", report.generate_secs);

    // The projections: the indexer's replay over the raw logs just written, into the same
    // (projection-free) store, as it is served. The replay's reader holds the file open while
    // the projections are written, so it stays in WAL.
    let started = Instant::now();
    let source = Store::open_readonly(&building)?;
    let mut target = Store::open(&building, &identity)?;
    let (events, _) = lcw_indexer::replay::rebuild(&source, &mut target).context("replaying the generated logs")?;
    drop(source);
    target.conn().execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
    // The last connection: SQLite checkpoints and removes the WAL, so the file alone is the store.
    drop(target);
    report.replay_secs = started.elapsed().as_secs_f64();
    ensure!(
        !with_suffix(&building, "-wal").exists(),
        "{} still has a WAL after its last connection closed",
        building.display()
    );
    // The notes first: a store at `db` always has them.
    let notes = Generated {
        jobs: args.jobs,
        workers: args.workers,
        days: args.days,
        dispute_window: args.dispute_window,
        seed: args.seed,
        logs,
        head,
        head_time,
    };
    std::fs::write(sidecar(db), serde_json::to_vec_pretty(&notes)?)?;
    std::fs::rename(&building, db).with_context(|| format!("moving {} to {}", building.display(), db.display()))?;
    report.replay_events = events;
    report.replay_events_per_sec = events as f64 / report.replay_secs.max(1e-9);
    eprintln!("replayed {events} events in {:.1} s ({:.0} events/s)", report.replay_secs, report.replay_events_per_sec);
    if args.check {
        let started = Instant::now();
        let replay = lcw_indexer::replay::replay(db, false).context("checking the store against its replay")?;
        eprintln!("replay check: equal = {} ({:.1} s)", replay.equal(), started.elapsed().as_secs_f64());
        ensure!(replay.equal(), "the store differs from its replay: {:?}", replay.differences);
        report.check_equal = Some(true);
    }
    report.store_bytes = store_bytes(db);
    report.jobs_by_state = jobs_by_state(db)?;
    Ok(report)
}

fn jobs_by_state(db: &Path) -> anyhow::Result<BTreeMap<String, u64>> {
    let store = Store::open_readonly(db)?;
    let mut stmt = store.conn().prepare("SELECT state, count(*) FROM jobs GROUP BY state")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

// ------------------------------------------------------------------------------------------------
// Part 2: the load.

/// `lcw serve` as a child process; killed on drop.
#[derive(Debug)]
struct Server {
    child: Child,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(lcw: &Path, db: &Path, listen: &str, flags: &[String]) -> anyhow::Result<Server> {
        let mut log = db.as_os_str().to_os_string();
        log.push(".serve.log");
        let log = PathBuf::from(log);
        let file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(lcw)
            .arg("serve")
            .arg("--db")
            .arg(db)
            .arg("--listen")
            .arg(listen)
            .args(flags)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {} serve", lcw.display()))?;
        Ok(Server { child, log })
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Peak resident set (VmHWM) in MiB.
    fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }

    async fn wait_healthy(&mut self, client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("lcw serve exited with {status} before it was healthy:\n{}", self.log_tail());
            }
            if let Ok(r) = client.get(format!("{base}/healthz")).send().await
                && r.status() == reqwest::StatusCode::OK
            {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "lcw serve not healthy after 120 s:\n{}", self.log_tail());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[derive(Debug, Serialize)]
struct LoadReport {
    /// The flags `lcw serve` ran with besides --db and --listen.
    server_flags: Vec<String>,
    connections: u64,
    threads: u64,
    duration_secs: u64,
    results: Vec<LoadResult>,
    server_peak_rss_mib: Option<f64>,
}

async fn load(args: &Args, db: &Path) -> anyhow::Result<LoadReport> {
    let lcw = match &args.lcw {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("lcw"),
    };
    ensure!(
        lcw.exists(),
        "{} does not exist; build it (cargo build --release -p lcw-cli) or pass --lcw",
        lcw.display()
    );
    let help = Command::new(&lcw).args(["serve", "--help"]).output().context("running lcw serve --help")?;
    ensure!(help.status.success(), "{} has no working `serve` command yet; rerun with --no-load", lcw.display());
    Command::new("wrk").arg("--version").output().context("wrk is not installed (apt-get install -y wrk)")?;

    warm_page_cache(db)?;
    let t = targets(db)?;
    eprintln!(
        "targets: job ids {}..={}, {} workers with jobs, {} with open jobs, earnings from {}",
        t.min_job,
        t.max_job,
        t.workers.len(),
        t.busy_workers.len(),
        t.from
    );
    let listen = format!("127.0.0.1:{}", free_port()?);
    let base = format!("http://{listen}");
    let url = format!("{base}/graphql");
    let flags = serve_flags(args.connections);
    let mut server = Server::start(&lcw, db, &listen, &flags)?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let started = Instant::now();
    server.wait_healthy(&client, &base).await?;
    eprintln!("lcw serve healthy on {listen} after {:.1} s", started.elapsed().as_secs_f64());

    let queries = queries(&t);
    for q in &queries {
        let summary = check_query(&client, &url, q).await?;
        eprintln!("  {:<24} ok: {summary}", q.name);
    }
    let scripts = tempfile::tempdir()?;
    let mut results = Vec::new();
    for (i, q) in queries.iter().enumerate() {
        let script = scripts.path().join(format!("q{i}.lua"));
        std::fs::write(&script, wrk_script(q, "bench-queries")?)?;
        if args.warmup > 0 {
            run_wrk(args.threads, args.connections, &url, &script, args.warmup)?;
        }
        eprintln!(
            "loading {} for {} s ({} connections, {} threads)",
            q.name, args.duration, args.connections, args.threads
        );
        let mut r = run_wrk(args.threads, args.connections, &url, &script, args.duration)?;
        if let Some(status) = server.child.try_wait()? {
            bail!("lcw serve exited with {status} under load:\n{}", server.log_tail());
        }
        if r.errors > 0 {
            let first = r.first_error.as_deref().unwrap_or("-");
            eprintln!("  {} of {} responses were errors; the first: {first}", r.errors, r.requests);
        }
        r.query = q.name.to_owned();
        r.target_p99_ms = q.target_p99_ms;
        results.push(r);
    }
    let peak = server.peak_rss_mib();
    drop(server);
    Ok(LoadReport {
        server_flags: flags,
        connections: args.connections,
        threads: args.threads,
        duration_secs: args.duration,
        results,
        server_peak_rss_mib: peak,
    })
}

// ------------------------------------------------------------------------------------------------

#[derive(Debug, Serialize)]
struct Report {
    db: PathBuf,
    jobs: u64,
    build: BuildReport,
    load: Option<LoadReport>,
}

fn print_report(r: &Report) {
    let b = &r.build;
    println!("store {} ({} jobs, {:.0} MiB)", r.db.display(), r.jobs, b.store_bytes as f64 / 1_048_576.0);
    if b.reused {
        println!("  reused an existing store");
    } else {
        println!(
            "  generated {} logs in {:.1} s ({:.0} logs/s); replayed {} events in {:.1} s ({:.0} events/s)",
            b.logs,
            b.generate_secs,
            b.logs as f64 / b.generate_secs.max(1e-9),
            b.replay_events,
            b.replay_secs,
            b.replay_events_per_sec
        );
        let events: Vec<String> = b.events.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("  events: {}", events.join(", "));
    }
    let states: Vec<String> = b.jobs_by_state.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("  jobs by state: {}", states.join(", "));
    let Some(load) = &r.load else { return };
    println!();
    println!("lcw serve {}", load.server_flags.join(" "));
    println!(
        "wrk: {} threads, {} connections, {} s per query (closed loop, client and server on the same cores)",
        load.threads, load.connections, load.duration_secs
    );
    println!(
        "{:<24} {:>10} {:>8} {:>8} {:>8} {:>8}  target",
        "query", "requests/s", "p50 ms", "p90 ms", "p99 ms", "errors"
    );
    for q in &load.results {
        let target = match q.target_p99_ms {
            _ if q.errors > 0 => "INVALID: error responses under load".to_owned(),
            Some(t) if q.p99_ms < t => format!("p99 < {t} ms: met"),
            Some(t) => format!("p99 < {t} ms: MISSED"),
            None => "-".to_owned(),
        };
        println!(
            "{:<24} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8}  {target}",
            q.query, q.requests_per_sec, q.p50_ms, q.p90_ms, q.p99_ms, q.errors
        );
    }
    for q in load.results.iter().filter(|q| q.errors > 0) {
        println!(
            "{}: {} of {} responses were errors, the first: {}",
            q.query,
            q.errors,
            q.requests,
            q.first_error.as_deref().unwrap_or("-")
        );
    }
    match load.server_peak_rss_mib {
        Some(m) => println!("lcw serve peak RSS: {m:.0} MiB"),
        None => println!("lcw serve peak RSS: unknown (no /proc)"),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    lcw_schema::ensure_tls();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .try_init();
    let db = match &args.db {
        Some(db) => db.clone(),
        None => std::env::temp_dir().join("lcw-bench-queries").join(format!("jobs-{}.db", args.jobs)),
    };
    let build = tokio::task::spawn_blocking({
        let (args, db) = (args.clone(), db.clone());
        move || build_store(&args, &db)
    })
    .await??;
    let load = if args.no_load { None } else { Some(load(&args, &db).await?) };
    let report = Report { db, jobs: build.jobs_by_state.values().sum(), build, load };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    let failed: Vec<&str> =
        report.load.iter().flat_map(|l| &l.results).filter(|r| r.errors > 0).map(|r| r.query.as_str()).collect();
    ensure!(failed.is_empty(), "error responses under load for {}: their figures are not valid", failed.join(", "));
    Ok(())
}
