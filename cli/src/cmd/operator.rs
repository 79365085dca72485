//! The operator's exit verbs: `exit-plan`, `balance`, `drain`, `undrain`, `withdraw`,
//! `clear-stuck`, `deregister`, `exit` (and `sweep`, in [`super::sweep`]). Each reads the store
//! (kept current by an indexer in this process unless another one runs) and sends through the
//! key's outbox.

use std::io::Write;
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::sol_types::SolCall;
use anyhow::{Context, bail};
use clap::Args;
use lcw_schema::bindings::{JobRegistry, WorkerRegistry};
use lcw_schema::profile::{Profile, Role};
use lcw_schema::rules::exit::{ExitPlan, Step};
use lcw_schema::rules::schedule::{Action, ChainClock};
use lcw_schema::store::{Identity, Store, StoreError, obligations};
use lcw_schema::types::Lcai;
use lcw_settler::ops::Operator;

use crate::args::{DataArgs, KeyArgs, NetworkArgs, StoreArgs, parse_address};

/// Flags shared by the exit verbs.
#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    #[command(flatten)]
    network: NetworkArgs,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    key: KeyArgs,
    /// The worker (default: the key's address).
    #[arg(long)]
    worker: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `lcw withdraw`.
#[derive(Debug, Args)]
pub(crate) struct WithdrawArgs {
    #[command(flatten)]
    common: WorkerArgs,
    #[command(flatten)]
    then: crate::cmd::sweep::ThenSweep,
}

/// `lcw clear-stuck`.
#[derive(Debug, Args)]
pub(crate) struct ClearStuckArgs {
    #[command(flatten)]
    common: WorkerArgs,
    /// Do not ask for confirmation.
    #[arg(long)]
    yes: bool,
}

/// `lcw exit`.
#[derive(Debug, Args)]
pub(crate) struct ExitArgs {
    #[command(flatten)]
    common: WorkerArgs,
    /// Also claim timeouts of stuck jobs (realizes the slash) without asking.
    #[arg(long)]
    clear_stuck: bool,
}

