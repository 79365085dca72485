//! `lcw speedtest`: the local part of a job, timed on this machine, against the chain's deadlines.
//!
//! For each model it runs representative prompts through exactly what `lcw work` runs for a job
//! ([`lcw_worker::pipeline::answer`]: decrypt, inference, encrypt and blob sidecar), with a fresh
//! session key of the worker's suite per prompt. The consumer's side (wrapping the session key,
//! sealing the prompt into a blob, opening the answer from the response blob) is done here too,
//! untimed, and checked: an answer the consumer cannot open is a bug. Then it reads AIConfig's
//! ack and completion timeouts and the chain's block time and says, per model, whether the
//! slowest job still fits and how many jobs can queue before the last misses its deadline.
//!
//! The verdict is pure ([`verdict`]); measuring and reading the chain are the thin shells.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use alloy::eips::BlockNumberOrTag;
use anyhow::{Context, bail};
use clap::Args;
use lcw_chain::Chain;
use lcw_schema::bindings::AIConfig;
use lcw_schema::profile::redact_url;
use lcw_schema::suite::{EncryptionSecret, SessionKey, Suite, wrap_session_key};
use lcw_worker::llm::Llm;
use serde_json::{Value, json};

use crate::args::{DataArgs, NetworkArgs};
use crate::cmd::work::LlmArgs;

/// Seconds `lcw work` keeps free before a completion deadline (`WorkConfig::deadline_margin`):
/// it refuses a job it does not expect to finish that early.
const WORK_DEADLINE_MARGIN: f64 = 5.0;
/// Block gaps sampled for the block time.
const BLOCK_SAMPLE: u64 = 20;

/// Time the full local job path per model (decrypt, inference, encrypt, blob) on representative
/// prompts and check the slowest job against the chain's ack and completion timeouts.
#[derive(Debug, Args)]
pub(crate) struct SpeedtestArgs {
    #[command(flatten)]
    network: NetworkArgs,
    #[command(flatten)]
    llm: LlmArgs,
    /// Prompts measured per model, cycling through the set (question, list, summary, long
    /// context, code; or the --prompt-file files).
    #[arg(long, env = "LCW_SPEEDTEST_PROMPTS", default_value_t = 5)]
    prompts: usize,
    /// A file holding one prompt (the whole file); repeat the flag for more. Replaces the
    /// built-in set.
    #[arg(long = "prompt-file", env = "LCW_SPEEDTEST_PROMPT_FILES", value_delimiter = ',')]
    prompt_files: Vec<PathBuf>,
    /// Encryption suite when <data-dir>/keys has no encryption key: p256-aesgcm | x25519
    /// (default p256-aesgcm). A local key's suite always wins.
    #[arg(long, env = "LCW_SUITE")]
    suite: Option<String>,
    /// Jobs worked on at once, as `lcw work --concurrency` (the LLM server's parallel slots).
    #[arg(long, env = "MAX_CONCURRENT_JOBS", default_value_t = 1)]
    concurrency: usize,
    /// Print one JSON object with every figure.
    #[arg(long)]
    json: bool,
}

/// One measured prompt.
#[derive(Debug, Clone)]
struct Row {
    kind: String,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    decrypt: Duration,
    inference: Duration,
    encrypt: Duration,
}

impl Row {
    /// The local job time: decrypt + inference + encrypt (blob fetch and transactions excluded).
    fn total(&self) -> Duration {
        self.decrypt + self.inference + self.encrypt
    }

    fn tokens_per_s(&self) -> Option<f64> {
        let secs = self.inference.as_secs_f64();
        self.completion_tokens.filter(|_| secs > 0.0).map(|t| t as f64 / secs)
    }
}

/// One model's measurements, and what went wrong.
#[derive(Debug)]
struct ModelRun {
    model: String,
    /// Model check and warm-up, before the first job.
    cold_start: Option<Duration>,
    rows: Vec<Row>,
    errors: Vec<String>,
}

impl ModelRun {
    fn slowest(&self) -> Option<Duration> {
        self.rows.iter().map(Row::total).max()
    }
}

/// What the chain says about deadlines.
#[derive(Debug, Clone)]
struct Deadlines {
    rpc_url: String,
    chain_id: u64,
    ack_timeout: u64,
    completion_timeout: u64,
    /// Seconds between blocks (median of the last gaps).
    block_time: f64,
    gaps: usize,
}

