//! The fault schedule: from a seeded RNG, at random moments, one fault after another, every kind
//! dealt from a shuffled deck so that each occurs in a short run. A fault that lasts (an RPC
//! storm, a fee spike, a low balance, an LLM outage) runs as an episode in its own task and puts
//! things back when it ends; two episodes of one kind never overlap. A kill lasts until the
//! process is back at work (its start-up checks done), not only started again: jobs that arrive
//! while it starts up are the kill's.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use anyhow::Context;
use lcw_tests::proxy::{Faults, FlakyProxy, TxFaults};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::procs::logged_since;
use super::rig::Rig;
use super::{GWEI, say};

/// Kinds of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// The last 1–10 blocks replaced (anvil_rollback; the removed transactions sent again, lcw's
    /// own sometimes not).
    Reorg,
    /// `lcw run --keeper` killed with SIGKILL and started again.
    KillKeeper,
    /// `lcw run --work` killed with SIGKILL and started again.
    KillWorker,
    /// Dropped connections, garbled answers, 429s, 5xx and slow answers on an lcw process's RPC.
    RpcStorm,
    /// Transactions refused (`txpool is full`) or evicted from the pool after acceptance.
    TxStorm,
    /// The base fee at 20,000 gwei for 5–20 blocks.
    FeeSpike,
    /// An lcw key's balance nearly emptied for a while.
    LowBalance,
    /// The LLM server unreachable (and sometimes killed) for a while.
    LlmOutage,
    /// The LLM server answering after a long delay for a while.
    LlmSlow,
}

const ALL: [Kind; 9] = [
    Kind::Reorg,
    Kind::KillKeeper,
    Kind::KillWorker,
    Kind::RpcStorm,
    Kind::TxStorm,
    Kind::FeeSpike,
    Kind::LowBalance,
    Kind::LlmOutage,
    Kind::LlmSlow,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Reorg => "reorg",
            Kind::KillKeeper => "kill -9 keeper",
            Kind::KillWorker => "kill -9 worker",
            Kind::RpcStorm => "rpc storm",
            Kind::TxStorm => "tx storm",
            Kind::FeeSpike => "fee spike",
            Kind::LowBalance => "low balance",
            Kind::LlmOutage => "llm outage",
            Kind::LlmSlow => "llm slow",
        }
    }
}

/// One injected fault, for the report and for blaming what went wrong around it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Record {
    /// Its number in the run.
    pub(crate) n: usize,
    /// Its kind.
    pub(crate) kind: &'static str,
    /// What exactly was done.
    pub(crate) detail: String,
    /// Soak seconds when it began and ended.
    pub(crate) start_s: f64,
    /// Soak seconds when it ended (= start for an instant fault).
    pub(crate) end_s: f64,
    /// Heads when it began and ended.
    pub(crate) start_block: u64,
    /// The head when it ended.
    pub(crate) end_block: u64,
}

/// How long a process the soak killed has, once started again, to be back at work before its
/// episode ends anyway (the restart is then reported as never back).
pub(crate) const BACK_AT_WORK_TIMEOUT: Duration = Duration::from_secs(120);

/// One restart after a kill by the soak.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Restart {
    /// The kill's number in the fault log.
    pub(crate) n: usize,
    /// `keeper` or `worker`.
    pub(crate) process: &'static str,
    /// Seconds from its start to its line of work ([`at_work`]); None when it logged none
    /// within [`BACK_AT_WORK_TIMEOUT`] or could not be started.
    pub(crate) back_after_s: Option<f64>,
}

/// The message a process logs once it is back at work, after the checks at its start (the LLM
/// server, the KZG setup, the outbox reconciled against the chain). The worker's process starts
/// a settler too; its work is the worker's loop.
fn at_work(name: &str) -> &'static str {
    if name == "keeper" { "settler started" } else { "worker started" }
}

