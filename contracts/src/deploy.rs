//! Deploys and configures the devnet contracts against any node (`lcw deploy --rpc URL`, and
//! `lcw devnet` on its own anvil): AIConfig, WorkerRegistry, JobRegistry and the SessionManager
//! (sortition), whose address AIConfig publishes as on the real network.
//!
//! WorkerRegistry and JobRegistry need each other's address; instead of a setter the upstream ABI
//! does not have, JobRegistry's address is predicted from the deployer's nonce (CREATE addresses
//! are `keccak(rlp(sender, nonce))`) and checked after deployment.

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionReceipt;
use alloy::signers::local::PrivateKeySigner;
use lcw_schema::bindings::{AIConfig, JobRegistry, SessionManager, WorkerRegistry};
use lcw_schema::profile::Contracts;
use lcw_schema::types::{Lcai, ModelId};

/// The model every devnet registers: the real small model the worker tests run.
pub const DEFAULT_MODEL: &str = "gemma3-270m";

/// Capability names a devnet registers (WorkerRegistry bits 0, 1, ...): `search` is the one the
/// official worker advertises; `vision` gives the tests a second bit.
pub const DEFAULT_CAPABILITIES: [&str; 2] = ["search", "vision"];

/// A model to whitelist (WorkerRegistry) and register (AIConfig).
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// Name; the id is keccak256(name).
    pub name: String,
    /// Fee per job.
    pub fee: Lcai,
    /// Output token cap.
    pub max_output_tokens: u64,
}

/// Governance parameters set at deployment.
#[derive(Debug, Clone)]
pub struct DeployConfig {
    /// Seconds a worker has to acknowledge a job.
    pub ack_timeout: u64,
    /// Seconds a worker has to complete an acknowledged job.
    pub completion_timeout: u64,
    /// Seconds after completion during which a job can be disputed and cannot be released.
    pub dispute_window: u64,
    /// Seconds the disputer has to resolve a dispute before it defaults.
    pub resolution_timeout: u64,
    /// Minimum worker stake.
    pub min_worker_stake: Lcai,
    /// Seconds a suspension lasts.
    pub suspension_cooldown: u64,
    /// Models to whitelist and register.
    pub models: Vec<ModelSpec>,
    /// Signs session assignments.
    pub dispatcher: Address,
    /// Resolves disputes.
    pub disputer: Address,
    /// Receives the protocol share; `None` = the deployer.
    pub treasury: Option<Address>,
    /// Receives the fee-pool share; `None` = the deployer.
    pub fee_pool: Option<Address>,
    /// Sessions are assigned by SessionManager's sortition (AIConfig.setSortitionEnabled), as on
    /// today's testnet; otherwise by the dispatcher's signature (the legacy path).
    pub sortition: bool,
    /// Blocks over which a session request's claim window widens to every eligible worker.
    pub claim_window_blocks: u64,
    /// A worker with this many active jobs cannot claim more sessions.
    pub max_concurrent_jobs: u64,
    /// Capability names to register, in bit order.
    pub capabilities: Vec<String>,
}

impl DeployConfig {
    /// Short devnet defaults: 30 s ack, 60 s completion, 60 s dispute window and resolution,
    /// 100 LCAI minimum stake, gemma3-270m at 0.01 LCAI per job; the dispatcher assigns sessions
    /// (sortition off) and, when sortition is on, a claim window of 5 blocks and 64 active jobs
    /// per worker.
    pub fn devnet(dispatcher: Address, disputer: Address) -> Self {
        DeployConfig {
            ack_timeout: 30,
            completion_timeout: 60,
            dispute_window: 60,
            resolution_timeout: 60,
            min_worker_stake: Lcai::from_lcai(100),
            suspension_cooldown: 300,
            models: vec![ModelSpec {
                name: DEFAULT_MODEL.into(),
                fee: Lcai(U256::from(10_000_000_000_000_000u128)),
                max_output_tokens: 256,
            }],
            dispatcher,
            disputer,
            treasury: None,
            fee_pool: None,
            sortition: false,
            claim_window_blocks: 5,
            max_concurrent_jobs: 64,
            capabilities: DEFAULT_CAPABILITIES.iter().map(|c| (*c).to_owned()).collect(),
        }
    }
}