/// Whether a model's slowest job fits the deadlines.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Verdict {
    /// Slowest job + one block for the ack to be mined + one for the completion.
    worst_case: f64,
    /// Ack timeout minus one block time (the ack lands in the next block).
    ack_headroom: f64,
    /// Completion timeout minus the worst case.
    headroom: f64,
    /// Whether the slowest job fits what `lcw work` gives it: the completion timeout less the
    /// margin it keeps before a deadline (its inference is cut off there, and its guard refuses
    /// jobs that would not finish by then).
    accepted: bool,
    /// Jobs that can wait at once with the last still completing before its deadline.
    queue: u64,
}

impl Verdict {
    fn fits(&self) -> bool {
        self.ack_headroom >= 0.0 && self.headroom >= 0.0 && self.accepted && self.queue >= 1
    }
}

/// The verdict for a slowest job of `slowest` s. Queued jobs run `concurrency` at a time; the
/// k-th finishes after ceil(k / concurrency) slowest jobs and must still leave two blocks before
/// its completion deadline, and `lcw work` only acks it if k / concurrency jobs plus its margin
/// fit (pipeline's deadline guard).
fn verdict(slowest: f64, d: &Deadlines, concurrency: usize) -> Verdict {
    let c = d.completion_timeout as f64;
    let per_job = slowest.max(1e-3);
    let slots = concurrency.max(1) as f64;
    let worst_case = slowest + 2.0 * d.block_time;
    let waves = ((c - 2.0 * d.block_time) / per_job).floor().max(0.0);
    let guarded = ((c - WORK_DEADLINE_MARGIN) * slots / per_job).floor().max(0.0);
    Verdict {
        worst_case,
        ack_headroom: d.ack_timeout as f64 - d.block_time,
        headroom: c - worst_case,
        accepted: slowest + WORK_DEADLINE_MARGIN <= c,
        queue: (waves * slots).min(guarded).min(u64::MAX as f64) as u64,
    }
}

/// Seconds between blocks from ascending timestamps: the median gap; on chains with sub-second
/// blocks (median 0 s at one-second timestamps) the mean.
fn block_time(timestamps: &[u64]) -> (f64, usize) {
    let mut gaps: Vec<u64> = timestamps.windows(2).map(|w| w[1].saturating_sub(w[0])).collect();
    if gaps.is_empty() {
        return (0.0, 0);
    }
    gaps.sort_unstable();
    let n = gaps.len();
    let median = if n % 2 == 1 { gaps[n / 2] as f64 } else { (gaps[n / 2 - 1] + gaps[n / 2]) as f64 / 2.0 };
    let mean = gaps.iter().sum::<u64>() as f64 / n as f64;
    (if median == 0.0 { mean } else { median }, n)
}

