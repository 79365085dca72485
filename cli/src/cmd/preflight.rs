//! `lcw preflight`: read-only go-live checks for a worker. Each check prints one line (ok, WARN,
//! FAIL, or skip when it needs an earlier check that failed, saying which) and, for anything
//! wrong, the lcw command that fixes it. Any FAIL makes the command exit 1.
//!
//! Nothing is sent on chain and no password is asked: the worker's address comes from
//! `--worker`, the keystore's `address` field or the devnet profile, and the encryption key is
//! compared through its public header. The gateway sign-in (a signed challenge, nothing on chain)
//! is tried only when the key is at hand without a prompt. The LLM flags are `lcw work`'s, so a passing preflight
//! means `lcw work` with the same flags finds what it needs.

use std::path::Path;
use std::time::{Duration, Instant};

use alloy::eips::eip4844::DATA_GAS_PER_BLOB;
use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use anyhow::{Context, anyhow, bail};
use clap::Args;
use lcw_chain::rpc::{Rpc, RpcError};
use lcw_chain::{Chain, ChainError};
use lcw_schema::bindings::{AIConfig, WorkerRegistry};
use lcw_schema::profile::{Profile, Role, redact_url, redact_urls};
use lcw_schema::types::{Lcai, ModelId};
use lcw_worker::blobs::BlobSource;
use lcw_worker::keys::{KeyDir, KeyError, fingerprint, utc};
use lcw_worker::llm::{Api, LlmError};
use lcw_worker::pipeline::{ACK_GAS, COMPLETE_GAS};
use serde::Serialize;

use crate::args::{DataArgs, KeyArgs, NetworkArgs, parse_address};
use crate::cmd::register::{Registration, human, registration};
use crate::cmd::work::{LlmArgs, SortitionArgs};

mod fit;
mod model_set;
mod network;

/// RPC and beacon timeout: a node that takes longer is not ready to serve jobs.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The worker's default minimum priority fee (`WorkConfig::new`), so the gas budget prices
/// transactions as `lcw work` would send them.
const MIN_TIP: u128 = 1_000_000_000;
/// Gas money: WARN below this many jobs' worth of gas at the current fees.
///
/// The official worker refuses to start below a fixed 50 LCAI. lcw derives the budget from the
/// node's fees instead: what one job costs the worker is known exactly (an `acknowledgeJob` of
/// [`ACK_GAS`] and a type-3 `completeJob` of [`COMPLETE_GAS`] carrying one blob), and so is the
/// fee cap the worker would pay now (twice the next base fee plus the tip; twice the blob base
/// fee). A fixed number means nothing across a devnet, a testnet and a mainnet whose gas prices
/// differ by orders of magnitude. 100 jobs leaves time to top up before the worker runs dry.
const WARN_JOBS: u64 = 100;
/// Gas money: FAIL below this many jobs' worth. A worker that cannot pay for its ack and
/// completion lets jobs time out, and timeouts are slashed from the stake.
const FAIL_JOBS: u64 = 10;

/// Read-only go-live checks: chain, contracts, registration, stake, gas money, encryption key,
/// models, LLM server and blob access.
#[derive(Debug, Args)]
pub(crate) struct PreflightArgs {
    #[command(flatten)]
    network: NetworkArgs,
    // Only the keystore's address is read (--key); no password is needed.
    #[command(flatten)]
    key: KeyArgs,
    #[command(flatten)]
    llm: LlmArgs,
    #[command(flatten)]
    sortition: SortitionArgs,
    /// The worker (default: the address of the keystore in <data-dir>/keys, or of --key).
    #[arg(long)]
    worker: Option<String>,
    /// Print the checks as a JSON list of {name, status, detail, fix}.
    #[arg(long)]
    json: bool,
}

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Warn,
    Fail,
    /// Not run: it needs an earlier check that failed (the detail says which).
    Skip,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        }
    }
}

/// One line of the report.
#[derive(Debug, Serialize)]
struct Check {
    name: String,
    status: Status,
    detail: String,
    /// What to do about a FAIL or WARN.
    fix: Option<String>,
}

