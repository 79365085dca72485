//! The worker's operator verbs: `register`, `add-models`, `remove-models`, `top-up-stake`,
//! `reinstate`, `status`. Each reads the contracts first and refuses, with the reason and the next
//! step, anything that would revert; transactions go through the key's outbox in the store (the
//! settler's `Operator`), so nonces are shared with every other lcw process using the key.

use std::time::Duration;

use alloy::primitives::{Address, Bytes, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use anyhow::{Context, anyhow, bail};
use clap::Args;
use lcw_chain::Chain;
use lcw_chain::outbox::Intent;
use lcw_schema::bindings::{AIConfig, WorkerRegistry, decode_revert};
use lcw_schema::profile::{Profile, Role};
use lcw_schema::store::{Identity, Store};
use lcw_schema::types::{Lcai, ModelId};
use lcw_settler::ops::{Operator, Sent};
use lcw_worker::keys::{KeyDir, fingerprint, utc};
use serde_json::json;

use crate::args::{DataArgs, KeyArgs, NetworkArgs, StoreArgs, parse_address};

mod fit;

const TX_TIMEOUT: Duration = Duration::from_secs(120);
/// Gas budgeted per `addSupportedModel` when checking that the balance covers the gas.
const MODEL_GAS: u64 = 150_000;

/// Flags shared by the worker's operator verbs.
#[derive(Debug, Args)]
pub(crate) struct OpArgs {
    #[command(flatten)]
    network: NetworkArgs,
    #[command(flatten)]
    store: StoreArgs,
    // The signing key: --key KEYSTORE, else <data-dir>/keys/signing.json, else (devnet) the first worker.
    #[command(flatten)]
    key: KeyArgs,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// `lcw register`.
#[derive(Debug, Args)]
pub(crate) struct RegisterArgs {
    #[command(flatten)]
    common: OpArgs,
    /// Models to serve: names (keccak256 gives the id) or 0x-prefixed bytes32 ids, comma-separated.
    #[arg(long, env = "SUPPORTED_MODELS", value_delimiter = ',', required = true, value_parser = parse_model, value_name = "NAMES")]
    models: Vec<Model>,
    /// Stake in LCAI (default: the network's minimum, AIConfig.getMinWorkerStake).
    #[arg(long, env = "LCW_STAKE", value_parser = parse_lcai, value_name = "LCAI")]
    stake: Option<Lcai>,
    #[command(flatten)]
    server: fit::ServerArgs,
}

/// `lcw remove-models`.
#[derive(Debug, Args)]
pub(crate) struct ModelsArgs {
    #[command(flatten)]
    common: OpArgs,
    /// Model names or 0x-prefixed bytes32 ids, comma-separated.
    #[arg(long, value_delimiter = ',', required = true, value_parser = parse_model, value_name = "NAMES")]
    models: Vec<Model>,
}

/// `lcw add-models`.
#[derive(Debug, Args)]
pub(crate) struct AddModelsArgs {
    #[command(flatten)]
    common: OpArgs,
    /// Model names or 0x-prefixed bytes32 ids, comma-separated.
    #[arg(long, value_delimiter = ',', required = true, value_parser = parse_model, value_name = "NAMES")]
    models: Vec<Model>,
    #[command(flatten)]
    server: fit::ServerArgs,
}

/// `lcw top-up-stake`.
#[derive(Debug, Args)]
pub(crate) struct TopUpArgs {
    #[command(flatten)]
    common: OpArgs,
    /// LCAI to add to the stake (decimal, at most 18 decimals).
    #[arg(long, value_parser = parse_lcai, value_name = "LCAI")]
    amount: Lcai,
}

/// `lcw status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    common: OpArgs,
    /// The worker (default: the local key's address).
    #[arg(long)]
    worker: Option<String>,
    /// Also check these models (names or ids), and name them in the output.
    #[arg(long, value_delimiter = ',', value_parser = parse_model, value_name = "NAMES")]
    models: Vec<Model>,
}

/// A model named on the command line.
#[derive(Debug, Clone)]
pub(crate) struct Model {
    name: String,
    id: ModelId,
}

impl std::fmt::Display for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.name.starts_with("0x") { write!(f, "{}", self.id) } else { write!(f, "{}", self.name) }
    }
}