pub(crate) async fn run(args: SpeedtestArgs, data: DataArgs) -> anyhow::Result<()> {
    if args.prompts == 0 {
        bail!("--prompts must be at least 1");
    }
    let prompts = prompt_set(&args.prompt_files)?;
    let (suite, suite_from) = suite(&args, &data)?;
    let llm = args.llm.llm()?;
    let llm_url = redact_url(&args.llm.llm_url);
    let models: Vec<String> = args.llm.models.iter().map(|m| m.trim().to_owned()).filter(|m| !m.is_empty()).collect();
    if models.is_empty() {
        bail!("no model to measure: pass --models NAMES (LCW_MODELS)");
    }
    let limit = Duration::from_secs(args.llm.llm_timeout.max(1));

    let bench = Bench { llm: &llm, llm_url: &llm_url, suite, prompts: &prompts, count: args.prompts, limit };
    let mut kzg = None;
    let mut runs = Vec::new();
    for model in &models {
        runs.push(bench.measure(model, &mut kzg).await);
    }
    let chain = read_chain(&args.network, &data).await;
    let verdicts: Vec<Option<Verdict>> = runs
        .iter()
        .map(|r| Some(verdict(r.slowest()?.as_secs_f64(), chain.as_ref().ok()?, args.concurrency)))
        .collect();

    let header = Header { suite, suite_from, llm_url: &llm_url, kzg, args: &args };
    if args.json {
        println!("{}", to_json(&header, &runs, &verdicts, &chain));
    } else {
        print_human(&header, &runs, &verdicts, &chain);
    }

    let mut problems: Vec<String> = runs.iter().flat_map(|r| r.errors.iter().cloned()).collect();
    let deadlines = match &chain {
        Ok(d) => d,
        Err(e) => {
            problems.push(format!(
                "the local figures above were measured, but the chain's deadlines could not be read, so nothing \
                 was checked against them: {e:#} (check --network and --rpc-url / RPC_URL)"
            ));
            bail!("{}", problems.join("\n"));
        }
    };
    for (run, v) in runs.iter().zip(&verdicts) {
        if let Some(v) = v {
            problems.extend(misses(run, v, deadlines, &args));
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    Ok(())
}

/// The worker's suite: the local encryption key's, else --suite, else p256-aesgcm.
fn suite(args: &SpeedtestArgs, data: &DataArgs) -> anyhow::Result<(Suite, &'static str)> {
    let keys = lcw_worker::keys::KeyDir::new(&data.data_dir);
    let asked =
        args.suite.as_deref().map(str::parse::<Suite>).transpose().map_err(|e| anyhow::anyhow!("--suite: {e}"))?;
    if keys.encryption_path().exists() {
        let (suite, _) = keys.encryption_public()?;
        if asked.is_some_and(|a| a != suite) {
            tracing::warn!(local = %suite, "--suite differs from the local encryption key's suite; using the key's");
        }
        return Ok((suite, "the local encryption key"));
    }
    Ok(match asked {
        Some(s) => (s, "--suite"),
        None => (Suite::P256AesGcm, "the default; no local encryption key"),
    })
}

/// The prompts: one per --prompt-file, else the built-in set.
fn prompt_set(files: &[PathBuf]) -> anyhow::Result<Vec<(String, String)>> {
    if files.is_empty() {
        return Ok(builtin_prompts());
    }
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).with_context(|| format!("--prompt-file {}", f.display()))?;
            if text.trim().is_empty() {
                bail!("--prompt-file {} is empty", f.display());
            }
            let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "file".into());
            Ok((name, text))
        })
        .collect()
}

/// What every model is measured with.
struct Bench<'a> {
    llm: &'a Llm,
    llm_url: &'a str,
    suite: Suite,
    prompts: &'a [(String, String)],
    count: usize,
    limit: Duration,
}

impl Bench<'_> {
    /// Warms `model`, then runs `count` prompts through a job's local path. The first sidecar of
    /// the process loads the KZG trusted setup: a fresh `lcw work` pays that on its first job, so
    /// it is timed once, into `kzg`, and kept out of prompt 1's encrypt time.
    async fn measure(&self, model: &str, kzg: &mut Option<Duration>) -> ModelRun {
        let mut run = ModelRun { model: model.to_owned(), cold_start: None, rows: Vec::new(), errors: Vec::new() };
        let t = Instant::now();
        let cold = async {
            self.llm.check_models(&[model.to_owned()]).await?;
            self.llm.warm(model).await
        };
        if let Err(e) = cold.await {
            run.errors.push(format!("model {model} is not ready on the LLM server at {}: {e}", self.llm_url));
            return run;
        }
        run.cold_start = Some(t.elapsed());
        if kzg.is_none() {
            let t = Instant::now();
            if let Err(e) = lcw_schema::blob::sidecar(&[b"warm"]) {
                run.errors.push(format!("computing a blob sidecar (KZG): {e}"));
                return run;
            }
            *kzg = Some(t.elapsed());
        }
        // Stands in for the worker's encryption secret, whose password speedtest does not ask
        // for; unwrapping is per session (cached by the worker), so it is not part of a job.
        let worker = EncryptionSecret::generate(self.suite);
        for i in 0..self.count {
            let (kind, text) = &self.prompts[i % self.prompts.len()];
            tracing::info!(model, prompt = i + 1, of = self.count, kind = %kind, "measuring");
            match job(self.llm, model, &worker, text, self.limit).await {
                Ok(mut row) => {
                    row.kind.clone_from(kind);
                    run.rows.push(row);
                }
                Err(e) => run.errors.push(format!("model {model}, prompt {} ({kind}): {e}", i + 1)),
            }
        }
        run
    }
}