/// Injects faults until told to stop.
#[derive(Debug)]
pub(crate) struct Injector {
    rig: Arc<Rig>,
    rng: rand::rngs::StdRng,
    deck: Vec<Kind>,
    /// Everything injected so far.
    pub(crate) log: Arc<Mutex<Vec<Record>>>,
    /// Every restart after a kill, with how long it took.
    pub(crate) restarts: Arc<Mutex<Vec<Restart>>>,
    busy: Arc<Mutex<HashSet<Kind>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Injector {
    /// An injector drawing from `seed`.
    pub(crate) fn new(rig: Arc<Rig>, seed: u64) -> Injector {
        Injector {
            rig,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            deck: Vec::new(),
            log: Arc::new(Mutex::new(Vec::new())),
            restarts: Arc::new(Mutex::new(Vec::new())),
            busy: Arc::new(Mutex::new(HashSet::new())),
            tasks: Vec::new(),
        }
    }

    /// Injects faults every 6–14 s until `until`, then waits for every episode to end (each puts
    /// things back as it ends).
    pub(crate) async fn run(&mut self, until: Instant) {
        loop {
            let gap = Duration::from_secs_f64(self.rng.gen_range(6.0..14.0));
            if Instant::now() + gap >= until {
                break;
            }
            tokio::time::sleep(gap).await;
            let Some(kind) = self.next_kind() else { continue };
            if let Err(e) = self.inject(kind).await {
                say!("fault {} could not be injected: {e:#}", kind.name());
            }
        }
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }

    /// The next kind from the deck that is not running now (a fresh shuffled deck when empty).
    fn next_kind(&mut self) -> Option<Kind> {
        if self.deck.is_empty() {
            self.deck = ALL.to_vec();
            self.deck.shuffle(&mut self.rng);
        }
        let busy = self.busy.lock().expect("busy").clone();
        let i = self.deck.iter().position(|k| !busy.contains(k))?;
        Some(self.deck.remove(i))
    }

    /// Writes the record of a fault that begins now; returns its index.
    async fn begin(&self, kind: Kind, detail: String) -> usize {
        let head = self.rig.head().await;
        let mut log = self.log.lock().expect("fault log");
        let n = log.len() + 1;
        say!("fault #{n}: {} — {detail}", kind.name());
        let now = super::elapsed();
        log.push(Record { n, kind: kind.name(), detail, start_s: now, end_s: now, start_block: head, end_block: head });
        n - 1
    }

    /// Runs `episode` in its own task; the fault's record is closed and the kind freed when it ends.
    fn episode<F>(&mut self, kind: Kind, index: usize, episode: F)
    where
        F: std::future::Future<Output = anyhow::Result<String>> + Send + 'static,
    {
        self.busy.lock().expect("busy").insert(kind);
        let (rig, log, busy) = (self.rig.clone(), self.log.clone(), self.busy.clone());
        self.tasks.push(tokio::spawn(async move {
            let outcome = episode.await;
            let head = rig.head().await;
            let mut log = log.lock().expect("fault log");
            let r = &mut log[index];
            r.end_s = super::elapsed();
            r.end_block = head;
            match outcome {
                Ok(note) if note.is_empty() => {}
                Ok(note) => r.detail.push_str(&format!("; {note}")),
                Err(e) => {
                    say!("fault #{} ({}) failed to end cleanly: {e:#}", r.n, r.kind);
                    r.detail.push_str(&format!("; ended with an error: {e:#}"));
                }
            }
            busy.lock().expect("busy").remove(&kind);
        }));
    }

    async fn inject(&mut self, kind: Kind) -> anyhow::Result<()> {
        let rig = self.rig.clone();
        match kind {
            Kind::Reorg => {
                let depth = self.rng.gen_range(1..=10u64);
                let drop_lcw = self.rng.gen_bool(0.5);
                let i = self
                    .begin(
                        kind,
                        format!(
                            "depth {depth}, lcw's transactions {}",
                            if drop_lcw { "dropped" } else { "sent again" }
                        ),
                    )
                    .await;
                let note = reorg(&rig, depth, drop_lcw).await?;
                self.log.lock().expect("fault log")[i].detail.push_str(&format!("; {note}"));
            }
            Kind::KillKeeper | Kind::KillWorker => {
                let name = if kind == Kind::KillKeeper { "keeper" } else { "worker" };
                let down = Duration::from_secs_f64(self.rng.gen_range(0.5..5.0));
                let pid = rig.proc(name).lock().expect("proc").pid();
                let i = self.begin(kind, format!("pid {pid:?}, restarted after {:.1} s", down.as_secs_f64())).await;
                rig.proc(name).lock().expect("proc").kill9();
                let restarts = self.restarts.clone();
                self.episode(kind, i, async move {
                    tokio::time::sleep(down).await;
                    let back = restart(&rig, name).await;
                    let back_after_s = back.as_ref().ok().copied().flatten();
                    restarts.lock().expect("restarts").push(Restart { n: i + 1, process: name, back_after_s });
                    Ok(match back? {
                        Some(secs) => format!("back at work after {secs:.1} s"),
                        None => format!("not back at work {} s after its start", BACK_AT_WORK_TIMEOUT.as_secs()),
                    })
                });
            }
            Kind::RpcStorm | Kind::TxStorm => {
                let target = ["keeper", "worker", "both"][self.rng.gen_range(0..3)];
                let secs = self.rng.gen_range(15.0..40.0);
                let seed = self.rng.r#gen::<u64>();
                let evict_after = Duration::from_millis(self.rng.gen_range(50..400));
                let i = if kind == Kind::RpcStorm {
                    self.begin(kind, format!("{target}'s RPC for {secs:.0} s: 2% hangs (12 s), 3% garbled, 8% 429, 8% 5xx, 10% slow (3 s)")).await
                } else {
                    self.begin(kind, format!("{target}'s transactions for {secs:.0} s: 30% refused (txpool is full), 30% evicted after {} ms", evict_after.as_millis())).await
                };
                self.episode(kind, i, async move {
                    let proxies: Vec<&FlakyProxy> = match target {
                        "keeper" => vec![&rig.keeper_rpc],
                        "worker" => vec![&rig.worker_rpc],
                        _ => vec![&rig.keeper_rpc, &rig.worker_rpc],
                    };
                    for p in &proxies {
                        if kind == Kind::RpcStorm {
                            p.set_faults(storm(seed));
                        } else {
                            p.set_tx_faults(TxFaults { refuse: 0.3, evict: 0.3, evict_after, ..TxFaults::default() });
                        }
                    }
                    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                    for p in &proxies {
                        if kind == Kind::RpcStorm {
                            p.set_faults(Faults { seed, ..Faults::default() });
                        } else {
                            p.set_tx_faults(TxFaults::default());
                        }
                    }
                    let c = |p: &FlakyProxy| {
                        use std::sync::atomic::Ordering::Relaxed;
                        (p.counts.faults.load(Relaxed), p.counts.refused_txs.load(Relaxed), p.counts.evicted_txs.load(Relaxed))
                    };
                    let (k, w) = (c(&rig.keeper_rpc), c(&rig.worker_rpc));
                    Ok(format!("proxy totals so far: keeper {} faults ({} refused, {} evicted), worker {} ({} refused, {} evicted)", k.0, k.1, k.2, w.0, w.1, w.2))
                });
            }
            Kind::FeeSpike => {
                let blocks = self.rng.gen_range(5..=20u64);
                let i = self.begin(kind, format!("base fee 20,000 gwei for {blocks} blocks")).await;
                self.episode(kind, i, async move { fee_spike(&rig, blocks).await });
            }
            Kind::LowBalance => {
                let (name, who) =
                    if self.rng.gen_bool(0.5) { ("worker", rig.worker_addr) } else { ("keeper", rig.keeper_addr) };
                let secs = self.rng.gen_range(10.0..30.0);
                let i = self.begin(kind, format!("{name} {who} left with 1,000 wei for {secs:.0} s")).await;
                self.episode(kind, i, async move { low_balance(&rig, who, Duration::from_secs_f64(secs)).await });
            }
            Kind::LlmOutage => {
                let secs = self.rng.gen_range(10.0..30.0);
                let kill = self.rng.gen_bool(0.5);
                let i = self
                    .begin(
                        kind,
                        format!(
                            "gate closed for {secs:.0} s{}",
                            if kill { ", llama-server killed and restarted" } else { "" }
                        ),
                    )
                    .await;
                self.episode(kind, i, async move { llm_outage(&rig, Duration::from_secs_f64(secs), kill).await });
            }
            Kind::LlmSlow => {
                let delay = self.rng.gen_range(5.0..25.0);
                let secs = self.rng.gen_range(20.0..40.0);
                let i = self.begin(kind, format!("every LLM request held {delay:.0} s, for {secs:.0} s")).await;
                self.episode(kind, i, async move {
                    rig.gate.lock().await.set_delay(Duration::from_secs_f64(delay));
                    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                    rig.gate.lock().await.set_delay(Duration::ZERO);
                    Ok(String::new())
                });
            }
        }
        Ok(())
    }
}

/// Starts a killed process again and waits until it logs its line of work ([`at_work`]): the
/// seconds from its start, or None when that took longer than [`BACK_AT_WORK_TIMEOUT`].
async fn restart(rig: &Rig, name: &'static str) -> anyhow::Result<Option<f64>> {
    let (log, from) = {
        let mut p = rig.proc(name).lock().expect("proc");
        // The killed process is reaped: nothing it wrote comes after this.
        let from = p.log_end();
        p.spawn()?;
        (p.log.clone(), from)
    };
    let started = Instant::now();
    let (log, line) = (&log, at_work(name));
    let back = lcw_tests::wait_until(BACK_AT_WORK_TIMEOUT, move || async move { logged_since(log, from, line) }).await;
    Ok(back.then(|| started.elapsed().as_secs_f64()))
}

/// An RPC storm's request faults.
fn storm(seed: u64) -> Faults {
    Faults {
        hang: 0.02,
        hang_for: Duration::from_secs(12),
        garble: 0.03,
        rate_limit: 0.08,
        server_error: 0.08,
        slow: 0.10,
        slow_for: Duration::from_secs(3),
        seed,
        ..Faults::default()
    }
}

/// Replaces the last `depth` blocks: mining paused, the blocks' transactions read (raw, blob
/// sidecars included), the chain rolled back, the transactions sent again (lcw's own left out
/// when `drop_lcw`, as if the new branch's mempools lost them), mining resumed. The new blocks
/// have new hashes and timestamps, as on a real reorg.
async fn reorg(rig: &Rig, depth: u64, drop_lcw: bool) -> anyhow::Result<String> {
    let p = &rig.anvil;
    let replaced = lcw_contracts::reorg::replace_blocks(p, depth, 1, |from| drop_lcw && rig.is_lcw(from)).await?;
    // A rollback undoes a low-balance episode's top-up too (it is no transaction that the new
    // branch could carry): put back the wallets it left empty.
    let refills: Vec<(Address, U256)> =
        rig.refills.lock().expect("refills").iter().filter_map(|(a, b)| b.map(|b| (*a, b))).collect();
    let mut refilled = 0;
    for (who, balance) in refills {
        if p.get_balance(who).await? < U256::from(LEFT_WITH + 1) {
            p.anvil_set_balance(who, balance).await?;
            refilled += 1;
        }
    }
    Ok(format!(
        "{replaced}{}",
        if refilled > 0 { format!("; {refilled} emptied wallet(s) topped up again") } else { String::new() }
    ))
}

/// The base fee at 20,000 gwei for `blocks` blocks, then back to what it was.
async fn fee_spike(rig: &Rig, blocks: u64) -> anyhow::Result<String> {
    let p = &rig.anvil;
    let before =
        p.get_block_by_number(BlockNumberOrTag::Latest).await?.and_then(|b| b.header.base_fee_per_gas).unwrap_or(7)
            as u128;
    for _ in 0..blocks {
        p.anvil_set_next_block_base_fee_per_gas(20_000 * GWEI).await?;
        let head = p.get_block_number().await?;
        lcw_tests::wait_until(Duration::from_secs(10), || async { p.get_block_number().await.is_ok_and(|h| h > head) })
            .await;
    }
    p.anvil_set_next_block_base_fee_per_gas(before).await?;
    Ok(format!("base fee back to {before} wei"))
}

/// What a low-balance episode leaves in a wallet, in wei.
const LEFT_WITH: u64 = 1_000;

/// `who`'s balance at 1,000 wei for `secs`, then back to what it was.
async fn low_balance(rig: &Rig, who: Address, secs: Duration) -> anyhow::Result<String> {
    let p = &rig.anvil;
    let before = p.get_balance(who).await?;
    rig.refills.lock().expect("refills").insert(who, None);
    p.anvil_set_balance(who, U256::from(LEFT_WITH)).await?;
    tokio::time::sleep(secs).await;
    p.anvil_set_balance(who, before).await?;
    rig.refills.lock().expect("refills").insert(who, Some(before));
    Ok(String::new())
}

/// The gate closed (connections refused) for `secs`; with `kill`, llama-server is killed too
/// and started again on its port before the gate opens.
async fn llm_outage(rig: &Arc<Rig>, secs: Duration, kill: bool) -> anyhow::Result<String> {
    rig.gate.lock().await.stop();
    if kill {
        let r = rig.clone();
        tokio::task::spawn_blocking(move || r.llm.lock().expect("llm").stop()).await?;
    }
    tokio::time::sleep(secs).await;
    if kill {
        let r = rig.clone();
        tokio::task::spawn_blocking(move || r.llm.lock().expect("llm").restart())
            .await
            .context("llama-server did not start again")?;
    }
    rig.gate.lock().await.restart().await;
    Ok(String::new())
}