fn parse_model(s: &str) -> Result<Model, String> {
    ModelId::parse(s).map(|id| Model { name: s.trim().to_owned(), id }).map_err(|e| e.to_string())
}

fn parse_lcai(s: &str) -> Result<Lcai, String> {
    Lcai::parse(s).map_err(|e| e.to_string())
}

/// A worker's registration as WorkerRegistry reports it.
#[derive(Debug, Clone)]
pub(crate) struct Registration {
    pub(crate) registered: bool,
    pub(crate) stake: U256,
    pub(crate) key: Bytes,
}

pub(crate) async fn registration(chain: &Chain, profile: &Profile, worker: Address) -> anyhow::Result<Registration> {
    let wr = WorkerRegistry::new(profile.contracts.worker_registry, chain.provider().clone());
    Ok(Registration {
        registered: wr.isWorkerRegistered(worker).call().await.context("isWorkerRegistered")?,
        stake: wr.getWorkerStake(worker).call().await.context("getWorkerStake")?,
        key: wr.getWorkerEncryptionKey(worker).call().await.context("getWorkerEncryptionKey")?,
    })
}

/// The signer: --key, else the key directory's signing key, else the devnet's first worker.
fn signer(key: &KeyArgs, keys: &KeyDir, profile: &Profile, password: Option<&str>) -> anyhow::Result<PrivateKeySigner> {
    if key.key.is_none() && keys.signing_path().exists() {
        let password = match password {
            Some(p) => p.to_owned(),
            None => lcw_chain::keys::password(key.password_file.as_deref())?,
        };
        return Ok(keys.load_signer(&password)?);
    }
    key.signer(profile, None, Some(Role::Worker))
}

/// The signing verbs' context: the network, the key's outbox and the worker's address.
struct Signed {
    profile: Profile,
    op: Operator,
    worker: Address,
}

async fn signed(args: &OpArgs, data: &DataArgs, password: Option<&str>) -> anyhow::Result<Signed> {
    let profile = args.network.profile(data)?;
    let signer = signer(&args.key, &KeyDir::new(&data.data_dir), &profile, password)?;
    let db = args.store.path(data);
    // The outbox lives in the store; create it (for this network) if no indexer has yet.
    drop(
        Store::open(&db, &Identity::of(&profile))
            .with_context(|| format!("opening the store {} for the outbox", db.display()))?,
    );
    let op = Operator::open(profile.clone(), &db, signer, args.key.fees.cap()).await?;
    Ok(Signed { worker: op.outbox.sender(), profile, op })
}

impl Signed {
    fn registry(&self) -> WorkerRegistry::WorkerRegistryInstance<alloy::providers::DynProvider> {
        WorkerRegistry::new(self.profile.contracts.worker_registry, self.op.chain.provider().clone())
    }

    fn config(&self) -> AIConfig::AIConfigInstance<alloy::providers::DynProvider> {
        AIConfig::new(self.profile.contracts.ai_config, self.op.chain.provider().clone())
    }

    /// Estimates a call carrying `value`; a revert comes back decoded.
    async fn estimate(&self, to: Address, data: &Bytes, value: U256) -> anyhow::Result<u64> {
        let req = TransactionRequest::default().from(self.worker).to(to).input(data.clone().into()).value(value);
        self.op.chain.provider().estimate_gas(req).await.map_err(|e| {
            let reason = e.as_error_resp().and_then(|p| p.as_revert_data()).map(|d| decode_revert(&d));
            anyhow!("{}", reason.unwrap_or_else(|| e.to_string()))
        })
    }