impl Check {
    /// Details quote errors, which may quote a URL with its API key: URLs are redacted here, for
    /// the text and the JSON report alike.
    fn new(name: impl Into<String>, status: Status, detail: impl Into<String>, fix: Option<String>) -> Check {
        Check { name: name.into(), status, detail: redact_urls(&detail.into()), fix }
    }
    fn ok(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check::new(name, Status::Ok, detail, None)
    }
    fn fail(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::new(name, Status::Fail, detail, Some(fix.into()))
    }
    fn skip(name: impl Into<String>, why: impl Into<String>) -> Check {
        Check::new(name, Status::Skip, format!("skipped: {}", why.into()), None)
    }
}

/// What the checks share.
struct Ctx {
    profile: Profile,
    worker: Address,
    keys: KeyDir,
    /// ` --network N` for the fix commands when the network is not the default.
    network_flag: String,
    models: Vec<String>,
}

impl Ctx {
    /// `lcw <cmd>` as the user should type it on this network.
    fn lcw(&self, cmd: &str) -> String {
        format!("lcw {cmd}{}", self.network_flag)
    }
}

pub(crate) async fn run(args: PreflightArgs, data: DataArgs) -> anyhow::Result<()> {
    let profile = args.network.profile(&data)?;
    let keys = KeyDir::new(&data.data_dir);
    let worker = worker_address(&args, &keys, &profile)?;
    let network_flag = args.network.flag();
    let models = args.llm.models.iter().map(|m| m.trim().to_owned()).filter(|m| !m.is_empty()).collect();
    let ctx = Ctx { profile, worker, keys, network_flag, models };
    let mut checks = Vec::new();

    let chain = rpc_check(&ctx, &mut checks).await;
    let contracts = match &chain {
        Some(chain) => contracts_check(&ctx, chain, &mut checks).await,
        None => {
            checks.push(Check::skip("contracts", "the RPC check failed"));
            false
        }
    };
    let reg = match (&chain, contracts) {
        (Some(chain), true) => registration_checks(&ctx, chain, &mut checks).await,
        (None, _) => {
            checks.push(Check::skip("registration", "the RPC check failed"));
            checks.push(Check::skip("stake", "the RPC check failed"));
            None
        }
        (Some(_), false) => {
            checks.push(Check::skip("registration", "no contracts at the profile's addresses"));
            checks.push(Check::skip("stake", "no contracts at the profile's addresses"));
            None
        }
    };
    checks.push(match &chain {
        Some(chain) => gas_check(&ctx, chain).await.unwrap_or_else(|e| rpc_failed("gas money", e)),
        None => Check::skip("gas money", "the RPC check failed"),
    });
    checks.push(key_check(&ctx, reg.as_ref()));
    for model in &ctx.models {
        checks.push(match (&chain, contracts) {
            (Some(chain), true) => model_check(&ctx, chain, model, reg.as_ref())
                .await
                .unwrap_or_else(|e| rpc_failed(&format!("model {model}"), e)),
            (None, _) => Check::skip(format!("model {model}"), "the RPC check failed"),
            (Some(_), false) => Check::skip(format!("model {model}"), "no contracts at the profile's addresses"),
        });
    }
    let expected_manager =
        args.sortition.session_manager.as_deref().map(parse_address).transpose().context("--session-manager")?;
    match (&chain, contracts) {
        (Some(chain), true) => {
            checks.push(
                network::sortition_check(&ctx, chain, expected_manager)
                    .await
                    .unwrap_or_else(|e| rpc_failed("sortition", e)),
            );
            checks.push(
                network::claims_check(&ctx, chain, reg.as_ref()).await.unwrap_or_else(|e| rpc_failed("claims", e)),
            );
        }
        _ => {
            checks.push(Check::skip("sortition", "the chain or the contracts could not be read"));
            checks.push(Check::skip("claims", "the chain or the contracts could not be read"));
        }
    }
    llm_checks(&ctx, &args.llm, &mut checks).await;
    checks.push(fit::fit_check(&ctx, &args.llm, &args.llm.fit).await);
    let llm = args.llm.llm().ok();
    let set_chain = chain.as_ref().filter(|_| contracts);
    match model_set::model_set_checks(&ctx, set_chain, reg.as_ref(), llm.as_ref()).await {
        Ok(set) => checks.extend(set),
        Err(e) => checks.push(rpc_failed("model set", e)),
    }
    checks.push(match &chain {
        Some(chain) => blob_check(&ctx, chain).await,
        None => Check::skip("blobs", "the RPC check failed (blobs are found through block headers)"),
    });
    checks.push(network::gateway_check(&ctx, gateway_signer(&args, &ctx)).await);

    if args.json {
        println!("{}", serde_json::to_string(&checks).context("encoding the checks")?);
    } else {
        println!("preflight of worker {} on {} (chain {})", ctx.worker, ctx.profile.name, ctx.profile.chain_id);
        print!("{}", render(&checks));
    }
    let failed: Vec<&str> = checks.iter().filter(|c| c.status == Status::Fail).map(|c| c.name.as_str()).collect();
    match failed.len() {
        0 => Ok(()),
        1 => bail!("1 check failed ({}); the fix is listed with it", failed[0]),
        n => bail!("{n} checks failed ({}); the fixes are listed with them", failed.join(", ")),
    }
}

