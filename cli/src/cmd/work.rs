//! `lcw work`: serve inference jobs from the store (with an embedded indexer unless told not to).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use lcw_schema::profile::Role;
use lcw_worker::blobs::BlobSource;
use lcw_worker::llm::{Api, Llm, LlmConfig};
use lcw_worker::pipeline::{Ended, WorkConfig, WorkSummary};

use crate::args::{DataArgs, KeyArgs, NetworkArgs, StoreArgs};
use crate::cmd::settle::with_indexer;

/// The LLM server and how to call it.
#[derive(Debug, Clone, Args)]
pub(crate) struct LlmArgs {
    /// LLM server base URL (Ollama: http://127.0.0.1:11434; llama.cpp's server: http://127.0.0.1:8080).
    #[arg(long, env = "LCW_LLM_URL", default_value = "http://127.0.0.1:11434")]
    pub llm_url: String,
    /// Wire protocol: ollama | openai.
    #[arg(long, env = "LCW_LLM_API", default_value = "ollama")]
    pub llm_api: String,
    /// Models to register and check, by name (their on-chain ids are keccak256 of the names). The
    /// worker serves the models added to it on chain that the LLM server serves under exactly
    /// that name, following changes while it runs; a difference from this list is reported.
    #[arg(long, env = "LCW_MODELS", value_delimiter = ',', default_value = "gemma3-270m")]
    pub models: Vec<String>,
    /// Most tokens generated per job (Ollama num_predict, OpenAI max_tokens).
    #[arg(long, env = "OLLAMA_NUM_PREDICT", default_value_t = 1024)]
    pub num_predict: u32,
    /// LLM request timeout in seconds (also clamped by each job's deadline).
    #[arg(long, env = "OLLAMA_TIMEOUT", default_value_t = 120)]
    pub llm_timeout: u64,
    #[command(flatten)]
    pub fit: crate::args::FitArgs,
}

impl LlmArgs {
    pub(crate) fn llm(&self) -> anyhow::Result<Llm> {
        let api: Api = self.llm_api.parse().map_err(|e| anyhow::anyhow!("--llm-api: {e}"))?;
        let config = LlmConfig {
            url: self.llm_url.clone(),
            api,
            timeout: Duration::from_secs(self.llm_timeout.max(1)),
            num_predict: self.num_predict.max(1),
            ..LlmConfig::default()
        };
        Ok(Llm::new(config)?)
    }
}

/// How hard the worker works.
#[derive(Debug, Clone, Args)]
pub(crate) struct WorkTuning {
    /// Jobs worked on at once (match the LLM server's parallel slots).
    #[arg(long, env = "MAX_CONCURRENT_JOBS", default_value_t = 1)]
    pub concurrency: usize,
    /// Expected seconds per job before any has been measured (deadline guard).
    #[arg(long, default_value_t = 10.0)]
    pub expected_job_secs: f64,
    /// Time between heartbeats to the worker gateway: `10s`, `1m`, or seconds (official worker:
    /// HEARTBEAT_INTERVAL).
    #[arg(long, env = "HEARTBEAT_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
}

/// A Go-style duration as the official worker's variables take them: `250ms`, `10s`, `2m`, `1h`,
/// or a plain number of seconds.
pub(crate) fn parse_duration(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("`{s}` is not a duration: use 250ms, 10s, 2m or 1h"))?;
    let secs = match unit {
        "" | "s" => value,
        "ms" => value / 1_000.0,
        "m" => value * 60.0,
        "h" => value * 3_600.0,
        _ => return Err(format!("`{s}` has an unknown unit `{unit}`: use ms, s, m or h")),
    };
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("`{s}` must be a positive duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl WorkTuning {
    pub(crate) fn apply(&self, config: &mut WorkConfig) {
        config.concurrency = self.concurrency.max(1);
        config.expected_job_secs = self.expected_job_secs.max(0.1);
        if let Some(gateway) = &mut config.gateway {
            gateway.heartbeat_interval = self.heartbeat_interval;
        }
    }
}