    /// Sends through the outbox and waits for it to be mined. eth_estimateGas is the simulation
    /// (a revert comes back decoded and nothing is sent): unlike the settler's eth_simulateV1 it
    /// carries the value that registerWorker and topUpStake need.
    async fn send(&mut self, kind: &'static str, to: Address, data: Bytes, value: U256) -> anyhow::Result<Sent> {
        let gas =
            self.estimate(to, &data, value).await.with_context(|| format!("{kind} would revert; nothing was sent"))?;
        let head = self.op.chain.head().await?;
        let fees = self.op.chain.fees(1_000_000).await?;
        let intent = Intent {
            kind,
            to,
            data,
            value,
            gas_limit: lcw_settler::plan::gas_limit(gas),
            jobs: vec![],
            target_block: head.next_number(),
            blob: None,
            cap: self.op.cap,
        };
        let (id, hash) = self.op.submit(&intent, fees, head.number).await?;
        match self.op.wait(id, hash, TX_TIMEOUT).await {
            Ok(sent) => Ok(sent),
            Err(e) => {
                // The outbox reads receipts before nonces: a block landing between the two reads
                // makes a mined transaction look dropped. The receipt is the truth.
                for _ in 0..10 {
                    if let Some(Some(r)) = self.op.chain.receipts(&[hash]).await?.pop() {
                        if !r.status() {
                            bail!("{kind} transaction {hash} reverted in block {}", r.block_number.unwrap_or(0));
                        }
                        tracing::warn!(%hash, error = %e, "the outbox lost track of a mined transaction");
                        return Ok(Sent { tx: hash, block: r.block_number.unwrap_or(0), gas_used: r.gas_used });
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e.into())
            }
        }
    }

    /// Refuses unless the wallet covers `value` plus `gas` at the current fee cap.
    async fn ensure_funds(&self, value: U256, gas: u64, what: &str) -> anyhow::Result<()> {
        let fees = self.op.chain.fees(1_000_000).await?;
        let need = value.saturating_add(U256::from(gas).saturating_mul(U256::from(fees.max_fee)));
        let have = self.op.chain.balance(self.worker).await?;
        if have < need {
            // On a devnet the profile's worker accounts are funded: a newcomer's fresh key is not.
            let devnet = if self.profile.accounts.is_empty() {
                String::new()
            } else {
                "; on this devnet the profile's worker accounts are funded: `lcw keys archive`, then \
                 `LCW_IMPORT_KEY=<a worker's private_key from devnet.json> lcw keygen`"
                    .to_owned()
            };
            bail!(
                "{} holds {} LCAI but {what} needs {} LCAI ({} LCAI plus up to {} LCAI gas); fund it and run this \
                 again{devnet}",
                self.worker,
                Lcai(have),
                Lcai(need),
                Lcai(value),
                Lcai(need - value)
            );
        }
        Ok(())
    }

    /// Refuses, naming every one, models that WorkerRegistry has not whitelisted; warns about
    /// models AIConfig has disabled.
    async fn check_whitelisted(&self, models: &[Model]) -> anyhow::Result<()> {
        let (wr, ai) = (self.registry(), self.config());
        let mut missing = Vec::new();
        for m in models {
            if !wr.isModelWhitelisted(m.id.0).call().await.context("isModelWhitelisted")? {
                missing.push(format!("{m} ({})", m.id));
            } else if !ai.isModelEnabled(m.id.0).call().await.unwrap_or(true) {
                eprintln!(
                    "warning: {m} is whitelisted but disabled in AIConfig; no jobs arrive for it until it is enabled"
                );
            }
        }
        if !missing.is_empty() {
            bail!(
                "not whitelisted on {}: {}; nothing was sent. Check the spelling (the id is keccak256 of the name) or \
                 pass the 0x id; governance whitelists models",
                self.profile.name,
                missing.join(", ")
            );
        }
        Ok(())
    }

    /// Adds the models the worker does not support yet; returns (added, already there).
    async fn add_missing(&mut self, models: &[Model]) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        let (mut missing, mut present) = (Vec::new(), Vec::new());
        for m in models {
            if self.registry().workerSupportsModel(self.worker, m.id.0).call().await.context("workerSupportsModel")? {
                present.push(m.to_string());
            } else {
                missing.push(m);
            }
        }
        if !missing.is_empty() {
            self.ensure_funds(U256::ZERO, MODEL_GAS * missing.len() as u64, "adding the models").await?;
        }
        let mut added = Vec::new();
        for m in missing {
            let data = WorkerRegistry::addSupportedModelCall { modelId: m.id.0 }.abi_encode().into();
            let to = self.profile.contracts.worker_registry;
            self.send("add_model", to, data, U256::ZERO).await.with_context(|| {
                format!("adding {m} failed; {} were added; run the command again to add the rest", added.len())
            })?;
            added.push(m.to_string());
        }
        Ok((added, present))
    }
}

