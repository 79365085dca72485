//! What the chain says before the first job: the timeouts, the SessionManager, the slash a
//! completion protects, each model's token limit, and the registered encryption key.

use super::*;

/// What the chain says the worker must respect.
#[derive(Debug, Clone, Copy)]
pub(super) struct ChainRules {
    pub(super) completion_timeout: u64,
    pub(super) manager: Address,
    pub(super) sortition: bool,
    /// The slash a completion timeout realizes (at the minimum stake).
    pub(super) completion_slash: u128,
    pub(super) worker_fee_bps: u64,
}

impl ChainRules {
    pub(super) async fn read(config: &WorkConfig, chain: &Chain) -> Result<ChainRules, WorkerError> {
        let ai = AIConfig::new(config.profile.contracts.ai_config, chain.provider());
        let e =
            |what: &'static str| move |err: alloy::contract::Error| read_failed(format_args!("AIConfig.{what}"), err);
        // Chain state, not trusted to fit: a value past u64 saturates (a timeout that never
        // comes, a share that is all of the fee) instead of panicking.
        let completion_timeout: u64 =
            ai.getCompletionTimeout().call().await.map_err(e("getCompletionTimeout"))?.saturating_to();
        let manager = ai.getSessionManagerAddress().call().await.map_err(e("getSessionManagerAddress"))?;
        if let Some(expected) = config.session_manager
            && expected != manager
        {
            return Err(WorkerError::Config(format!(
                "SESSION_MANAGER_ADDRESS is {expected} but AIConfig {} names {manager} as the SessionManager; lcw \
                 reads it from AIConfig: unset the variable (or correct it)",
                config.profile.contracts.ai_config
            )));
        }
        let sortition = ai.getSortitionEnabled().call().await.map_err(e("getSortitionEnabled"))?;
        let stake = ai.getMinWorkerStake().call().await.map_err(e("getMinWorkerStake"))?;
        let slash_bps = ai.getCompletionTimeoutSlashBps().call().await.map_err(e("getCompletionTimeoutSlashBps"))?;
        let worker_fee_bps = ai.getWorkerFeeBps().call().await.map_err(e("getWorkerFeeBps"))?.saturating_to();
        let completion_slash = (stake.saturating_mul(slash_bps) / U256::from(10_000u64)).saturating_to();
        Ok(ChainRules { completion_timeout, manager, sortition, completion_slash, worker_fee_bps })
    }
}

/// A served model: its token limit (`--num-predict`, lowered to the model's on-chain limit)
/// and what a job of it protects. Fails when an answer could not fit one blob.
pub(super) async fn served_model(
    config: &WorkConfig,
    chain: &Chain,
    rules: &ChainRules,
    name: &str,
) -> Result<Served, WorkerError> {
    let ai = AIConfig::new(config.profile.contracts.ai_config, chain.provider());
    let num_predict = config.llm.config().num_predict;
    let id = ModelId::from_name(name).0;
    let e = |what: &'static str| {
        move |err: alloy::contract::Error| read_failed(format_args!("AIConfig.{what}({name})"), err)
    };
    let max: u64 = ai.getModelMaxOutputTokens(id).call().await.map_err(e("getModelMaxOutputTokens"))?.saturating_to();
    let fee: u128 = ai.getModelFee(id).call().await.map_err(e("getModelFee"))?.saturating_to();
    let limit = job::token_limit(num_predict, name, max).map_err(WorkerError::Config)?;
    if limit < num_predict {
        tracing::info!(model = %name, num_predict, limit, "answers are limited to the model's on-chain max output tokens");
    }
    let share = fee.saturating_mul(u128::from(rules.worker_fee_bps)) / 10_000;
    let protects = rules.completion_slash.saturating_add(share);
    Ok(Served { name: name.to_owned(), llm: config.llm.with_num_predict(limit), protects })
}

/// The encryption key registered for `me` must be the local one. A worker the store shows
/// deregistered (in block `deregistered`) and with no key on chain starts without it: it only
/// finishes what it owes, with the session keys it was given while registered, then stops.
pub(super) async fn check_encryption_key(
    config: &WorkConfig,
    chain: &Chain,
    me: Address,
    deregistered: Option<u64>,
) -> Result<(), WorkerError> {
    let registered =
        lcw_schema::bindings::WorkerRegistry::new(config.profile.contracts.worker_registry, chain.provider())
            .getWorkerEncryptionKey(me)
            .call()
            .await
            .map_err(|e| read_failed("getWorkerEncryptionKey", e))?;
    if let Some(block) = deregistered
        && registered.is_empty()
    {
        tracing::info!(block, "this worker was deregistered in block {block}: no encryption key to check");
        return Ok(());
    }
    if registered.as_ref() != config.secret.public_key().as_slice() {
        return Err(WorkerError::Config(format!(
            "the encryption key registered for {me} is not the local one: sessions for this worker cannot be \
             decrypted here (run `lcw status`; `lcw keys recover` restores an archived key)"
        )));
    }
    Ok(())
}