/// What was deployed.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The three addresses a profile names.
    pub contracts: Contracts,
    /// The SessionManager (AIConfig.getSessionManagerAddress names it; profiles do not).
    pub session_manager: Address,
    /// The block of the first deployment (where indexing starts).
    pub start_block: u64,
    /// Chain id of the node.
    pub chain_id: u64,
}

/// Why deployment failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The node could not be reached or refused a request.
    #[error("rpc error during {step}: {message}")]
    Rpc {
        /// What was being done.
        step: String,
        /// The transport or node error.
        message: String,
    },
    /// A deployment or configuration transaction reverted.
    #[error("{step} reverted (tx {tx}); is the deployer funded and the node a fresh chain?")]
    Reverted {
        /// What was being done.
        step: String,
        /// Transaction hash.
        tx: String,
    },
    /// JobRegistry did not land at the predicted address (another transaction took a nonce).
    #[error(
        "JobRegistry deployed at {actual}, not at the predicted {predicted}: another transaction from the deployer interleaved; deploy again from an idle account"
    )]
    AddressMismatch {
        /// Predicted address.
        predicted: Address,
        /// Actual address.
        actual: Address,
    },
    /// The deployer cannot pay.
    #[error("deployer {address} has no funds on this chain; fund it first")]
    Unfunded {
        /// The deployer.
        address: Address,
    },
}

fn rpc(step: &str) -> impl FnOnce(alloy::transports::TransportError) -> DeployError + '_ {
    move |e| DeployError::Rpc { step: step.into(), message: e.to_string() }
}

fn contract_rpc(step: &str) -> impl FnOnce(alloy::contract::Error) -> DeployError + '_ {
    move |e| DeployError::Rpc { step: step.into(), message: e.to_string() }
}

/// A provider that signs with `signer` (nonce, gas and chain-id fillers).
pub fn signing_provider(rpc_url: &str, signer: PrivateKeySigner) -> Result<DynProvider, DeployError> {
    lcw_schema::ensure_tls();
    let url =
        rpc_url.parse().map_err(|e| DeployError::Rpc { step: "parse rpc url".into(), message: format!("{e}") })?;
    Ok(ProviderBuilder::new().wallet(EthereumWallet::from(signer)).connect_http(url).erased())
}

/// Deploys AIConfig, WorkerRegistry and JobRegistry from `deployer`, then applies `config`.
pub async fn deploy(
    rpc_url: &str,
    deployer: PrivateKeySigner,
    config: &DeployConfig,
) -> Result<Deployment, DeployError> {
    let owner = deployer.address();
    let provider = signing_provider(rpc_url, deployer)?;
    let chain_id = provider.get_chain_id().await.map_err(rpc("eth_chainId"))?;
    if provider.get_balance(owner).await.map_err(rpc("eth_getBalance"))?.is_zero() {
        return Err(DeployError::Unfunded { address: owner });
    }
    let nonce = provider.get_transaction_count(owner).pending().await.map_err(rpc("eth_getTransactionCount"))?;
    let predicted_job_registry = owner.create(nonce + 2);

    let ai = AIConfig::deploy_builder(&provider, owner, config.dispatcher, config.disputer)
        .nonce(nonce)
        .send()
        .await
        .map_err(contract_rpc("deploy AIConfig"))?;
    let ai_address = owner.create(nonce);
    let wr = WorkerRegistry::deploy_builder(&provider, owner, ai_address, predicted_job_registry)
        .nonce(nonce + 1)
        .send()
        .await
        .map_err(contract_rpc("deploy WorkerRegistry"))?;
    let wr_address = owner.create(nonce + 1);
    let treasury = config.treasury.unwrap_or(owner);
    let fee_pool = config.fee_pool.unwrap_or(owner);
    let jr = JobRegistry::deploy_builder(&provider, owner, wr_address, ai_address, treasury, fee_pool)
        .nonce(nonce + 2)
        .send()
        .await
        .map_err(contract_rpc("deploy JobRegistry"))?;
    let sm =
        SessionManager::deploy_builder(&provider, owner, predicted_job_registry, wr_address, ai_address, Address::ZERO)
            .nonce(nonce + 3)
            .send()
            .await
            .map_err(contract_rpc("deploy SessionManager"))?;

    let ai_receipt = confirm(ai.get_receipt().await.map_err(pending("deploy AIConfig"))?, "deploy AIConfig")?;
    confirm(wr.get_receipt().await.map_err(pending("deploy WorkerRegistry"))?, "deploy WorkerRegistry")?;
    let jr_receipt = confirm(jr.get_receipt().await.map_err(pending("deploy JobRegistry"))?, "deploy JobRegistry")?;
    let jr_address = jr_receipt.contract_address.unwrap_or_default();
    if jr_address != predicted_job_registry {
        return Err(DeployError::AddressMismatch { predicted: predicted_job_registry, actual: jr_address });
    }
    let sm_receipt =
        confirm(sm.get_receipt().await.map_err(pending("deploy SessionManager"))?, "deploy SessionManager")?;
    let session_manager = sm_receipt.contract_address.unwrap_or_default();
    let contracts = Contracts { worker_registry: wr_address, job_registry: jr_address, ai_config: ai_address };
    configure(&provider, &contracts, session_manager, config).await?;
    Ok(Deployment { contracts, session_manager, start_block: ai_receipt.block_number.unwrap_or_default(), chain_id })
}