fn print(json: bool, value: serde_json::Value, lines: &[String]) {
    if json {
        println!("{value}");
    } else {
        for l in lines {
            println!("{l}");
        }
    }
}

/// `in 41 s`, `in 12 min`, `in 3 h 5 min`, `in 2 d 4 h`.
pub(crate) fn human(secs: u64) -> String {
    match secs {
        s if s < 90 => format!("{s} s"),
        s if s < 5_400 => format!("{} min", s.div_ceil(60)),
        s if s < 172_800 => format!("{} h {} min", s / 3_600, s % 3_600 / 60),
        s => format!("{} d {} h", s / 86_400, s % 86_400 / 3_600),
    }
}

pub(crate) async fn register(args: RegisterArgs, data: DataArgs) -> anyhow::Result<()> {
    let keys = KeyDir::new(&data.data_dir);
    let password = lcw_chain::keys::password(args.common.key.password_file.as_deref())?;
    // Decrypting proves the password and the file before anything is registered with the key.
    let (suite, public_key) = {
        let secret = keys.load_encryption(&password)?;
        (secret.suite(), Bytes::from(secret.public_key()))
    };
    let mut s = signed(&args.common, &data, Some(&password)).await?;
    s.check_whitelisted(&args.models).await?;
    let reg = registration(&s.op.chain, &s.profile, s.worker).await?;
    fit::ensure_fits(&s, &args.server, &args.models, reg.registered, &args.common.network.network).await?;
    let fp = fingerprint(&public_key);
    let mut lines = Vec::new();
    let mut tx = None;
    if reg.registered {
        if reg.key != public_key {
            bail!(
                "{} is registered with encryption key {} but the local key ({}) is {fp}; nothing was sent. Make the \
                 registered key active again with `lcw keys recover DIR` (`lcw keys list --network {}` shows which), \
                 or deregister first (`lcw exit`) and register the new key",
                s.worker,
                fingerprint(&reg.key),
                keys.encryption_path().display(),
                s.profile.name
            );
        }
        if args.stake.is_some() {
            eprintln!("note: already registered, so --stake is not used; `lcw top-up-stake --amount LCAI` adds stake");
        }
        lines.push(format!(
            "{} is already registered with this encryption key ({suite}, {fp}); stake {} LCAI",
            s.worker,
            Lcai(reg.stake)
        ));
    } else {
        let min = s.config().getMinWorkerStake().call().await.context("AIConfig.getMinWorkerStake")?;
        let stake = args.stake.map(Lcai::wei).unwrap_or(min);
        if stake < min {
            bail!("--stake {} LCAI is below the network's minimum stake of {} LCAI", Lcai(stake), Lcai(min));
        }
        s.ensure_funds(stake, 0, "the stake").await?;
        let to = s.profile.contracts.worker_registry;
        let call = WorkerRegistry::registerWorkerCall { encryptionPubKey: public_key.clone() }.abi_encode().into();
        let gas = s.estimate(to, &call, stake).await.context("registerWorker would revert; nothing was sent")?;
        s.ensure_funds(stake, gas + MODEL_GAS * args.models.len() as u64, "registering").await?;
        let sent = s.send("register", to, call, stake).await?;
        lines.push(format!(
            "registered {} with {} LCAI stake and encryption key {fp} ({suite}) in block {} (tx {})",
            s.worker,
            Lcai(stake),
            sent.block,
            sent.tx
        ));
        tx = Some(sent.tx);
    }
    let (added, present) = s.add_missing(&args.models).await?;
    if !added.is_empty() {
        lines.push(format!("added models: {}", added.join(", ")));
    }
    if !present.is_empty() {
        lines.push(format!("already serving: {}", present.join(", ")));
    }
    let value = json!({
        "worker": s.worker, "already_registered": reg.registered, "register_tx": tx, "suite": suite,
        "encryption_key": public_key, "fingerprint": fp, "models_added": added, "models_present": present,
    });
    print(args.common.json, value, &lines);
    Ok(())
}