/// One job: the consumer wraps a fresh session key and seals the prompt into a blob (untimed);
/// the worker unwraps the key and runs [`lcw_worker::pipeline::answer`] (timed); the consumer
/// opens the answer from the response blob and must get the generation back.
async fn job(llm: &Llm, model: &str, worker: &EncryptionSecret, prompt: &str, limit: Duration) -> Result<Row, String> {
    let bug = |what: String| format!("a bug in lcw: {what}; please report it");
    let session = SessionKey::generate();
    let wrapped = wrap_session_key(&worker.public_key(), &session).map_err(|e| bug(format!("wrapping: {e}")))?;
    let blob = lcw_schema::blob::encode(&session.seal(prompt.as_bytes()))
        .map_err(|e| format!("the sealed prompt does not fit in one blob: {e}"))?;
    let payload = lcw_schema::blob::decode(blob.as_slice()).map_err(|e| bug(format!("prompt blob: {e}")))?;
    let key = worker.unwrap_session_key(&wrapped).map_err(|e| bug(format!("unwrapping the session key: {e}")))?;

    let a = lcw_worker::pipeline::answer(llm, model, &key, &payload, limit).await?;

    let blob = a.sidecar.blobs.first().ok_or_else(|| bug("the response sidecar has no blob".into()))?;
    let ciphertext = lcw_schema::blob::decode(blob.as_slice()).map_err(|e| bug(format!("response blob: {e}")))?;
    let opened = session.open(&ciphertext).map_err(|e| bug(format!("the consumer cannot open the response: {e}")))?;
    if ciphertext != a.ciphertext || opened != a.generation.text.as_bytes() {
        return Err(bug("the response the consumer opens is not the model's generation".into()));
    }
    Ok(Row {
        kind: String::new(),
        prompt_tokens: a.generation.prompt_tokens,
        completion_tokens: a.generation.completion_tokens,
        decrypt: a.decrypt,
        inference: a.inference,
        encrypt: a.encrypt,
    })
}

/// AIConfig's timeouts and the block time.
async fn read_chain(network: &NetworkArgs, data: &DataArgs) -> anyhow::Result<Deadlines> {
    let profile = network.profile(data)?;
    let rpc_url = redact_url(&profile.rpc_url);
    let chain = Chain::open(&profile, Duration::from_secs(10)).await?;
    let ai = profile.contracts.ai_config;
    let config = AIConfig::new(ai, chain.provider());
    let ack = config.getAckTimeout().call().await.with_context(|| format!("AIConfig {ai}: getAckTimeout"))?;
    let completion =
        config.getCompletionTimeout().call().await.with_context(|| format!("AIConfig {ai}: getCompletionTimeout"))?;
    let head = chain.head().await?;
    let reads =
        (head.number.saturating_sub(BLOCK_SAMPLE)..head.number).map(|n| chain.block(BlockNumberOrTag::Number(n)));
    let mut timestamps: Vec<u64> =
        futures::future::try_join_all(reads).await?.into_iter().flatten().map(|b| b.timestamp).collect();
    timestamps.push(head.timestamp);
    let (block_time, gaps) = block_time(&timestamps);
    Ok(Deadlines {
        rpc_url,
        chain_id: chain.chain_id,
        ack_timeout: ack.saturating_to(),
        completion_timeout: completion.saturating_to(),
        block_time,
        gaps,
    })
}

/// Why a model does not fit, with what to do.
fn misses(run: &ModelRun, v: &Verdict, d: &Deadlines, args: &SpeedtestArgs) -> Vec<String> {
    let m = &run.model;
    let slowest = v.worst_case - 2.0 * d.block_time;
    let remedy = format!(
        "lower --num-predict (now {}), serve a faster model (or faster hardware), or add parallel slots \
         (llama-server -np N with --concurrency N) so jobs do not wait behind each other",
        args.llm.num_predict
    );
    let mut out = Vec::new();
    if v.ack_headroom < 0.0 {
        out.push(format!(
            "model {m}: blocks come every {:.1} s but the ack timeout is {} s: no ack can be mined in time on this chain",
            d.block_time, d.ack_timeout
        ));
    }
    if v.headroom < 0.0 {
        out.push(format!(
            "model {m}: the worst-case job takes {:.2} s (slowest {:.2} s + 2 blocks of {:.1} s), over the completion \
             timeout of {} s by {:.2} s; {remedy}",
            v.worst_case, slowest, d.block_time, d.completion_timeout, -v.headroom
        ));
    } else if !v.accepted || v.queue == 0 {
        out.push(format!(
            "model {m}: the slowest job ({slowest:.2} s) plus the {WORK_DEADLINE_MARGIN} s `lcw work` keeps before a \
             deadline does not fit the completion timeout of {} s, so it would refuse every job; {remedy}",
            d.completion_timeout
        ));
    }
    out
}