/// Sortition: how the worker claims sessions (the official worker's variable names are accepted).
#[derive(Debug, Clone, Args)]
pub(crate) struct SortitionArgs {
    /// Claim sessions by sortition: unset follows the chain (AIConfig.getSortitionEnabled);
    /// false never claims, so on a sortition network the worker gets no sessions (official
    /// worker: SORTITION_ENABLED).
    #[arg(long = "sortition", env = "SORTITION_ENABLED", value_parser = crate::args::parse_bool, value_name = "BOOL")]
    pub enabled: Option<bool>,
    /// The SessionManager you expect; lcw reads it from AIConfig and refuses to start when this
    /// differs (official worker: SESSION_MANAGER_ADDRESS).
    #[arg(long, env = "SESSION_MANAGER_ADDRESS")]
    pub session_manager: Option<String>,
    /// How the worker learns its turn: predict (the devnet SessionManager's rule, from the store,
    /// exact), ask (eligibleNow for the next block, any network), auto (predict on a devnet).
    #[arg(long, env = "LCW_CLAIM_RULE", default_value = "auto", value_parser = ["auto", "predict", "ask"])]
    pub claim_rule: String,
    /// Most claims sent per session request (official worker: SORTITION_SESSION_RETRY_LIMIT).
    #[arg(long, env = "SORTITION_SESSION_RETRY_LIMIT", default_value_t = 10)]
    pub claim_retries: u32,
    /// Consider session requests once this many blocks deep (official worker:
    /// SORTITION_CONFIRMATIONS).
    #[arg(long, env = "SORTITION_CONFIRMATIONS", default_value_t = 0)]
    pub claim_confirmations: u64,
    /// Accepted for the official worker's configuration; lcw reacts to every indexed block.
    #[arg(long, env = "SORTITION_POLL_INTERVAL", hide = true)]
    pub sortition_poll_interval: Option<String>,
    /// Accepted; lcw's indexer sizes its log ranges itself.
    #[arg(long, env = "SORTITION_CHUNK_SIZE", hide = true)]
    pub sortition_chunk_size: Option<String>,
    /// Accepted; the store holds every session's jobs from the start block.
    #[arg(long, env = "SORTITION_HISTORY_LOOKBACK_BLOCKS", hide = true)]
    pub sortition_history_lookback_blocks: Option<String>,
    /// Accepted; every session request stays in the store, so a restart forgets none.
    #[arg(long, env = "SORTITION_SESSION_LOOKBACK_BLOCKS", hide = true)]
    pub sortition_session_lookback_blocks: Option<String>,
    /// Accepted; lcw keeps its state in the store (--data-dir).
    #[arg(long, env = "SORTITION_STATE_DIR", hide = true)]
    pub sortition_state_dir: Option<String>,
}

impl SortitionArgs {
    pub(crate) fn apply(&self, config: &mut WorkConfig) -> anyhow::Result<()> {
        let devnet = !config.profile.accounts.is_empty();
        config.claims.enabled = self.enabled;
        config.claims.rule = match self.claim_rule.as_str() {
            "predict" => lcw_worker::claim::Rule::Predict,
            "ask" => lcw_worker::claim::Rule::Ask,
            _ if devnet => lcw_worker::claim::Rule::Predict,
            _ => lcw_worker::claim::Rule::Ask,
        };
        config.claims.retry_limit = self.claim_retries.max(1);
        config.claims.confirmations = self.claim_confirmations;
        config.session_manager = self
            .session_manager
            .as_deref()
            .map(crate::args::parse_address)
            .transpose()
            .context("--session-manager / SESSION_MANAGER_ADDRESS")?;
        for (name, set, why) in [
            ("SORTITION_POLL_INTERVAL", &self.sortition_poll_interval, "lcw reacts to every indexed block"),
            ("SORTITION_CHUNK_SIZE", &self.sortition_chunk_size, "the indexer sizes its log ranges itself"),
            (
                "SORTITION_HISTORY_LOOKBACK_BLOCKS",
                &self.sortition_history_lookback_blocks,
                "the store holds every session's jobs",
            ),
            (
                "SORTITION_SESSION_LOOKBACK_BLOCKS",
                &self.sortition_session_lookback_blocks,
                "every session request stays in the store",
            ),
            ("SORTITION_STATE_DIR", &self.sortition_state_dir, "lcw keeps its state in the store"),
        ] {
            if set.is_some() {
                tracing::info!("{name} is accepted but not needed: {why}");
            }
        }
        Ok(())
    }
}

