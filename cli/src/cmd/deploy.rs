//! `lcw deploy`: deploy and configure the contracts on any node, write a profile.

use std::path::PathBuf;

use alloy::signers::local::PrivateKeySigner;
use anyhow::Context;
use clap::Args;
use lcw_contracts::deploy::{DeployConfig, deploy};
use lcw_schema::profile::{Contracts, Profile};
use lcw_schema::types::Lcai;

use crate::args::parse_address;

/// Deploy WorkerRegistry, JobRegistry, AIConfig and SessionManager to a node and write a network
/// profile.
#[derive(Debug, Args)]
pub(crate) struct DeployArgs {
    /// JSON-RPC URL of the node.
    #[arg(long, env = "RPC_URL")]
    rpc: String,
    /// Deployer private key (hex); prefer the environment variable to keep it out of `ps`.
    #[arg(long, env = "LCW_DEPLOYER_KEY", hide_env_values = true)]
    private_key: String,
    /// Dispatcher address (signs session assignments); default: the deployer.
    #[arg(long, env = "LCW_DISPATCHER")]
    dispatcher: Option<String>,
    /// Disputer address (resolves disputes); default: the deployer.
    #[arg(long, env = "LCW_DISPUTER")]
    disputer: Option<String>,
    /// Dispute window in seconds.
    #[arg(long, default_value_t = 60)]
    dispute_window: u64,
    /// Ack timeout in seconds.
    #[arg(long, default_value_t = 30)]
    ack_timeout: u64,
    /// Completion timeout in seconds.
    #[arg(long, default_value_t = 60)]
    completion_timeout: u64,
    /// Minimum worker stake in LCAI.
    #[arg(long, default_value = "100")]
    min_stake: String,
    /// Assign sessions by sortition (SessionManager) instead of the dispatcher's signature.
    #[arg(long)]
    sortition: bool,
    /// Where to write the profile (default: print it on stdout).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub(crate) async fn run(args: DeployArgs) -> anyhow::Result<()> {
    let key = args.private_key.trim().trim_start_matches("0x");
    let signer: PrivateKeySigner = key
        .parse()
        .map_err(|_| anyhow::anyhow!("--private-key / LCW_DEPLOYER_KEY is not a 32-byte hex private key"))?;
    let dispatcher = args.dispatcher.as_deref().map(parse_address).transpose().context("--dispatcher")?;
    let disputer = args.disputer.as_deref().map(parse_address).transpose().context("--disputer")?;
    let mut config = DeployConfig::devnet(dispatcher.unwrap_or(signer.address()), disputer.unwrap_or(signer.address()));
    config.dispute_window = args.dispute_window;
    config.ack_timeout = args.ack_timeout;
    config.completion_timeout = args.completion_timeout;
    config.min_worker_stake = Lcai::parse(&args.min_stake).context("--min-stake")?;
    config.sortition = args.sortition;
    let deployment = deploy(&args.rpc, signer, &config).await?;
    let profile = Profile {
        name: "deployed".into(),
        chain_id: deployment.chain_id,
        rpc_url: args.rpc.clone(),
        rpc_fallback_urls: Vec::new(),
        ws_url: None,
        beacon_url: None,
        gateway_url: None,
        start_block: deployment.start_block,
        contracts: Contracts { ..deployment.contracts },
        accounts: Vec::new(),
    };
    eprintln!("SessionManager {} (AIConfig publishes it)", deployment.session_manager);
    match args.out {
        Some(path) => {
            profile.save(&path).with_context(|| format!("writing {}", path.display()))?;
            println!("{}", path.display());
        }
        None => println!("{}", serde_json::to_string_pretty(&profile)?),
    }
    Ok(())
}
