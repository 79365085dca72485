//! `lcw simulate`: consumer/dispatcher (and simple worker) traffic for a devnet. With sortition
//! on (AIConfig.getSortitionEnabled) sessions are requested from the SessionManager and claimed
//! by the workers instead of being signed by the dispatcher.

use anyhow::Context;
use clap::Args;
use lcw_contracts::simulate::{self, SimulateOptions, plan::Shares};
use lcw_schema::suite::Suite;
use lcw_schema::types::Lcai;

use crate::args::{DataArgs, NetworkArgs};

/// Play consumers, dispatcher, disputer and keeper (and, with --auto-complete, simple workers).
///
/// With sortition on, consumers request sessions from the SessionManager and the simulated
/// workers claim them in the first block their turn allows; workers the simulator holds no key
/// for (a real `lcw work`) claim by themselves and get a real encrypted prompt per job.
#[derive(Debug, Args)]
pub(crate) struct SimulateArgs {
    #[command(flatten)]
    network: NetworkArgs,
    /// Jobs to submit.
    #[arg(long, env = "LCW_SIM_JOBS")]
    jobs: u64,
    /// Jobs per second (default: as fast as the chain takes them).
    #[arg(long, env = "LCW_SIM_RATE")]
    rate: Option<f64>,
    /// Workers to register and send traffic to; 0 uses the workers already registered.
    #[arg(long, env = "LCW_SIM_WORKERS", default_value_t = 1)]
    workers: usize,
    /// Simulated workers acknowledge and complete without an LLM (volume mode).
    #[arg(long)]
    auto_complete: bool,
    /// Release jobs once their dispute window has passed.
    #[arg(long)]
    auto_release: bool,
    /// With --auto-release, the keeper releases every job (earning the bounty) instead of the workers.
    #[arg(long, requires = "auto_release")]
    keeper_releases: bool,
    /// Percentage of jobs that time out (simulated workers skip them; the keeper claims).
    #[arg(long, default_value_t = 0.0)]
    timeout_share: f64,
    /// Percentage of jobs the consumer disputes (guilty, not guilty, defaulted in thirds).
    #[arg(long, default_value_t = 0.0)]
    dispute_share: f64,
    /// Percentage of jobs on sessions closed at once (settled without fault).
    #[arg(long, default_value_t = 0.0)]
    settle_share: f64,
    /// Encryption suite of the workers the simulator registers.
    #[arg(long, default_value = "p256")]
    suite: String,
    /// Model name or bytes32 id.
    #[arg(long, default_value = lcw_contracts::deploy::DEFAULT_MODEL)]
    model: String,
    /// Stake per registered worker in LCAI (default: the on-chain minimum).
    #[arg(long)]
    stake: Option<String>,
    /// Prompt to send (repeatable; default: built-in representative prompts).
    #[arg(long = "prompt")]
    prompts: Vec<String>,
    /// Seed of the outcome plan.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Ordinary sessions to open (with sortition: session requests to make); default one per worker.
    #[arg(long, env = "LCW_SIM_SESSIONS")]
    sessions: Option<usize>,
    /// With sortition, seconds a session request stays open; one not ready by then is counted as
    /// expired and made again.
    #[arg(long, env = "LCW_SIM_REQUEST_TTL", default_value_t = 120, value_name = "SECS")]
    request_ttl: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: SimulateArgs, data: DataArgs) -> anyhow::Result<()> {
    let profile = args.network.profile(&data)?;
    let suite: Suite = args.suite.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let stake = args.stake.as_deref().map(Lcai::parse).transpose().context("--stake")?;
    let options = SimulateOptions {
        jobs: args.jobs,
        rate: args.rate,
        workers: args.workers,
        auto_complete: args.auto_complete,
        auto_release: args.auto_release,
        keeper_releases: args.keeper_releases,
        shares: Shares { timeout: args.timeout_share, dispute: args.dispute_share, settle: args.settle_share },
        suite,
        model: args.model,
        stake,
        prompts: args.prompts,
        seed: args.seed,
        sessions: args.sessions,
        request_ttl: args.request_ttl,
        ..SimulateOptions::default()
    };
    let report = simulate::run(&profile, &options, |p| {
        let r = p.report;
        let sessions = if r.sortition {
            format!(", sessions ready {}/{} ({} expired)", r.sessions_ready, r.sessions_requested, r.requests_expired)
        } else {
            String::new()
        };
        eprintln!(
            "block {}: submitted {}/{}, completed {}, released {}, timed out {}, disputed {}, txs {}{sessions}",
            p.head, r.submitted, r.jobs, r.completed, r.released, r.timed_out, r.disputed, r.transactions
        );
    })
    .await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} jobs in {:.1} s ({:.0} jobs/s while submitting): {} completed, {} released, {} timed out, {} settled, \
             {} disputed ({} guilty, {} not guilty, {} defaulted); {} sessions, {} workers; {} transactions ({} reverted), \
             blocks {}..{}",
            report.submitted,
            report.elapsed_secs,
            report.jobs_per_sec,
            report.completed,
            report.released,
            report.timed_out,
            report.settled,
            report.disputed,
            report.disputes_guilty,
            report.disputes_not_guilty,
            report.disputes_defaulted,
            report.sessions,
            report.workers.len(),
            report.transactions,
            report.reverted,
            report.first_block,
            report.last_block
        );
        if report.sortition {
            println!("{}", sortition_summary(&report));
        }
    }
    Ok(())
}

/// The sortition part of the text report: requests, claims and who won them.
fn sortition_summary(r: &simulate::SimulateReport) -> String {
    let winners: Vec<String> = r.claims_won_by.iter().map(|(w, n)| format!("{w} {n}")).collect();
    format!(
        "sortition: {} sessions requested, {} claimed, {} ready, {} expired; {} claims sent by simulated workers \
         ({} lost the race); claim latency p50 {} / max {} blocks after the request; simulated winners claimed \
         p50 {} / max {} blocks after their first eligible block\nwon by: {}",
        r.sessions_requested,
        r.sessions_claimed,
        r.sessions_ready,
        r.requests_expired,
        r.claims_sent,
        r.claims_lost,
        r.claim_latency_blocks.p50,
        r.claim_latency_blocks.max,
        r.claim_lag_blocks.p50,
        r.claim_lag_blocks.max,
        if winners.is_empty() { "nobody".to_owned() } else { winners.join(", ") }
    )
}