/// Serve the jobs assigned to this worker: ack, decrypt, run the model, encrypt, post the blob
/// and complete, every job before its deadline.
#[derive(Debug, Args)]
pub(crate) struct WorkArgs {
    #[command(flatten)]
    network: NetworkArgs,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    key: KeyArgs,
    #[command(flatten)]
    llm: LlmArgs,
    #[command(flatten)]
    tuning: WorkTuning,
    #[command(flatten)]
    sortition: SortitionArgs,
    /// Do not run an indexer in this process (another `lcw index` keeps the store current).
    #[arg(long)]
    no_index: bool,
    /// Stop after this many completions.
    #[arg(long)]
    stop_after: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics: the worker's jobs, LLM latency, claims,
    /// wallet runway and outbox, and the embedded indexer's.
    #[arg(long, env = "LCW_METRICS")]
    metrics: Option<std::net::SocketAddr>,
    /// Print the summary as JSON when stopped.
    #[arg(long)]
    json: bool,
}

/// The worker's configuration from the command line: signing key, encryption key, LLM, blobs.
pub(crate) async fn work_config(
    network: &NetworkArgs,
    key: &KeyArgs,
    llm: &LlmArgs,
    data: &DataArgs,
    db: std::path::PathBuf,
) -> anyhow::Result<WorkConfig> {
    let profile = network.profile(data)?;
    let keys = lcw_worker::keys::KeyDir::new(&data.data_dir);
    let password = || lcw_chain::keys::password(key.password_file.as_deref());
    let signer = if key.key.is_none() && keys.signing_path().exists() {
        keys.load_signer(&password()?)?
    } else {
        key.signer(&profile, None, Some(Role::Worker))?
    };
    let secret = keys.load_encryption(&password()?).with_context(|| {
        format!("the worker's encryption key ({}); create one with `lcw keygen`", keys.encryption_path().display())
    })?;
    // No round trip: the worker waits for the node when it starts, and a restart during an
    // outage must not fail here first.
    let provider = lcw_chain::Chain::lazy(&profile, Duration::from_secs(10))?;
    // A devnet (its profile carries dev accounts) is anvil, which serves blobs itself; a real
    // network needs a beacon node.
    let blobs = if !profile.accounts.is_empty() {
        BlobSource::Anvil(provider.provider().clone())
    } else {
        let url = profile
            .beacon_url
            .as_deref()
            .context("prompt blobs come from a beacon node: pass --beacon-url (official worker: BEACON_API_URL)")?;
        BlobSource::beacon(provider.provider().clone(), url, Duration::from_secs(10))?
    };
    let client = llm.llm()?;
    let models: Vec<String> = llm.models.iter().map(|m| m.trim().to_owned()).filter(|m| !m.is_empty()).collect();
    // Every served model stays loaded: a set that cannot fit would swap, answer late and be
    // slashed, so it stops the start. An LLM server that does not answer yet is the pipeline's
    // to wait for and report, not a reason to stop here.
    let network_flag = network.flag();
    match lcw_worker::fit::check_at_start(&client, &models, llm.fit.memory_limit, &network_flag).await {
        Ok(_) => {}
        Err(lcw_worker::fit::FitError::TooBig(fit)) => {
            return Err(anyhow::anyhow!("{}", fit.refusal(&network_flag))
                .context("the models (--models) do not fit in memory together"));
        }
        Err(e) => tracing::warn!(error = %e, "the memory fit of the models could not be checked"),
    }
    let mut config = WorkConfig::new(profile, db, signer, Arc::new(secret), client, models, blobs);
    config.poll_interval = Duration::from_millis(50);
    config.fee_cap = key.fees.cap();
    config.gateway = config.profile.gateway_url.clone().map(lcw_worker::gateway::GatewayConfig::new);
    config.network_flag = network_flag;
    config.memory_limit = llm.fit.memory_limit;
    Ok(config)
}