pub(crate) async fn add_models(args: AddModelsArgs, data: DataArgs) -> anyhow::Result<()> {
    let mut s = signed(&args.common, &data, None).await?;
    if !registration(&s.op.chain, &s.profile, s.worker).await?.registered {
        bail!("{} is not registered: run `lcw register --models ...` (it adds the models too)", s.worker);
    }
    s.check_whitelisted(&args.models).await?;
    fit::ensure_fits(&s, &args.server, &args.models, true, &args.common.network.network).await?;
    let (added, present) = s.add_missing(&args.models).await?;
    let lines = [
        format!("added: {}", if added.is_empty() { "none".into() } else { added.join(", ") }),
        format!("already serving: {}", if present.is_empty() { "none".into() } else { present.join(", ") }),
    ];
    print(args.common.json, json!({ "worker": s.worker, "added": added, "present": present }), &lines);
    Ok(())
}

pub(crate) async fn remove_models(args: ModelsArgs, data: DataArgs) -> anyhow::Result<()> {
    let mut s = signed(&args.common, &data, None).await?;
    if !registration(&s.op.chain, &s.profile, s.worker).await?.registered {
        bail!("{} is not registered", s.worker);
    }
    let (mut removed, mut absent) = (Vec::new(), Vec::new());
    for m in &args.models {
        if !s.registry().workerSupportsModel(s.worker, m.id.0).call().await.context("workerSupportsModel")? {
            absent.push(m.to_string());
            continue;
        }
        let call = WorkerRegistry::removeSupportedModelCall { modelId: m.id.0 }.abi_encode().into();
        let to = s.profile.contracts.worker_registry;
        s.send("remove_model", to, call, U256::ZERO)
            .await
            .with_context(|| format!("{m} was not removed (its open jobs must be released first: `lcw exit-plan`)"))?;
        removed.push(m.to_string());
    }
    let lines = [
        format!("removed: {}", if removed.is_empty() { "none".into() } else { removed.join(", ") }),
        format!("not served, nothing to remove: {}", if absent.is_empty() { "none".into() } else { absent.join(", ") }),
    ];
    print(args.common.json, json!({ "worker": s.worker, "removed": removed, "absent": absent }), &lines);
    Ok(())
}

pub(crate) async fn top_up_stake(args: TopUpArgs, data: DataArgs) -> anyhow::Result<()> {
    if args.amount.wei().is_zero() {
        bail!("--amount must be more than 0 LCAI");
    }
    let mut s = signed(&args.common, &data, None).await?;
    if !registration(&s.op.chain, &s.profile, s.worker).await?.registered {
        bail!("{} is not registered: `lcw register --stake LCAI` stakes when registering", s.worker);
    }
    let (to, amount) = (s.profile.contracts.worker_registry, args.amount.wei());
    let call: Bytes = WorkerRegistry::topUpStakeCall {}.abi_encode().into();
    s.ensure_funds(amount, 0, "the top-up").await?;
    let gas = s.estimate(to, &call, amount).await.context("topUpStake would revert; nothing was sent")?;
    s.ensure_funds(amount, gas, "the top-up").await?;
    let sent = s.send("top_up_stake", to, call, amount).await?;
    let stake = s.registry().getWorkerStake(s.worker).call().await.context("getWorkerStake")?;
    let min = s.config().getMinWorkerStake().call().await.context("AIConfig.getMinWorkerStake")?;
    let suspended = s.registry().getSuspendedUntil(s.worker).call().await.context("getSuspendedUntil")?;
    let mut lines = vec![format!(
        "added {} LCAI in block {} (tx {}): stake {} LCAI, minimum {} LCAI",
        args.amount,
        sent.block,
        sent.tx,
        Lcai(stake),
        Lcai(min)
    )];
    if stake < min {
        lines.push(format!("still below the minimum by {} LCAI", Lcai(min - stake)));
    }
    if !suspended.is_zero() {
        lines.push("the worker is suspended: run `lcw reinstate` (once the suspension has ended)".into());
    }
    let value = json!({
        "worker": s.worker, "tx": sent.tx, "stake_wei": stake.to_string(), "min_stake_wei": min.to_string(),
        "suspended": !suspended.is_zero(),
    });
    print(args.common.json, value, &lines);
    Ok(())
}