/// --worker, else --key's keystore address, else the key directory's, else the devnet's worker.
fn worker_address(args: &PreflightArgs, keys: &KeyDir, profile: &Profile) -> anyhow::Result<Address> {
    if let Some(w) = &args.worker {
        return parse_address(w).context("--worker");
    }
    if let Some(path) = &args.key.key {
        return keystore_address(path);
    }
    if let Some(a) = keys.signing_address() {
        return Ok(a);
    }
    match profile.account(Role::Worker) {
        Ok(account) => Ok(account.address),
        Err(_) => bail!("no worker to check: pass --worker ADDR, or create the worker's keys with `lcw keygen`"),
    }
}

/// The worker's key for the gateway sign-in, when it can be used without asking: the devnet's dev
/// key, or a keystore whose password was given (--password-file, LCW_PASSWORD). Preflight never
/// prompts.
fn gateway_signer(args: &PreflightArgs, ctx: &Ctx) -> Option<alloy::signers::local::PrivateKeySigner> {
    if let Some(dev) = ctx.profile.accounts.iter().find(|a| a.address == ctx.worker) {
        return alloy::signers::local::PrivateKeySigner::from_bytes(&dev.private_key).ok();
    }
    let password = lcw_chain::keys::password(args.key.password_file.as_deref()).ok()?;
    match &args.key.key {
        Some(path) => lcw_chain::keys::load_keystore(path, &password).ok(),
        None => ctx.keys.load_signer(&password).ok(),
    }
}