/// Applies the governance parameters, models, capabilities and sortition settings of `config`
/// (as the contracts' owner), and publishes `session_manager` in AIConfig.
pub async fn configure(
    provider: &DynProvider,
    contracts: &Contracts,
    session_manager: Address,
    config: &DeployConfig,
) -> Result<(), DeployError> {
    let ai = AIConfig::new(contracts.ai_config, provider);
    let wr = WorkerRegistry::new(contracts.worker_registry, provider);
    let mut pending_txs = Vec::new();
    macro_rules! send {
        ($step:expr, $call:expr) => {{
            let step: String = $step.into();
            let tx = $call.send().await.map_err(contract_rpc(&step))?;
            pending_txs.push((step, tx));
        }};
    }
    send!("setAckTimeout", ai.setAckTimeout(U256::from(config.ack_timeout)));
    send!("setCompletionTimeout", ai.setCompletionTimeout(U256::from(config.completion_timeout)));
    send!("setDisputeWindow", ai.setDisputeWindow(U256::from(config.dispute_window)));
    send!("setResolutionTimeout", ai.setResolutionTimeout(U256::from(config.resolution_timeout)));
    send!("setMinWorkerStake", ai.setMinWorkerStake(config.min_worker_stake.wei()));
    send!("setSuspensionCooldown", ai.setSuspensionCooldown(U256::from(config.suspension_cooldown)));
    send!("setSessionManagerAddress", ai.setSessionManagerAddress(session_manager));
    send!("setClaimWindowBlocks", ai.setClaimWindowBlocks(U256::from(config.claim_window_blocks)));
    send!("setMaxConcurrentJobs", ai.setMaxConcurrentJobs(U256::from(config.max_concurrent_jobs)));
    if config.sortition {
        send!("setSortitionEnabled", ai.setSortitionEnabled(true));
    }
    for name in &config.capabilities {
        send!(format!("registerCapability({name})"), wr.registerCapability(name.clone()));
    }
    for model in &config.models {
        let id = ModelId::from_name(&model.name).0;
        send!(
            format!("registerModel({})", model.name),
            ai.registerModel(id, model.fee.wei(), U256::from(model.max_output_tokens))
        );
        send!(format!("addWhitelistedModel({})", model.name), wr.addWhitelistedModel(id));
    }
    for (step, tx) in pending_txs {
        let receipt = tx.get_receipt().await.map_err(pending(&step))?;
        confirm(receipt, &step)?;
    }
    Ok(())
}

fn pending(step: &str) -> impl FnOnce(alloy::providers::PendingTransactionError) -> DeployError + '_ {
    move |e| DeployError::Rpc { step: step.into(), message: e.to_string() }
}

fn confirm(receipt: TransactionReceipt, step: &str) -> Result<TransactionReceipt, DeployError> {
    if receipt.status() {
        Ok(receipt)
    } else {
        Err(DeployError::Reverted { step: step.into(), tx: receipt.transaction_hash.to_string() })
    }
}
