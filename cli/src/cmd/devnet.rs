//! `lcw devnet`: anvil + the contracts, until Ctrl-C.

use anyhow::Context;
use clap::Args;
use lcw_contracts::deploy::ModelSpec;
use lcw_contracts::devnet::{Devnet, DevnetOptions};
use lcw_schema::types::Lcai;

use crate::args::DataArgs;

/// Start a local LightChain devnet: anvil with the contracts deployed, configured and funded.
#[derive(Debug, Args)]
pub(crate) struct DevnetArgs {
    /// Port for anvil on 127.0.0.1 (0 picks a free one).
    #[arg(long, env = "LCW_DEVNET_PORT", default_value_t = 8545)]
    port: u16,
    /// Seconds between blocks.
    #[arg(long, env = "LCW_BLOCK_TIME", default_value_t = 1)]
    block_time: u64,
    /// Dispute window in seconds.
    #[arg(long, env = "LCW_DISPUTE_WINDOW", default_value_t = 60)]
    dispute_window: u64,
    /// Seconds a worker has to acknowledge a job.
    #[arg(long, env = "LCW_ACK_TIMEOUT", default_value_t = 30)]
    ack_timeout: u64,
    /// Seconds a worker has to complete an acknowledged job.
    #[arg(long, env = "LCW_COMPLETION_TIMEOUT", default_value_t = 60)]
    completion_timeout: u64,
    /// Seconds the disputer has to rule before a dispute defaults.
    #[arg(long, env = "LCW_RESOLUTION_TIMEOUT", default_value_t = 60)]
    resolution_timeout: u64,
    /// Minimum worker stake in LCAI.
    #[arg(long, env = "LCW_MIN_STAKE", default_value = "100")]
    min_stake: String,
    /// Fee per job in LCAI.
    #[arg(long, env = "LCW_JOB_FEE", default_value = "0.01")]
    job_fee: String,
    /// Further models to whitelist and register besides gemma3-270m (repeatable).
    #[arg(long = "model", env = "LCW_DEVNET_MODELS", value_delimiter = ',')]
    models: Vec<String>,
    /// Chain id.
    #[arg(long, env = "LCW_DEVNET_CHAIN_ID", default_value_t = 31337)]
    chain_id: u64,
    /// Block gas limit.
    #[arg(long, env = "LCW_GAS_LIMIT", default_value_t = 1_000_000_000)]
    gas_limit: u64,
    /// Historical block states anvil keeps in memory (0: all; each busy block costs tens of MB).
    #[arg(long, env = "LCW_DEVNET_STATES", default_value_t = 256)]
    keep_states: u64,
    /// Assign sessions by on-chain sortition (SessionManager), as today's testnet does: consumers
    /// request sessions and workers claim them. Without it the dispatcher signs sessions (legacy).
    #[arg(long, env = "LCW_DEVNET_SORTITION")]
    sortition: bool,
    /// Blocks over which a session request's claim window widens to every eligible worker.
    #[arg(long, env = "LCW_CLAIM_WINDOW_BLOCKS", default_value_t = 5)]
    claim_window_blocks: u64,
    /// Active jobs at which a worker can claim no more sessions (AIConfig maxConcurrentJobs).
    #[arg(long, env = "LCW_DEVNET_MAX_CONCURRENT_JOBS", default_value_t = 64)]
    max_concurrent_jobs: u64,
    /// Print the profile as JSON on stdout once the devnet is up.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: DevnetArgs, data: DataArgs) -> anyhow::Result<()> {
    let mut options = DevnetOptions::new(&data.data_dir);
    options.port = args.port;
    options.block_time = args.block_time;
    options.chain_id = args.chain_id;
    options.gas_limit = args.gas_limit;
    options.prune_history = (args.keep_states > 0).then_some(args.keep_states);
    if args.dispute_window == 0 {
        anyhow::bail!("--dispute-window must be at least 1 second");
    }
    options.deploy.dispute_window = args.dispute_window;
    options.deploy.ack_timeout = args.ack_timeout;
    options.deploy.completion_timeout = args.completion_timeout;
    options.deploy.resolution_timeout = args.resolution_timeout;
    options.deploy.sortition = args.sortition;
    options.deploy.claim_window_blocks = args.claim_window_blocks;
    options.deploy.max_concurrent_jobs = args.max_concurrent_jobs;
    options.deploy.min_worker_stake = Lcai::parse(&args.min_stake).context("--min-stake")?;
    let fee = Lcai::parse(&args.job_fee).context("--job-fee")?;
    for m in &mut options.deploy.models {
        m.fee = fee;
    }
    for name in &args.models {
        let name = name.trim();
        if name.is_empty() || options.deploy.models.iter().any(|m| m.name == name) {
            continue;
        }
        options.deploy.models.push(ModelSpec { name: name.to_owned(), fee, max_output_tokens: 256 });
    }

    // Installed first: a signal from here on stops the devnet cleanly, anvil included.
    let stop = crate::shutdown_signal();
    let mut devnet = Devnet::start(&options).await?;
    let p = &devnet.profile;
    if args.json {
        println!("{}", serde_json::to_string(p)?);
    } else {
        println!("devnet up: chain {} at {} (anvil pid {})", p.chain_id, p.rpc_url, devnet.anvil.pid());
        println!("profile:        {}", devnet.profile_path.display());
        println!("WorkerRegistry: {}", p.contracts.worker_registry);
        println!("JobRegistry:    {}", p.contracts.job_registry);
        println!("AIConfig:       {}", p.contracts.ai_config);
        println!("SessionManager: {}", devnet.session_manager);
        if args.sortition {
            println!(
                "sessions by sortition: claim window {} blocks, {} active jobs per worker at most",
                args.claim_window_blocks, args.max_concurrent_jobs
            );
        } else {
            println!("sessions signed by the dispatcher (legacy; --sortition assigns them as today's testnet does)");
        }
        println!(
            "dispute window {} s, ack timeout {} s, completion timeout {} s, block time {} s",
            args.dispute_window, args.ack_timeout, args.completion_timeout, args.block_time
        );
        for a in &p.accounts {
            println!("  {:<10} {}", a.role.to_string(), a.address);
        }
        println!("models: {}", options.deploy.models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", "));
        println!("Ctrl-C stops the devnet.");
    }
    use std::io::Write;
    std::io::stdout().flush()?;
    stop.await;
    tracing::info!("stopping anvil");
    devnet.anvil.stop();
    Ok(())
}