/// What every verb starts from.
pub(crate) struct Ctx {
    pub(crate) profile: Profile,
    pub(crate) chain: lcw_chain::Chain,
    pub(crate) db: std::path::PathBuf,
    pub(crate) worker: Address,
    shutdown: tokio::sync::watch::Sender<bool>,
    indexer: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Ctx {
    /// Waits until the store has the chain's current head.
    pub(crate) async fn catch_up(&mut self) -> anyhow::Result<()> {
        catch_up(&self.chain, &self.profile, &self.db, &mut self.indexer).await
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// The context of a read-only verb: the worker named by --worker, else by the key.
async fn ctx(args: &WorkerArgs, data: &DataArgs) -> anyhow::Result<Ctx> {
    let named = args.worker.as_deref().map(parse_address).transpose().context("--worker")?;
    let profile = args.network.profile(data)?;
    let worker = match named {
        Some(w) => w,
        None => args
            .key
            .signer(&profile, None, Some(Role::Worker))
            .context("name the worker with --worker ADDR, or give its key with --key")?
            .address(),
    };
    start(profile, args.store.path(data), worker).await
}

/// The context of a verb that sends: the worker's own key and its outbox.
pub(crate) async fn ctx_signed(args: &WorkerArgs, data: &DataArgs) -> anyhow::Result<(Ctx, Operator)> {
    let named = args.worker.as_deref().map(parse_address).transpose().context("--worker")?;
    let profile = args.network.profile(data)?;
    let signer = args.key.signer(&profile, named, Some(Role::Worker))?;
    let worker = named.unwrap_or(signer.address());
    if signer.address() != worker {
        bail!("the key is for {} but --worker is {worker}; exit verbs must be signed by the worker", signer.address());
    }
    let c = start(profile, args.store.path(data), worker).await?;
    let operator = Operator::open(c.profile.clone(), &c.db, signer, args.key.fees.cap()).await?;
    Ok((c, operator))
}

/// The network of `profile`, as its stores record it.
fn network(profile: &Profile) -> Identity {
    Identity::of(profile)
}

/// Connects to the chain, checks that an existing store belongs to its network (whoever indexes
/// it), starts an indexer for the store (unless another process runs one) and waits for the head.
async fn start(profile: Profile, db: std::path::PathBuf, worker: Address) -> anyhow::Result<Ctx> {
    let chain = lcw_chain::Chain::open(&profile, Duration::from_secs(20)).await?;
    if db.exists() {
        Store::open_readonly_as(&db, &network(&profile))?;
    }
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut indexer = crate::cmd::settle::spawn_indexer(profile.clone(), db.clone(), rx);
    catch_up(&chain, &profile, &db, &mut indexer).await?;
    Ok(Ctx { profile, chain, db, worker, shutdown: tx, indexer })
}

/// Waits until the store has the chain's current head (the embedded or another indexer).
async fn catch_up(
    chain: &lcw_chain::Chain,
    profile: &Profile,
    db: &std::path::Path,
    indexer: &mut tokio::task::JoinHandle<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let head = chain.head().await?.number;
    for _ in 0..1200 {
        if indexer.is_finished() {
            match indexer.await {
                Ok(Err(e)) => return Err(e),
                Err(e) => bail!("the indexer task failed: {e}"),
                Ok(Ok(())) => bail!("the indexer stopped; run `lcw index` to see why"),
            }
        }
        match Store::open_readonly_as(db, &network(profile)) {
            Ok(store) if obligations::cursor(store.conn())? >= head => return Ok(()),
            Err(e @ StoreError::IdentityMismatch { .. }) => return Err(e.into()),
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the store did not reach block {head} within 120 s")
}

/// The plan as of the chain's head.
async fn exit_plan(c: &Ctx) -> anyhow::Result<ExitPlan> {
    let chain = &c.chain;
    let head = chain.head().await?;
    let mut clock = ChainClock::default();
    // Two heads give the block interval.
    if let Some(prev) = chain.block(head.number.saturating_sub(1).into()).await? {
        clock.observe(prev.number, prev.timestamp);
    }
    clock.observe(head.number, head.timestamp);
    let store = Store::open_readonly_as(&c.db, &network(&c.profile))?;
    let fallback = lcw_settler::settle::chain_params(chain, &c.profile).await?;
    Ok(obligations::exit_plan(store.conn(), c.worker, &clock, Some(&fallback))?)
}

fn set_drained(c: &Ctx, on: bool) -> anyhow::Result<()> {
    let (db, worker) = (&c.db, c.worker);
    let conn = Store::connect_as(db, &network(&c.profile))?;
    lcw_schema::store::operator::set_drained(&conn, worker, on)?;
    Ok(())
}

fn lcai(v: U256) -> String {
    Lcai(v).to_string()
}

fn print_plan(p: &ExitPlan) {
    println!("worker {}: {}", p.worker, if p.registered { "registered" } else { "not registered" });
    println!(
        "  stake {} LCAI, earnings balance {} LCAI, active jobs {}, {}",
        lcai(p.stake),
        lcai(p.balance),
        p.active_jobs,
        if p.drained { "drained (claims no new sessions)" } else { "not drained (still claiming sessions)" }
    );
    println!("  head block {} at chain time {}", p.head, p.head_ts);
    if p.obligations.is_empty() {
        println!("  no open jobs");
    }
    for o in &p.obligations {
        let what = match o.action {
            Action::Release => "release",
            Action::ClaimTimeout => "claimTimeout",
            Action::SettleStuck => "settleStuckJob",
        };
        let slash = o.slash.map(|s| format!(", slashes {} LCAI", lcai(s))).unwrap_or_default();
        println!(
            "  job {:>8} {:<12} {what} at {} (in {} s, {:?}){slash}",
            o.job_id, o.state, o.at, o.in_secs, o.reason
        );
    }
    if !p.stuck.is_empty() {
        println!("  stuck (past deadline): {:?}; clearing them slashes {} LCAI", p.stuck, lcai(p.stuck_slash));
    }
    match (p.earliest_deregister_at, p.earliest_deregister_in) {
        (Some(at), Some(secs)) if !p.deregister_ready => {
            println!("  earliest deregister: chain time {at} (in {secs} s)")
        }
        _ if p.deregister_ready => println!("  deregisterWorker can succeed now"),
        _ => {}
    }
    let next = match &p.next {
        Step::NotRegistered => "nothing to do".to_owned(),
        Step::Drain => "lcw drain".to_owned(),
        Step::Release { jobs } => format!("lcw release ({} jobs releasable now)", jobs.len()),
        Step::ClearStuck { jobs } => format!("lcw clear-stuck ({} jobs)", jobs.len()),
        Step::Wait { in_secs, .. } => format!("wait {in_secs} s (lcw settle releases each job on time)"),
        Step::Withdraw { amount } => format!("lcw withdraw ({} LCAI)", lcai(*amount)),
        Step::Deregister => "lcw deregister".to_owned(),
    };
    println!("  next: {next}");
}

pub(crate) async fn plan(args: WorkerArgs, data: DataArgs) -> anyhow::Result<()> {
    let c = ctx(&args, &data).await?;
    let p = exit_plan(&c).await?;
    if args.json {
        println!("{}", serde_json::to_string(&p)?);
    } else {
        print_plan(&p);
    }
    Ok(())
}

pub(crate) async fn balance(args: WorkerArgs, data: DataArgs) -> anyhow::Result<()> {
    let c = ctx(&args, &data).await?;
    let w = lcw_settler::ops::on_chain_worker(&c.chain, &c.profile, c.worker).await?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "worker": c.worker, "registered": w.registered, "stake_wei": w.stake.to_string(),
                "balance_wei": w.balance.to_string(), "active_jobs": w.active_jobs, "native_wei": w.native.to_string()
            })
        );
    } else {
        println!("worker {}", c.worker);
        println!("  earnings balance {} LCAI (lcw withdraw)", lcai(w.balance));
        println!(
            "  stake            {} LCAI ({})",
            lcai(w.stake),
            if w.registered { "registered" } else { "not registered" }
        );
        println!("  active jobs      {}", w.active_jobs);
        println!("  gas money        {} LCAI", lcai(w.native));
    }
    Ok(())
}

pub(crate) async fn drain(args: WorkerArgs, data: DataArgs, on: bool) -> anyhow::Result<()> {
    let c = ctx(&args, &data).await?;
    set_drained(&c, on)?;
    println!(
        "worker {} {}",
        c.worker,
        if on {
            "drained: lcw's worker claims no new sessions; open jobs are still served and released"
        } else {
            "undrained: lcw's worker claims sessions again"
        }
    );
    let signer = args.key.signer(&c.profile, Some(c.worker), Some(Role::Worker)).ok();
    tell_gateway(&c.profile, c.worker, signer, on).await;
    Ok(())
}

/// Tells the worker gateway (when the network has one) that the worker is drained or not. The
/// gateway wants the worker signed in, so it needs the key; a running `lcw work` mirrors the
/// flag too, within a block.
async fn tell_gateway(
    profile: &Profile,
    worker: Address,
    signer: Option<alloy::signers::local::PrivateKeySigner>,
    drained: bool,
) {
    let Some(url) = profile.gateway_url.clone() else { return };
    let Some(signer) = signer.filter(|s| s.address() == worker) else {
        eprintln!(
            "warning: the gateway was not told (signing in needs the worker's key: --key with --password-file or \
             LCW_PASSWORD); a running `lcw work` tells it within a block"
        );
        return;
    };
    let gateway = match lcw_worker::gateway::Gateway::new(lcw_worker::gateway::GatewayConfig::new(url), signer) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("warning: the gateway was not told: {e}");
            return;
        }
    };
    match if drained { gateway.drain().await } else { gateway.undrain().await } {
        Ok(()) => println!("gateway {} told", gateway.url()),
        Err(e) => eprintln!(
            "warning: telling the gateway failed: {e}; the flag is set locally, and a running `lcw work` retries"
        ),
    }
}

