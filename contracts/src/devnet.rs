//! A complete devnet in one call: anvil, the contracts deployed and configured (SessionManager
//! included; sortition on or off), the dev accounts given roles, and the network profile written
//! to the data dir. Used by `lcw devnet`
//! and by every end-to-end test (each on its own port and data dir).

use std::path::{Path, PathBuf};

use alloy::primitives::Address;
use alloy::providers::{ProviderBuilder, ext::AnvilApi};
use alloy::signers::local::PrivateKeySigner;
use lcw_schema::profile::{DevAccount, Profile, Role};

use crate::anvil::{AnvilConfig, AnvilError, AnvilProcess};
use crate::deploy::{DeployConfig, DeployError, deploy};

/// Dev accounts anvil funds, and the role of each by index.
pub const ACCOUNT_ROLES: [Role; 20] = {
    use Role::*;
    [
        Deployer, Dispatcher, Disputer, Keeper, Consumer, Consumer, Consumer, Consumer, Worker, Worker, Worker, Worker,
        Worker, Worker, Worker, Worker, Worker, Worker, Worker, Worker,
    ]
};

/// Options of `lcw devnet`.
#[derive(Debug, Clone)]
pub struct DevnetOptions {
    /// Where the profile, anvil's account list and its log go.
    pub data_dir: PathBuf,
    /// Port on 127.0.0.1 (0 picks a free one).
    pub port: u16,
    /// Seconds between blocks after deployment (0: one block per transaction).
    pub block_time: u64,
    /// Chain id.
    pub chain_id: u64,
    /// Block gas limit.
    pub gas_limit: u64,
    /// Historical states anvil keeps in memory (None: all). Reorgs and reads at old blocks need
    /// the state of that block; the default keeps 256, enough for both while keeping anvil's
    /// memory flat during long simulations.
    pub prune_history: Option<u64>,
    /// The chain's clock at genesis (None: the local clock): a devnet whose clock runs behind or
    /// ahead of this machine's.
    pub genesis_timestamp: Option<u64>,
    /// Governance parameters; dispatcher and disputer are replaced by the dev accounts.
    pub deploy: DeployConfig,
}

impl DevnetOptions {
    /// Defaults: port 8545, 1 s blocks, chain 31337, 1 G gas per block, short timeouts.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        DevnetOptions {
            data_dir: data_dir.into(),
            port: 8545,
            block_time: 1,
            chain_id: 31337,
            gas_limit: 1_000_000_000,
            prune_history: Some(256),
            genesis_timestamp: None,
            deploy: DeployConfig::devnet(Default::default(), Default::default()),
        }
    }
}

/// Why the devnet could not start.
#[derive(Debug, thiserror::Error)]
pub enum DevnetError {
    /// Anvil could not start.
    #[error(transparent)]
    Anvil(#[from] AnvilError),
    /// Deployment failed.
    #[error("deploying the devnet contracts failed: {0}")]
    Deploy(#[from] DeployError),
    /// The data dir could not be written.
    #[error("cannot write to data dir {path}: {source}")]
    DataDir {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Switching anvil to interval mining failed.
    #[error("cannot set anvil's block time: {0}")]
    Mining(String),
}

/// A running devnet; anvil stops when it is dropped.
#[derive(Debug)]
pub struct Devnet {
    /// The anvil process.
    pub anvil: AnvilProcess,
    /// The profile describing it.
    pub profile: Profile,
    /// The SessionManager (also published by AIConfig.getSessionManagerAddress).
    pub session_manager: Address,
    /// Where the profile was written.
    pub profile_path: PathBuf,
}

impl Devnet {
    /// Starts anvil (one block per transaction while deploying, then `block_time`), deploys and
    /// configures the contracts and writes `<data_dir>/devnet.json`.
    pub async fn start(options: &DevnetOptions) -> Result<Devnet, DevnetError> {
        lcw_schema::ensure_tls();
        let dir = &options.data_dir;
        std::fs::create_dir_all(dir).map_err(|source| DevnetError::DataDir { path: dir.clone(), source })?;
        let anvil = AnvilProcess::spawn(&AnvilConfig {
            port: options.port,
            block_time: None,
            accounts: ACCOUNT_ROLES.len() as u32,
            gas_limit: options.gas_limit,
            chain_id: options.chain_id,
            config_out: dir.join("anvil-accounts.json"),
            log_file: Some(dir.join("anvil.log")),
            prune_history: options.prune_history,
            genesis_timestamp: options.genesis_timestamp,
        })?;
        let accounts: Vec<DevAccount> = anvil
            .accounts
            .iter()
            .zip(ACCOUNT_ROLES)
            .map(|(a, role)| DevAccount { role, address: a.address, private_key: a.private_key })
            .collect();
        let by_role = |role: Role| accounts.iter().find(|a| a.role == role).map(|a| a.address).unwrap_or_default();
        let mut config = options.deploy.clone();
        config.dispatcher = by_role(Role::Dispatcher);
        config.disputer = by_role(Role::Disputer);
        let deployer = accounts
            .iter()
            .find(|a| a.role == Role::Deployer)
            .and_then(|a| PrivateKeySigner::from_bytes(&a.private_key).ok())
            .ok_or_else(|| DevnetError::Mining("anvil funded no deployer account".into()))?;
        let deployment = deploy(&anvil.http_url(), deployer, &config).await?;
        if options.block_time > 0 {
            let url = anvil.http_url().parse().map_err(|e| DevnetError::Mining(format!("{e}")))?;
            let provider = ProviderBuilder::new().connect_http(url);
            provider
                .anvil_set_interval_mining(options.block_time)
                .await
                .map_err(|e| DevnetError::Mining(e.to_string()))?;
        }
        let profile = Profile {
            name: "devnet".into(),
            chain_id: deployment.chain_id,
            rpc_url: anvil.http_url(),
            rpc_fallback_urls: Vec::new(),
            ws_url: Some(anvil.ws_url()),
            beacon_url: Some(anvil.http_url()),
            gateway_url: None,
            start_block: deployment.start_block,
            contracts: deployment.contracts,
            accounts,
        };
        let profile_path = dir.join("devnet.json");
        profile.save(&profile_path).map_err(|source| DevnetError::DataDir { path: profile_path.clone(), source })?;
        Ok(Devnet { anvil, profile, profile_path, session_manager: deployment.session_manager })
    }

    /// The data dir's profile path for `data_dir`.
    pub fn profile_path(data_dir: &Path) -> PathBuf {
        data_dir.join("devnet.json")
    }
}