pub(crate) async fn reinstate(args: OpArgs, data: DataArgs) -> anyhow::Result<()> {
    let mut s = signed(&args, &data, None).await?;
    let reg = registration(&s.op.chain, &s.profile, s.worker).await?;
    if !reg.registered {
        bail!("{} is not registered", s.worker);
    }
    let until = s.registry().getSuspendedUntil(s.worker).call().await.context("getSuspendedUntil")?;
    let until = u64::try_from(until).unwrap_or(u64::MAX);
    if until == 0 {
        print(
            args.json,
            json!({ "worker": s.worker, "suspended": false }),
            &[format!("{} is not suspended; nothing to do", s.worker)],
        );
        return Ok(());
    }
    let now = s.op.chain.head().await?.timestamp;
    if until > now {
        bail!(
            "{} is suspended until {} (chain time; in {}); reinstate can succeed from then: run `lcw reinstate` again",
            s.worker,
            utc(until),
            human(until - now)
        );
    }
    let min = s.config().getMinWorkerStake().call().await.context("AIConfig.getMinWorkerStake")?;
    if reg.stake < min {
        bail!(
            "the stake of {} LCAI is below the minimum of {} LCAI: run `lcw top-up-stake --amount {}` first",
            Lcai(reg.stake),
            Lcai(min),
            Lcai(min - reg.stake)
        );
    }
    let call = WorkerRegistry::reinstateCall {}.abi_encode().into();
    let sent = s.send("reinstate", s.profile.contracts.worker_registry, call, U256::ZERO).await?;
    let line = format!("{} reinstated in block {} (tx {}); its offense count is reset", s.worker, sent.block, sent.tx);
    print(args.json, json!({ "worker": s.worker, "suspended": true, "reinstated": true, "tx": sent.tx }), &[line]);
    Ok(())
}