/// `lcw withdraw`, and with `--then-sweep ADDR` the sweep once the withdrawal is mined (the
/// worker apps' "settle earnings").
pub(crate) async fn withdraw(args: WithdrawArgs, data: DataArgs) -> anyhow::Result<()> {
    // The payout address is checked before anything is sent: a typo must not leave the
    // withdrawal done and the sweep refused.
    let payout = args.then.payout().context("--then-sweep")?;
    let (mut c, mut op) = ctx_signed(&args.common, &data).await?;
    if let Some(to) = payout {
        crate::cmd::sweep::check_payout(to, c.worker, &c.profile)?;
    }
    let w = lcw_settler::ops::on_chain_worker(&op.chain, &c.profile, c.worker).await?;
    match (w.balance.is_zero(), payout) {
        (true, None) => {
            bail!("worker {} has no earnings to withdraw (balance 0); released jobs credit it", c.worker)
        }
        (true, Some(_)) => {
            eprintln!("worker {} has no earnings to withdraw (balance 0); sweeping the wallet", c.worker)
        }
        (false, _) => {
            let data_ = JobRegistry::withdrawCall {}.abi_encode().into();
            let sent =
                op.send("withdraw", c.profile.contracts.job_registry, data_, vec![], Duration::from_secs(120)).await?;
            // With --json the sweep's object is the result; the withdrawal is reported on stderr.
            let line = format!("withdrew {} LCAI in block {} (tx {})", lcai(w.balance), sent.block, sent.tx);
            match payout {
                Some(_) if args.common.json => eprintln!("{line}"),
                _ => println!("{line}"),
            }
        }
    }
    if let Some(to) = payout {
        c.catch_up().await?;
        let keep = args.then.keep.map(Lcai::wei);
        crate::cmd::sweep::sweep(&c, &mut op, to, keep, false, args.common.json).await?;
    }
    Ok(())
}