struct Header<'a> {
    suite: Suite,
    suite_from: &'static str,
    llm_url: &'a str,
    kzg: Option<Duration>,
    args: &'a SpeedtestArgs,
}

/// `12.3 ms`, `1.23 s`.
fn dur(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 0.01 {
        format!("{:.2} ms", s * 1e3)
    } else if s < 1.0 {
        format!("{:.0} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

fn print_human(h: &Header<'_>, runs: &[ModelRun], verdicts: &[Option<Verdict>], chain: &anyhow::Result<Deadlines>) {
    let a = h.args;
    println!(
        "speedtest: {} prompt(s) per model, suite {} ({}), LLM {} ({}), --num-predict {}, --concurrency {}",
        a.prompts, h.suite, h.suite_from, h.llm_url, a.llm.llm_api, a.llm.num_predict, a.concurrency
    );
    match chain {
        Ok(d) => println!(
            "chain {} at {}: ack timeout {} s, completion timeout {} s, block time {:.1} s (median of {} gaps)",
            d.chain_id, d.rpc_url, d.ack_timeout, d.completion_timeout, d.block_time, d.gaps
        ),
        Err(_) => println!("chain: not read (see the error)"),
    }
    if let Some(kzg) = h.kzg {
        println!("blob KZG setup {} (once per process, paid by the first job)", dur(kzg));
    }
    for (run, v) in runs.iter().zip(verdicts) {
        println!();
        match run.cold_start {
            Some(c) => println!("{}: cold start {} (model check and warm-up)", run.model, dur(c)),
            None => println!("{}: not measured", run.model),
        }
        if !run.rows.is_empty() {
            println!(
                "  {:>2}  {:<14} {:>10} {:>10} {:>9} {:>10} {:>9} {:>9} {:>7}",
                "#", "prompt", "prompt tok", "compl tok", "decrypt", "inference", "encrypt", "total", "tok/s"
            );
        }
        for (i, r) in run.rows.iter().enumerate() {
            println!(
                "  {:>2}  {:<14} {:>10} {:>10} {:>9} {:>10} {:>9} {:>9} {:>7}",
                i + 1,
                r.kind.chars().take(14).collect::<String>(),
                opt(r.prompt_tokens),
                opt(r.completion_tokens),
                dur(r.decrypt),
                dur(r.inference),
                dur(r.encrypt),
                dur(r.total()),
                opt(r.tokens_per_s().map(|t| format!("{t:.1}"))),
            );
        }
        for e in &run.errors {
            println!("  failed: {e}");
        }
        let (Some(v), Ok(d)) = (v, chain) else { continue };
        println!(
            "  worst case {:.2} s = slowest job {:.2} s + {:.1} s for the ack block + {:.1} s for the completion block \
             (blob fetch is network and not measured)",
            v.worst_case,
            v.worst_case - 2.0 * d.block_time,
            d.block_time,
            d.block_time
        );
        println!(
            "  ack: mined in the next block, {:.1} s of the {} s ack timeout: {:.1} s headroom",
            d.block_time, d.ack_timeout, v.ack_headroom
        );
        println!(
            "  completion: {:.2} s of the {} s completion timeout: {:.2} s headroom; up to {} job(s) can wait at \
             once (--concurrency {}) with the last still on time",
            v.worst_case, d.completion_timeout, v.headroom, v.queue, a.concurrency
        );
        let failed = if run.errors.is_empty() { "" } else { " (but some prompts failed)" };
        println!("  verdict: {}{failed}", if v.fits() { "fits" } else { "DOES NOT FIT" });
    }
}

fn to_json(
    h: &Header<'_>,
    runs: &[ModelRun],
    verdicts: &[Option<Verdict>],
    chain: &anyhow::Result<Deadlines>,
) -> Value {
    let secs = |d: Duration| d.as_secs_f64();
    let models: Vec<Value> = runs
        .iter()
        .zip(verdicts)
        .map(|(r, v)| {
            let rows: Vec<Value> = r
                .rows
                .iter()
                .map(|p| {
                    json!({
                        "prompt": p.kind, "prompt_tokens": p.prompt_tokens, "completion_tokens": p.completion_tokens,
                        "decrypt_s": secs(p.decrypt), "inference_s": secs(p.inference), "encrypt_s": secs(p.encrypt),
                        "total_s": secs(p.total()), "tokens_per_s": p.tokens_per_s(),
                    })
                })
                .collect();
            json!({
                "model": r.model,
                "cold_start_s": r.cold_start.map(secs),
                "prompts": rows,
                "slowest_s": r.slowest().map(secs),
                "worst_case_s": v.map(|v| v.worst_case),
                "ack_headroom_s": v.map(|v| v.ack_headroom),
                "completion_headroom_s": v.map(|v| v.headroom),
                "accepted_by_work": v.map(|v| v.accepted),
                "queue": v.map(|v| v.queue),
                "fits": v.map(|v| v.fits() && r.errors.is_empty()),
                "errors": r.errors,
            })
        })
        .collect();
    let chain_json = match chain {
        Ok(d) => json!({
            "rpc_url": d.rpc_url, "chain_id": d.chain_id, "ack_timeout_s": d.ack_timeout,
            "completion_timeout_s": d.completion_timeout, "block_time_s": d.block_time, "block_gaps": d.gaps,
        }),
        Err(_) => Value::Null,
    };
    json!({
        "suite": h.suite.name(),
        "suite_from": h.suite_from,
        "llm_url": h.llm_url,
        "llm_api": h.args.llm.llm_api,
        "num_predict": h.args.llm.num_predict,
        "concurrency": h.args.concurrency,
        "prompts_per_model": h.args.prompts,
        "kzg_setup_s": h.kzg.map(secs),
        "work_deadline_margin_s": WORK_DEADLINE_MARGIN,
        "chain": chain_json,
        "chain_error": chain.as_ref().err().map(|e| format!("{e:#}")),
        "models": models,
        "fits": chain.is_ok() && runs.iter().zip(verdicts).all(|(r, v)| r.errors.is_empty() && v.is_some_and(|v| v.fits())),
    })
}

/// The built-in prompts, by kind: a one-line question, a list, a paragraph to summarise, a
/// ~1,500-word context to answer a question about, code to explain.
fn builtin_prompts() -> Vec<(String, String)> {
    let p = |kind: &str, text: String| (kind.to_owned(), text);
    vec![
        p("question", "Why does the sky look blue during the day but red and orange at sunset?".into()),
        p(
            "list",
            "List seven practical ways a small team can lower the cost of running language-model inference \
             servers, with one sentence on each."
                .into(),
        ),
        p("summary", format!("Summarise the following paragraph in two sentences.\n\n{SUMMARY}")),
        p("long context", long_context()),
        p("code", format!("Explain what this Rust function does, step by step, and point out any bug.\n\n{CODE}")),
    ]
}

const SUMMARY: &str = "Urban beekeeping has grown quickly over the last decade, as city dwellers discovered that \
rooftops, balconies and community gardens can support healthy colonies. Supporters argue that city hives help \
pollinate parks and allotments, produce honey with a distinctive local flavour, and teach residents about the \
food chain. Critics counter that too many hives in a small area can crowd out wild bees, which compete for the \
same flowers, and that inexperienced keepers may spread disease between colonies. Several cities now ask \
beekeepers to register their hives, attend a short course and plant flowers in proportion to the number of \
colonies they keep. Researchers studying the practice say the real limit is forage: a hive needs a surprising \
amount of flowering plants within a few kilometres, and in dense neighbourhoods the number of hives has in some \
places already outgrown what the local green space can feed.";

const CODE: &str = "fn median(values: &mut Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    if values.len() % 2 == 0 {
        Some((values[mid] + values[mid + 1]) / 2.0)
    } else {
        Some(values[mid])
    }
}";

/// A ~1,500-word operations log with one event that differs, and a question about it.
fn long_context() -> String {
    const HOSTS: [&str; 6] = ["atlas", "borealis", "cirrus", "dune", "ember", "fjord"];
    const REGIONS: [&str; 4] = ["Frankfurt", "Oregon", "Singapore", "Sao Paulo"];
    let mut text = String::from(
        "Below is the operations log of a small fleet of inference servers over twenty days. Read it carefully \
         and answer the question at the end.\n\n",
    );
    for day in 1..=20usize {
        let (host, region) = (HOSTS[day % HOSTS.len()], REGIONS[day % REGIONS.len()]);
        let entry = if day == 13 {
            format!(
                "Day 13. At 03:40 UTC the alerting system paged the on-call engineer because {host} in {region} had \
                 stopped answering requests. The root partition was full: the model server had written verbose \
                 debug logs for nine days after a configuration change left the log level at debug. The engineer \
                 deleted the old logs, set the log level back to info and restarted the server, which recovered \
                 within four minutes. Eleven jobs timed out during the outage. In the review the team added log \
                 rotation with a seven-day limit and an alert when any disk is more than eighty percent full."
            )
        } else {
            let jobs = 1200 + day * 37 % 500;
            let latency = 380 + day * 53 % 240;
            let temp = 61 + day * 7 % 15;
            format!(
                "Day {day}. The on-call engineer checked {host} in the {region} region at {:02}:{:02} UTC. It had \
                 served {jobs} jobs since the previous check, with a median latency of {latency} milliseconds and \
                 no failed requests. GPU temperature peaked at {temp} degrees, inside the normal range, and memory \
                 use stayed near {} percent. The engineer applied the pending operating system updates, restarted \
                 the model server during a quiet period, confirmed that every health check passed, and closed the \
                 ticket with a short note for the next shift.",
                day * 5 % 24,
                day * 17 % 60,
                55 + day * 3 % 30
            )
        };
        text.push_str(&entry);
        text.push_str("\n\n");
    }
    text.push_str(
        "Question: on which day did a server stop answering, which server was it, what caused it, and what did \
         the team change afterwards so that it would not happen again?",
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deadlines(ack: u64, completion: u64, block: f64) -> Deadlines {
        Deadlines {
            rpc_url: String::new(),
            chain_id: 1,
            ack_timeout: ack,
            completion_timeout: completion,
            block_time: block,
            gaps: 20,
        }
    }

    #[test]
    fn worst_case_adds_an_ack_block_and_a_completion_block() {
        let v = verdict(3.0, &deadlines(30, 60, 2.0), 1);
        assert_eq!(v.worst_case, 7.0);
        assert_eq!(v.headroom, 53.0);
        assert_eq!(v.ack_headroom, 28.0);
        assert!(v.fits());
    }

    #[test]
    fn queue_is_bounded_by_the_deadline_and_by_the_workers_margin() {
        // Deadline: floor((60 - 2) / 4) = 14 waves; the worker's guard: floor((60 - 5) / 4) = 13 jobs.
        assert_eq!(verdict(4.0, &deadlines(30, 60, 1.0), 1).queue, 13);
        // Two slots: 14 waves of 2 = 28; guard floor(55 * 2 / 4) = 27.
        assert_eq!(verdict(4.0, &deadlines(30, 60, 1.0), 2).queue, 27);
        // Blocks of 5 s: floor(50 / 4) = 12 waves; guard 13.
        assert_eq!(verdict(4.0, &deadlines(30, 60, 5.0), 1).queue, 12);
    }

    #[test]
    fn a_job_over_the_completion_timeout_does_not_fit() {
        let v = verdict(2.5, &deadlines(30, 1, 1.0), 1);
        assert!(v.headroom < 0.0 && v.queue == 0 && !v.fits());
    }

    #[test]
    fn a_job_inside_the_timeout_but_not_the_workers_margin_does_not_fit() {
        // 2 s + 2 blocks of 1 s = 4 s fits 6 s, but `lcw work` wants 2 s + 5 s.
        let v = verdict(2.0, &deadlines(30, 6, 1.0), 1);
        assert!(v.headroom >= 0.0 && !v.accepted && !v.fits());
    }

    #[test]
    fn blocks_slower_than_the_ack_timeout_do_not_fit() {
        assert!(!verdict(1.0, &deadlines(10, 600, 12.0), 1).fits());
    }

    #[test]
    fn block_time_is_the_median_gap_or_the_mean_for_sub_second_blocks() {
        assert_eq!(block_time(&[10, 12, 14, 30, 32]), (2.0, 4));
        assert_eq!(block_time(&[10, 10, 10, 11, 11, 11, 12]), (2.0 / 6.0, 6));
        assert_eq!(block_time(&[10]), (0.0, 0));
    }

    #[test]
    fn builtin_prompts_cover_the_kinds_and_the_long_context_is_about_1500_words() {
        let set = builtin_prompts();
        let kinds: Vec<&str> = set.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(kinds, ["question", "list", "summary", "long context", "code"]);
        let words = long_context().split_whitespace().count();
        assert!((1300..=1800).contains(&words), "{words} words");
        // Every prompt fits in one blob once sealed.
        for (_, text) in &set {
            assert!(lcw_schema::blob::encode(&SessionKey::generate().seal(text.as_bytes())).is_ok());
        }
    }
}