pub(crate) async fn status(args: StatusArgs, data: DataArgs) -> anyhow::Result<()> {
    let profile = args.common.network.profile(&data)?;
    let keys = KeyDir::new(&data.data_dir);
    let named = args.worker.as_deref().map(parse_address).transpose().context("--worker")?;
    // The address needs no password when the key directory's keystore names it.
    let worker = match (named, keys.signing_address()) {
        (Some(w), _) => w,
        (None, Some(a)) if args.common.key.key.is_none() => a,
        _ => signer(&args.common.key, &keys, &profile, None)?.address(),
    };
    let chain = Chain::open(&profile, Duration::from_secs(20)).await?;
    let wr = WorkerRegistry::new(profile.contracts.worker_registry, chain.provider().clone());
    let ai = AIConfig::new(profile.contracts.ai_config, chain.provider().clone());
    let reg = registration(&chain, &profile, worker).await?;
    let w = lcw_settler::ops::on_chain_worker(&chain, &profile, worker).await?;
    let min = ai.getMinWorkerStake().call().await.context("AIConfig.getMinWorkerStake")?;
    let until = u64::try_from(wr.getSuspendedUntil(worker).call().await.context("getSuspendedUntil")?).unwrap_or(0);
    let now = chain.head().await?.timestamp;
    // getWorkerModels is a devnet extension; elsewhere only the models named with --models are checked.
    let mut models: Vec<_> = wr.getWorkerModels(worker).call().await.unwrap_or_default();
    for m in &args.models {
        if !models.contains(&m.id.0) && wr.workerSupportsModel(worker, m.id.0).call().await.unwrap_or(false) {
            models.push(m.id.0);
        }
    }
    let name = |id: &alloy::primitives::B256| args.models.iter().find(|m| &m.id.0 == id).map(|m| m.to_string());
    let local = keys.encryption_public().ok();
    let matches = local.as_ref().map(|(_, k)| reg.registered && reg.key.as_ref() == k.as_slice());
    let sortition = ai.getSortitionEnabled().call().await.context("AIConfig.getSortitionEnabled")?;
    let manager = ai.getSessionManagerAddress().call().await.context("AIConfig.getSessionManagerAddress")?;
    let db = args.common.store.path(&data);
    let sessions = sessions(&db, &profile, worker).unwrap_or_else(|e| {
        tracing::warn!(store = %db.display(), error = %e, "the store's claims could not be read");
        None
    });
    if args.common.json {
        let value = json!({
            "worker": worker, "registered": reg.registered, "stake_wei": reg.stake.to_string(),
            "min_stake_wei": min.to_string(), "suspended_until": until, "suspended": until > now,
            "models": models.iter().map(|id| json!({ "id": id, "name": name(id) })).collect::<Vec<_>>(),
            "encryption_key": { "on_chain": reg.key, "local": local.as_ref().map(|(_, k)| Bytes::from(k.clone())),
                                "suite": local.as_ref().map(|(s, _)| s), "matches": matches },
            "active_jobs": w.active_jobs, "balance_wei": w.balance.to_string(), "wallet_wei": w.native.to_string(),
            "sortition": { "enabled": sortition, "session_manager": manager, "drained": sessions.as_ref().map(|s| s.drained),
                           "claims": sessions.as_ref().map(|s| &s.counts), "missed": sessions.as_ref().map(|s| &s.missed) },
            "gateway": profile.gateway_url.as_deref().map(lcw_schema::profile::redact_url),
        });
        println!("{value}");
        return Ok(());
    }
    println!("worker {}: {}", worker, if reg.registered { "registered" } else { "not registered" });
    let stake_note = if !reg.registered {
        "register with `lcw register --models NAME`".to_owned()
    } else if reg.stake < min {
        format!("below the minimum: `lcw top-up-stake --amount {}`", Lcai(min - reg.stake))
    } else {
        "ok".to_owned()
    };
    println!("  stake             {} LCAI (minimum {} LCAI): {stake_note}", Lcai(reg.stake), Lcai(min));
    let suspension = match until {
        0 => "none".to_owned(),
        u if u > now => format!("suspended until {} (in {}); then `lcw reinstate`", utc(u), human(u - now)),
        u => format!("ended at {}: run `lcw reinstate`", utc(u)),
    };
    println!("  suspension        {suspension}");
    let listed: Vec<String> =
        models.iter().map(|id| name(id).map(|n| format!("{n} ({id})")).unwrap_or_else(|| id.to_string())).collect();
    println!("  models            {}", if listed.is_empty() { "none".into() } else { listed.join(", ") });
    let key = match (&local, matches) {
        (None, _) => format!("no local key ({}): `lcw keygen`", keys.encryption_path().display()),
        (Some((suite, k)), Some(true)) => format!("matches the local key ({suite}, {})", fingerprint(k)),
        (Some((_, k)), _) if !reg.registered => format!("local key {} (not registered)", fingerprint(k)),
        (Some((_, k)), _) => format!(
            "DIFFERS: on chain {}, local {}: `lcw keys list --network {}` shows which archived set to recover",
            fingerprint(&reg.key),
            fingerprint(k),
            profile.name
        ),
    };
    println!("  encryption key    {key}");
    println!("  active jobs       {}", w.active_jobs);
    println!("  earnings balance  {} LCAI", Lcai(w.balance));
    println!("  wallet balance    {} LCAI", Lcai(w.native));
    let intake = if sortition {
        let claims = match &sessions {
            Some(s) => s.summary(),
            None => "no store here to count claims (`lcw run --work` keeps one)".into(),
        };
        format!("by sortition (SessionManager {manager}): {claims}")
    } else {
        "signed by the dispatcher (sortition is off on this network)".to_owned()
    };
    println!("  sessions          {intake}");
    if let Some(s) = &sessions {
        println!("  refused jobs      {}", s.refusals());
    }
    if let Some(g) = &profile.gateway_url {
        println!("  gateway           {}", lcw_schema::profile::redact_url(g));
    }
    Ok(())
}