/// The `address` field of a geth v3 keystore (no password needed).
fn keystore_address(path: &Path) -> anyhow::Result<Address> {
    let text = std::fs::read(path).with_context(|| format!("reading the keystore {}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_slice(&text).with_context(|| format!("{} is not a JSON keystore", path.display()))?;
    let hex = json.get("address").and_then(|a| a.as_str()).ok_or_else(|| {
        anyhow!("the keystore {} has no `address` field: pass the worker with --worker ADDR", path.display())
    })?;
    let hex = if hex.starts_with("0x") { hex.to_owned() } else { format!("0x{hex}") };
    parse_address(&hex).with_context(|| format!("the `address` of {}", path.display()))
}

/// A check whose reads failed midway: the node stopped answering.
fn rpc_failed(name: &str, e: anyhow::Error) -> Check {
    Check::fail(
        name,
        format!("reading the chain failed: {e:#}"),
        "check the RPC node (--rpc-url, RPC_URL) and run this again",
    )
}

async fn rpc_check(ctx: &Ctx, checks: &mut Vec<Check>) -> Option<Chain> {
    let url = redact_url(&ctx.profile.rpc_url);
    let chain = match Chain::open(&ctx.profile, TIMEOUT).await {
        Ok(chain) => chain,
        Err(e @ ChainError::WrongChain(_)) => {
            checks.push(Check::fail(
                "rpc",
                e.to_string(),
                "use --network with the profile for this node, or fix --rpc-url",
            ));
            return None;
        }
        Err(e) => {
            let fix = "start the node, or point --rpc-url (RPC_URL) or --network at one that answers";
            checks.push(Check::fail("rpc", format!("{url} does not answer: {e}"), fix));
            return None;
        }
    };
    // A fallback is used only when the primary fails: check now that each one serves this chain.
    for fallback in &ctx.profile.rpc_fallback_urls {
        let alone = Rpc::with_chain(std::slice::from_ref(fallback), TIMEOUT, Some(ctx.profile.chain_id));
        if let Err(e @ RpcError::WrongChain { .. }) =
            async { alone?.give_up_after(Duration::ZERO).chain_id().await }.await
        {
            let fix = "remove it from rpc_fallback_urls, or use the network profile for its chain";
            checks.push(Check::fail("rpc", format!("fallback {}: {e}", redact_url(fallback)), fix));
            return None;
        }
    }
    let head = match chain.head().await {
        Ok(head) => head,
        Err(e) => {
            checks.push(Check::fail("rpc", format!("{url}: {e}"), "check the RPC node and run this again"));
            return None;
        }
    };
    checks.push(Check::ok(
        "rpc",
        format!("{url} answers chain {}, head {} ({})", chain.chain_id, head.number, utc(head.timestamp)),
    ));
    Some(chain)
}

/// Code at the three addresses; true when all have some.
async fn contracts_check(ctx: &Ctx, chain: &Chain, checks: &mut Vec<Check>) -> bool {
    let c = &ctx.profile.contracts;
    let mut missing = Vec::new();
    for (name, address) in
        [("WorkerRegistry", c.worker_registry), ("JobRegistry", c.job_registry), ("AIConfig", c.ai_config)]
    {
        match chain.provider().get_code_at(address).await {
            Ok(code) if !code.is_empty() => {}
            Ok(_) => missing.push(format!("{name} {address}")),
            Err(e) => {
                checks.push(rpc_failed("contracts", anyhow!("eth_getCode({address}): {e}")));
                return false;
            }
        }
    }
    if missing.is_empty() {
        checks.push(Check::ok("contracts", "WorkerRegistry, JobRegistry and AIConfig have code"));
        return true;
    }
    let fix = format!(
        "the `{}` profile's addresses are not deployed on this chain: use the right --network, or fix the \
         WORKER_REGISTRY_ADDRESS / JOB_REGISTRY_ADDRESS / AI_CONFIG_ADDRESS overrides",
        ctx.profile.name
    );
    checks.push(Check::fail("contracts", format!("no code at {}", missing.join(", ")), fix));
    false
}

/// Registration and suspension, then the stake; the registration for the later checks.
async fn registration_checks(ctx: &Ctx, chain: &Chain, checks: &mut Vec<Check>) -> Option<Registration> {
    let reg = match registration(chain, &ctx.profile, ctx.worker).await {
        Ok(reg) => reg,
        Err(e) => {
            checks.push(rpc_failed("registration", e));
            checks.push(Check::skip("stake", "the registration could not be read"));
            return None;
        }
    };
    if !reg.registered {
        let fix = ctx.lcw(&format!("register --models {}", ctx.models.join(",")));
        checks.push(Check::fail("registration", format!("{} is not registered", ctx.worker), fix));
        checks.push(Check::skip("stake", "the worker is not registered"));
        return Some(reg);
    }
    checks.push(suspension_check(ctx, chain).await.unwrap_or_else(|e| rpc_failed("registration", e)));
    checks.push(stake_check(ctx, chain, &reg).await.unwrap_or_else(|e| rpc_failed("stake", e)));
    Some(reg)
}

async fn suspension_check(ctx: &Ctx, chain: &Chain) -> anyhow::Result<Check> {
    let wr = WorkerRegistry::new(ctx.profile.contracts.worker_registry, chain.provider().clone());
    let until = wr.getSuspendedUntil(ctx.worker).call().await.context("getSuspendedUntil")?;
    let until = u64::try_from(until).unwrap_or(u64::MAX);
    let now = chain.head().await?.timestamp;
    Ok(match until {
        0 => Check::ok("registration", format!("{} is registered and not suspended", ctx.worker)),
        u if u > now => Check::fail(
            "registration",
            format!(
                "{} is suspended until {} (in {}, chain time); no jobs are assigned until then",
                ctx.worker,
                utc(u),
                human(u - now)
            ),
            format!("wait until {}, then {}", utc(u), ctx.lcw("reinstate")),
        ),
        u => Check::fail(
            "registration",
            format!(
                "{}'s suspension ended at {} but it is not reinstated; no jobs are assigned until it is",
                ctx.worker,
                utc(u)
            ),
            ctx.lcw("reinstate"),
        ),
    })
}

async fn stake_check(ctx: &Ctx, chain: &Chain, reg: &Registration) -> anyhow::Result<Check> {
    let ai = AIConfig::new(ctx.profile.contracts.ai_config, chain.provider().clone());
    let min = ai.getMinWorkerStake().call().await.context("AIConfig.getMinWorkerStake")?;
    let detail = format!("{} LCAI (minimum {} LCAI)", Lcai(reg.stake), Lcai(min));
    if reg.stake >= min {
        return Ok(Check::ok("stake", detail));
    }
    let fix = ctx.lcw(&format!("top-up-stake --amount {}", Lcai(min - reg.stake)));
    Ok(Check::fail("stake", format!("{detail}: below the minimum, no jobs are assigned"), fix))
}

async fn gas_check(ctx: &Ctx, chain: &Chain) -> anyhow::Result<Check> {
    let fees = chain.fees(MIN_TIP).await?;
    // As the worker prices a completion's blob: twice the blob base fee, at least 1 wei.
    let blob_fee = chain.provider().get_blob_base_fee().await.unwrap_or(1).max(1).saturating_mul(2);
    let per_job = U256::from(ACK_GAS + COMPLETE_GAS) * U256::from(fees.max_fee)
        + U256::from(DATA_GAS_PER_BLOB) * U256::from(blob_fee);
    let balance = chain.balance(ctx.worker).await?;
    let (status, detail) = gas_verdict(balance, per_job);
    let fix = (status != Status::Ok).then(|| {
        let target = per_job * U256::from(WARN_JOBS);
        format!(
            "send at least {} LCAI to {} ({WARN_JOBS} jobs' gas at the current fees is {} LCAI)",
            Lcai(target.saturating_sub(balance)),
            ctx.worker,
            Lcai(target)
        )
    });
    Ok(Check::new("gas money", status, detail, fix))
}

/// The verdict on a wallet `balance` when one job costs `per_job` in gas.
fn gas_verdict(balance: U256, per_job: U256) -> (Status, String) {
    if per_job.is_zero() {
        return (Status::Ok, format!("{} LCAI; gas is free on this network", Lcai(balance)));
    }
    let jobs = balance / per_job;
    let status = if jobs < U256::from(FAIL_JOBS) {
        Status::Fail
    } else if jobs < U256::from(WARN_JOBS) {
        Status::Warn
    } else {
        Status::Ok
    };
    let detail = format!(
        "{} LCAI pays the gas of about {jobs} jobs at the current fees ({} LCAI per job)",
        Lcai(balance),
        Lcai(per_job)
    );
    (status, detail)
}

/// The local encryption key, compared with the registered one.
fn key_check(ctx: &Ctx, reg: Option<&Registration>) -> Check {
    const NAME: &str = "encryption key";
    let path = ctx.keys.encryption_path();
    let (suite, local) = match ctx.keys.encryption_public() {
        Ok(key) => key,
        Err(e @ KeyError::NoEncryptionKey(_)) => return Check::fail(NAME, e.to_string(), "lcw keygen"),
        Err(e) => {
            let fix = "`lcw keys list` shows the key sets; `lcw keys recover DIR` makes an archived one active";
            return Check::fail(NAME, e.to_string(), fix);
        }
    };
    let fp = fingerprint(&local);
    let foreign = ctx.keys.signing_address().filter(|a| *a != ctx.worker);
    match reg {
        None => Check::skip(NAME, format!("the registered key could not be read (the local key is {suite} {fp})")),
        Some(r) if !r.registered => Check::skip(
            NAME,
            format!("the worker is not registered (`lcw register` registers the local key, {suite} {fp})"),
        ),
        Some(r) if r.key.as_ref() == local.as_slice() => {
            Check::ok(NAME, format!("local key {suite} {fp} is the registered key"))
        }
        Some(r) => {
            let whose = foreign.map(|a| format!(" (the local keys are {a}'s)")).unwrap_or_default();
            Check::fail(
                NAME,
                format!("registered key {} but the local key ({}) is {fp}{whose}", fingerprint(&r.key), path.display()),
                format!(
                    "`{}` shows which archived set holds the registered key; `lcw keys recover DIR` makes it active",
                    ctx.lcw("keys list")
                ),
            )
        }
    }
}

/// Whitelisted, added to the worker, enabled.
async fn model_check(ctx: &Ctx, chain: &Chain, model: &str, reg: Option<&Registration>) -> anyhow::Result<Check> {
    let name = format!("model {model}");
    let id = match ModelId::parse(model) {
        Ok(id) => id,
        Err(e) => return Ok(Check::fail(name, e.to_string(), "fix the name in --models (LCW_MODELS)")),
    };
    let wr = WorkerRegistry::new(ctx.profile.contracts.worker_registry, chain.provider().clone());
    let ai = AIConfig::new(ctx.profile.contracts.ai_config, chain.provider().clone());
    if !wr.isModelWhitelisted(id.0).call().await.context("isModelWhitelisted")? {
        return Ok(Check::fail(
            name,
            format!("not whitelisted on {} (id {id}); no jobs exist for it", ctx.profile.name),
            "check the spelling in --models (the id is keccak256 of the name) or pass the 0x id; governance \
             whitelists models",
        ));
    }
    if !reg.is_some_and(|r| r.registered) {
        let why =
            format!("the worker is not registered (the model is whitelisted; `lcw register --models {model}` adds it)");
        return Ok(Check::skip(name, why));
    }
    if !wr.workerSupportsModel(ctx.worker, id.0).call().await.context("workerSupportsModel")? {
        let fix = ctx.lcw(&format!("add-models --models {model}"));
        return Ok(Check::fail(name, "whitelisted but not added to this worker: no jobs are assigned for it", fix));
    }
    // As `lcw register`: a node without isModelEnabled is taken to have the model enabled.
    if !ai.isModelEnabled(id.0).call().await.unwrap_or(true) {
        let detail = "whitelisted and added, but disabled in AIConfig: no jobs arrive until governance enables it";
        return Ok(Check::new(name, Status::Warn, detail, None));
    }
    Ok(Check::ok(name, "whitelisted, enabled and added to this worker"))
}

/// The server answers, then each model is listed and answers a one-token request (which also
/// loads it, as `lcw work` does before its first ack).
async fn llm_checks(ctx: &Ctx, args: &LlmArgs, checks: &mut Vec<Check>) {
    let url = redact_url(&args.llm_url);
    let per_model = |checks: &mut Vec<Check>, why: &str| {
        for m in &ctx.models {
            checks.push(Check::skip(format!("llm {m}"), why));
        }
    };
    let llm = match args.llm() {
        Ok(llm) => llm,
        Err(e) => {
            checks.push(Check::fail(
                "llm server",
                format!("{e:#}"),
                "fix --llm-url (LCW_LLM_URL) and --llm-api (LCW_LLM_API)",
            ));
            per_model(checks, "the LLM settings are invalid");
            return;
        }
    };
    let api = llm.config().api;
    if let Err(e) = llm.health().await {
        let fix = format!(
            "start the LLM server (`ollama serve`, or llama-server) at {url}, or point --llm-url (LCW_LLM_URL) at it"
        );
        let detail = match e {
            LlmError::Unreachable { reason, .. } => format!("nothing answers at {url} ({api}): {reason}"),
            e => format!("{url} ({api}): {e}"),
        };
        checks.push(Check::fail("llm server", detail, fix));
        per_model(checks, &format!("the LLM server at {url} does not answer"));
        return;
    }
    checks.push(Check::ok("llm server", format!("{url} ({api}) answers")));
    for m in &ctx.models {
        let name = format!("llm {m}");
        match llm.check_models(std::slice::from_ref(m)).await {
            Ok(()) => {}
            Err(LlmError::MissingModels { available, .. }) => {
                let has = if available.is_empty() { "none".to_owned() } else { available.join(", ") };
                let fix = match api {
                    Api::Ollama => format!("`ollama pull {m}` (then `ollama cp` if the on-chain name differs)"),
                    Api::OpenAi => format!("start the server with the model aliased `--alias {m}`"),
                };
                checks.push(Check::fail(name, format!("{url} does not serve {m}; it has: {has}"), fix));
                continue;
            }
            Err(e) => {
                checks.push(Check::fail(name, format!("{url}: {e}"), "see the LLM server's log"));
                continue;
            }
        }
        let started = Instant::now();
        checks.push(match llm.warm(m).await {
            Ok(()) => {
                Check::ok(name, format!("served and loaded ({} ms for one token)", started.elapsed().as_millis()))
            }
            Err(e) => Check::fail(name, format!("{url} lists {m} but cannot run it: {e}"), "see the LLM server's log"),
        });
    }
}

/// anvil's blob method on a devnet; a beacon node elsewhere.
async fn blob_check(ctx: &Ctx, chain: &Chain) -> Check {
    const NAME: &str = "blobs";
    let el = chain.provider().clone();
    if !ctx.profile.accounts.is_empty() {
        return match BlobSource::Anvil(el).probe().await {
            Ok(method) => Check::ok(NAME, format!("the devnet's anvil answers {method}")),
            Err(e) => Check::fail(NAME, e.to_string(), "the devnet's node must be anvil: restart it with `lcw devnet`"),
        };
    }
    let fix = "pass a beacon node with --beacon-url (official worker: BEACON_API_URL); prompts arrive as blobs";
    let Some(url) = ctx.profile.beacon_url.as_deref() else {
        return Check::fail(NAME, "no beacon API URL: prompt blobs cannot be fetched", fix);
    };
    let shown = redact_url(url);
    let probe = match BlobSource::beacon(el, url, TIMEOUT) {
        Ok(source) => source.probe().await,
        Err(e) => Err(e),
    };
    match probe {
        Ok(version) => Check::ok(NAME, format!("beacon node {shown} answers ({version})")),
        Err(e) => Check::fail(NAME, format!("beacon node {shown}: {e}"), fix),
    }
}

/// The report as text: one line per check, the fix indented under it, then a summary.
fn render(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        out.push_str(&format!("{:<4}  {:<width$}  {}\n", c.status.label(), c.name, c.detail));
        if let Some(fix) = &c.fix {
            out.push_str(&format!("{:<4}  {:<width$}  fix: {fix}\n", "", ""));
        }
    }
    let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
    let (fail, warn, skip) = (count(Status::Fail), count(Status::Warn), count(Status::Skip));
    if fail + warn + skip == 0 {
        out.push_str(&format!("all {} checks ok: ready to `lcw work`\n", checks.len()));
    } else {
        out.push_str(&format!("{} ok, {warn} warnings, {fail} failed, {skip} skipped\n", count(Status::Ok)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LCAI: u128 = 1_000_000_000_000_000_000;

    #[test]
    fn gas_money_is_judged_in_jobs_at_current_fees() {
        let per_job = U256::from(LCAI / 1_000); // 0.001 LCAI per job
        let (status, detail) = gas_verdict(U256::from(LCAI), per_job);
        assert_eq!(status, Status::Ok);
        assert_eq!(detail, "1 LCAI pays the gas of about 1000 jobs at the current fees (0.001 LCAI per job)");
        assert_eq!(gas_verdict(U256::from(LCAI / 20), per_job).0, Status::Warn);
        assert_eq!(gas_verdict(U256::from(LCAI / 1_000 * 9), per_job).0, Status::Fail);
        assert_eq!(gas_verdict(U256::ZERO, U256::ZERO).0, Status::Ok);
    }

    #[test]
    fn urls_in_transport_errors_are_redacted() {
        let url = "https://user:secret@rpc.example/v2/0123456789abcdef0123456789";
        let e = format!("error sending request for url ({url}/)");
        let check = Check::fail("rpc", e, "check the node");
        assert_eq!(check.detail, "error sending request for url (https://***@rpc.example/…)");
    }

    #[test]
    fn report_aligns_names_and_puts_fixes_under_failures() {
        let checks = vec![
            Check::ok("rpc", "answers"),
            Check::fail("registration", "0xabc is not registered", "lcw register --models m"),
            Check::skip("stake", "the worker is not registered"),
        ];
        let text = render(&checks);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ok    rpc           answers");
        assert_eq!(lines[1], "FAIL  registration  0xabc is not registered");
        assert_eq!(lines[2], "                    fix: lcw register --models m");
        assert_eq!(lines[3], "skip  stake         skipped: the worker is not registered");
        assert_eq!(lines[4], "1 ok, 0 warnings, 1 failed, 1 skipped");
        let json = serde_json::to_value(&checks).unwrap();
        assert_eq!(json[1]["status"], "fail");
        assert_eq!(json[1]["fix"], "lcw register --models m");
        assert!(json[0]["fix"].is_null());
    }
}