pub(crate) async fn run(args: WorkArgs, data: DataArgs) -> anyhow::Result<()> {
    let db = args.store.path(&data);
    let mut config = work_config(&args.network, &args.key, &args.llm, &data, db.clone()).await?;
    args.tuning.apply(&mut config);
    args.sortition.apply(&mut config)?;
    config.stop_after = args.stop_after;
    let profile = config.profile.clone();
    let stopping = "stopping; in-flight transactions stay in the outbox for the next start";
    let network = lcw_schema::store::Identity::of(&profile);
    if args.metrics.is_some() {
        let metrics = config.metrics.clone();
        lcw_indexer::metrics::register(Arc::new(move || metrics.render()));
    }
    let summary = with_indexer(profile, db.clone(), args.no_index, args.metrics, stopping, |rx| async move {
        // Whoever indexes the store, it must be this network's.
        lcw_schema::store::Store::open_readonly_as(&db, &network)?;
        anyhow::Ok(lcw_worker::pipeline::run(config, rx).await?)
    })
    .await?;
    print_summary(&summary, args.json)
}

/// The summary as `--json` prints it. The reasons are errors of nodes, the beacon, the gateway and
/// the LLM server, whose texts may quote their URLs: redacted here once more, whatever produced
/// them.
fn summary_json(s: &WorkSummary) -> serde_json::Value {
    use lcw_schema::profile::redact_urls;
    let reasons = |m: &std::collections::BTreeMap<u64, String>| -> std::collections::BTreeMap<u64, String> {
        m.iter().map(|(job, why)| (*job, redact_urls(why))).collect()
    };
    let retried: std::collections::BTreeMap<u64, Vec<String>> =
        s.retried.iter().map(|(job, whys)| (*job, whys.iter().map(|w| redact_urls(w)).collect())).collect();
    let missed: std::collections::BTreeMap<String, u64> =
        s.claims.missed.iter().map(|(why, n)| (redact_urls(why), *n)).collect();
    serde_json::json!({
        "acked": s.acked,
        "completed": s.completed,
        "reverted": s.reverted,
        "refused": reasons(&s.refused),
        "failed": reasons(&s.failed),
        "retried": retried,
        "claims": {
            "sent": s.claims.sent,
            "won": s.claims.won,
            "lost": s.claims.lost,
            "missed": missed,
        },
        "ended": match s.ended {
            Ended::Shutdown => serde_json::json!({ "reason": "shutdown" }),
            Ended::StopAfter => serde_json::json!({ "reason": "stop_after" }),
            Ended::Deregistered { block } => serde_json::json!({ "reason": "deregistered", "block": block }),
        },
    })
}

fn print_summary(s: &WorkSummary, json: bool) -> anyhow::Result<()> {
    use lcw_schema::profile::redact_urls;
    if json {
        println!("{}", summary_json(s));
    } else {
        println!(
            "{} acked, {} completed, {} refused, {} failed, {} reverted transactions",
            s.acked,
            s.completed,
            s.refused.len(),
            s.failed.len(),
            s.reverted
        );
        if s.claims.sent + s.claims.won + s.claims.lost > 0 || !s.claims.missed.is_empty() {
            println!(
                "sessions: {} claims sent, {} won, {} lost, {} missed",
                s.claims.sent,
                s.claims.won,
                s.claims.lost,
                s.claims.missed.values().sum::<u64>()
            );
        }
        for (job, why) in &s.refused {
            println!("  job {job} refused: {}", redact_urls(why));
        }
        for (job, why) in &s.failed {
            println!("  job {job} not completed: {}", redact_urls(why));
        }
        if let Ended::Deregistered { .. } = s.ended {
            println!("stopped: {}", s.ended);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_the_official_worker_writes_them() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3_600)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert!(parse_duration("10 parsecs").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("0s").unwrap_err().contains("positive"));
        assert!(parse_duration("soon").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn the_json_summary_never_carries_a_key_from_a_failure() {
        const KEY: &str = "SECRETKEY123";
        let url = format!("https://beacon.example/v1/{KEY}/eth and http://u:{KEY}@127.0.0.1:1/x?apikey={KEY}");
        let mut s = WorkSummary::default();
        s.failed.insert(1, format!("GET /eth/v1/beacon/headers at {url}: refused"));
        s.refused.insert(2, format!("llm: {url}"));
        s.retried.insert(3, vec![format!("getJob: {url}")]);
        s.claims.missed.insert(format!("eligibleNow: {url}"), 1);
        let text = summary_json(&s).to_string();
        assert!(!text.contains(KEY), "{text}");
        assert!(text.contains("https://beacon.example/…") && text.contains("http://***@127.0.0.1:1/…"), "{text}");
    }
}