/// The worker's sessions as its store has them: claims by outcome, misses by reason, drained.
struct Sessions {
    counts: std::collections::BTreeMap<lcw_schema::store::claims::ClaimState, u64>,
    missed: std::collections::BTreeMap<String, u64>,
    drained: bool,
    /// The latest refused jobs, newest first.
    refused: Vec<lcw_schema::store::refusals::Refusal>,
}

impl Sessions {
    fn summary(&self) -> String {
        use lcw_schema::store::claims::ClaimState;
        let n = |s: ClaimState| self.counts.get(&s).copied().unwrap_or(0);
        let reasons: Vec<String> = self.missed.iter().map(|(r, k)| format!("{r} {k}")).collect();
        let missed = if reasons.is_empty() { String::new() } else { format!(" ({})", reasons.join(", ")) };
        format!(
            "{} won, {} lost, {} missed{missed}, {} in flight; {}",
            n(ClaimState::Won),
            n(ClaimState::Lost),
            n(ClaimState::Missed),
            n(ClaimState::Sent),
            if self.drained { "drained: claims nothing new" } else { "not drained" }
        )
    }

    /// The latest refusals, one per line under the heading; "none" when there are none.
    fn refusals(&self) -> String {
        if self.refused.is_empty() {
            return "none".into();
        }
        let now = lcw_schema::store::unix_now();
        let lines: Vec<String> = self
            .refused
            .iter()
            .map(|r| {
                let state = match (r.last, r.acked) {
                    (true, true) => "given up after its ack",
                    (true, false) => "not served",
                    (false, _) => "held back",
                };
                let ago = human(now.saturating_sub(r.updated_at));
                format!("job {} ({state}, {ago} ago) {}: {}", r.job_id, r.step, r.reason)
            })
            .collect();
        lines.join("\n                    ")
    }
}

/// Reads `db` when it exists and belongs to `profile`'s network (`lcw status` needs no store of
/// its own).
fn sessions(db: &std::path::Path, profile: &Profile, worker: Address) -> anyhow::Result<Option<Sessions>> {
    if !db.exists() {
        return Ok(None);
    }
    let store = Store::open_readonly_as(db, &Identity::of(profile))?;
    Ok(Some(Sessions {
        counts: lcw_schema::store::claims::counts(store.conn(), worker)?,
        missed: lcw_schema::store::claims::missed_by_reason(store.conn(), worker)?,
        drained: lcw_schema::store::obligations::drained(store.conn(), worker)?,
        refused: lcw_schema::store::refusals::recent(store.conn(), worker, 5)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human(41), "41 s");
        assert_eq!(human(2_460), "41 min");
        assert_eq!(human(3 * 3_600 + 300), "3 h 5 min");
        assert_eq!(human(2 * 86_400 + 4 * 3_600), "2 d 4 h");
    }

    #[test]
    fn models_parse_by_name_or_id() {
        let m = parse_model("gemma3-270m").unwrap();
        assert_eq!(m.id, ModelId::from_name("gemma3-270m"));
        assert_eq!(m.to_string(), "gemma3-270m");
        assert!(parse_model("0x12").unwrap_err().contains("64 hex digits"));
        assert!(parse_lcai("abc").unwrap_err().contains("not a plain decimal"));
    }
}