pub(crate) async fn deregister(args: WorkerArgs, data: DataArgs) -> anyhow::Result<()> {
    let (c, mut op) = ctx_signed(&args, &data).await?;
    let w = lcw_settler::ops::on_chain_worker(&op.chain, &c.profile, c.worker).await?;
    if !w.registered {
        bail!("worker {} is not registered", c.worker);
    }
    if w.active_jobs > 0 {
        let p = exit_plan(&c).await?;
        print_plan(&p);
        bail!(
            "deregisterWorker would revert ActiveJobsExist({}, {}); nothing was sent. Follow the plan above, or run `lcw exit`",
            c.worker,
            w.active_jobs
        );
    }
    let data_ = WorkerRegistry::deregisterWorkerCall {}.abi_encode().into();
    let sent =
        op.send("deregister", c.profile.contracts.worker_registry, data_, vec![], Duration::from_secs(120)).await?;
    println!("deregistered in block {} (tx {}); {} LCAI stake returned", sent.block, sent.tx, lcai(w.stake));
    Ok(())
}

fn confirm(question: &str) -> anyhow::Result<bool> {
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

async fn clear(c: &Ctx, op: &mut Operator, p: &ExitPlan) -> anyhow::Result<u64> {
    let mut n = 0;
    for job in &p.stuck {
        let data_ = JobRegistry::claimTimeoutCall { jobId: U256::from(*job) }.abi_encode().into();
        let sent = op
            .send("claim_timeout", c.profile.contracts.job_registry, data_, vec![*job], Duration::from_secs(120))
            .await?;
        println!("job {job} timed out in block {} (tx {})", sent.block, sent.tx);
        n += 1;
    }
    Ok(n)
}

pub(crate) async fn clear_stuck(args: ClearStuckArgs, data: DataArgs) -> anyhow::Result<()> {
    let (c, mut op) = ctx_signed(&args.common, &data).await?;
    let p = exit_plan(&c).await?;
    if p.stuck.is_empty() {
        println!("no stuck jobs: every open job can still complete or be released");
        return Ok(());
    }
    println!("{} jobs are past their deadline: {:?}", p.stuck.len(), p.stuck);
    println!("claimTimeout on them slashes {} LCAI of the stake and refunds the consumers", lcai(p.stuck_slash));
    if !args.yes && !confirm("clear them?")? {
        bail!("not confirmed; nothing was sent");
    }
    clear(&c, &mut op, &p).await?;
    Ok(())
}

pub(crate) async fn exit(args: ExitArgs, data: DataArgs) -> anyhow::Result<()> {
    let (mut c, mut op) = ctx_signed(&args.common, &data).await?;
    let signer_key = args.common.key.signer(&c.profile, Some(c.worker), Some(Role::Worker))?;
    loop {
        let p = exit_plan(&c).await?;
        match &p.next {
            Step::NotRegistered => {
                println!("worker {} is not registered; nothing left to do", c.worker);
                return Ok(());
            }
            Step::Drain => {
                set_drained(&c, true)?;
                println!("1/5 drained: no new sessions are claimed");
                tell_gateway(&c.profile, c.worker, Some(signer_key.clone()), true).await;
            }
            Step::Release { jobs } => {
                println!("2/5 releasing {} jobs", jobs.len());
                let mut config = lcw_settler::settle::SettleConfig::new(
                    c.profile.clone(),
                    c.db.clone(),
                    lcw_settler::settle::Mode::Worker(c.worker),
                    signer_key.clone(),
                );
                config.fee_cap = op.cap;
                config.once = true;
                let (_tx, rx) = tokio::sync::watch::channel(false);
                let s = lcw_settler::settle::run(config, rx).await?;
                println!("    {} jobs released", s.jobs_released);
                c.catch_up().await?;
            }
            Step::ClearStuck { jobs } => {
                println!("    {} stuck jobs past their deadline slash {} LCAI", jobs.len(), lcai(p.stuck_slash));
                if !args.clear_stuck && !confirm("claim their timeouts?")? {
                    bail!("stopped: stuck jobs block the exit (run `lcw exit --clear-stuck` or `lcw clear-stuck`)");
                }
                clear(&c, &mut op, &p).await?;
                c.catch_up().await?;
            }
            Step::Wait { in_secs, .. } => {
                let earliest = p.earliest_deregister_in.unwrap_or(*in_secs);
                eprint!(
                    "\r3/5 waiting: {} open jobs, next releasable in {in_secs} s, deregister possible in {earliest} s   ",
                    p.obligations.len()
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Step::Withdraw { amount } => {
                eprintln!();
                let data_ = JobRegistry::withdrawCall {}.abi_encode().into();
                let sent = op
                    .send("withdraw", c.profile.contracts.job_registry, data_, vec![], Duration::from_secs(120))
                    .await?;
                println!("4/5 withdrew {} LCAI (block {})", lcai(*amount), sent.block);
                c.catch_up().await?;
            }
            Step::Deregister => {
                let w = lcw_settler::ops::on_chain_worker(&op.chain, &c.profile, c.worker).await?;
                if w.active_jobs > 0 {
                    // The store is a block behind; the next plan sees the rest.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                let data_ = WorkerRegistry::deregisterWorkerCall {}.abi_encode().into();
                let sent = op
                    .send("deregister", c.profile.contracts.worker_registry, data_, vec![], Duration::from_secs(120))
                    .await?;
                println!("5/5 deregistered in block {}: {} LCAI stake returned", sent.block, lcai(w.stake));
                return Ok(());
            }
        }
    }
}
