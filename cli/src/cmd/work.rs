//! `lcw work`: serve inference jobs from the store (with an embedded indexer unless told not to).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use lcw_schema::profile::Role;
use lcw_worker::blobs::BlobSource;
use lcw_worker::llm::{Api, Llm, LlmConfig};
use lcw_worker::pipeline::{WorkConfig, WorkSummary};

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
    /// Models served, by name (their on-chain ids are keccak256 of the names).
    #[arg(long, env = "LCW_MODELS", value_delimiter = ',', default_value = "gemma3-270m")]
    pub models: Vec<String>,
    /// Most tokens generated per job (Ollama num_predict, OpenAI max_tokens).
    #[arg(long, env = "OLLAMA_NUM_PREDICT", default_value_t = 1024)]
    pub num_predict: u32,
    /// LLM request timeout in seconds (also clamped by each job's deadline).
    #[arg(long, env = "OLLAMA_TIMEOUT", default_value_t = 120)]
    pub llm_timeout: u64,
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
}

impl WorkTuning {
    pub(crate) fn apply(&self, config: &mut WorkConfig) {
        config.concurrency = self.concurrency.max(1);
        config.expected_job_secs = self.expected_job_secs.max(0.1);
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
    /// Do not run an indexer in this process (another `lcw index` keeps the store current).
    #[arg(long)]
    no_index: bool,
    /// Stop after this many completions.
    #[arg(long)]
    stop_after: Option<u64>,
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
    let password = || lcw_settler::keys::password(key.password_file.as_deref());
    let signer = if key.key.is_none() && keys.signing_path().exists() {
        keys.load_signer(&password()?)?
    } else {
        key.signer(&profile, None, Some(Role::Worker))?
    };
    let secret = keys.load_encryption(&password()?).with_context(|| {
        format!("the worker's encryption key ({}); create one with `lcw keygen`", keys.encryption_path().display())
    })?;
    let provider = lcw_settler::chain::Chain::connect(&profile.rpc_url, Duration::from_secs(10)).await?;
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
    let mut config = WorkConfig::new(
        profile,
        db,
        signer,
        Arc::new(secret),
        llm.llm()?,
        llm.models.iter().map(|m| m.trim().to_owned()).filter(|m| !m.is_empty()).collect(),
        blobs,
    );
    config.poll_interval = Duration::from_millis(50);
    Ok(config)
}

pub(crate) async fn run(args: WorkArgs, data: DataArgs) -> anyhow::Result<()> {
    let db = args.store.path(&data);
    let mut config = work_config(&args.network, &args.key, &args.llm, &data, db.clone()).await?;
    args.tuning.apply(&mut config);
    config.stop_after = args.stop_after;
    let profile = config.profile.clone();
    let stopping = "stopping; in-flight transactions stay in the outbox for the next start";
    let summary =
        with_indexer(profile, db, args.no_index, stopping, |rx| lcw_worker::pipeline::run(config, rx)).await?;
    print_summary(&summary, args.json)
}

fn print_summary(s: &WorkSummary, json: bool) -> anyhow::Result<()> {
    if json {
        let v = serde_json::json!({
            "acked": s.acked,
            "completed": s.completed,
            "reverted": s.reverted,
            "refused": s.refused,
            "failed": s.failed,
            "retried": s.retried,
        });
        println!("{v}");
    } else {
        println!(
            "{} acked, {} completed, {} refused, {} failed, {} reverted transactions",
            s.acked,
            s.completed,
            s.refused.len(),
            s.failed.len(),
            s.reverted
        );
        for (job, why) in &s.refused {
            println!("  job {job} refused: {why}");
        }
        for (job, why) in &s.failed {
            println!("  job {job} not completed: {why}");
        }
    }
    Ok(())
}
