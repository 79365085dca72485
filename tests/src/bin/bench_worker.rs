//! `bench-worker` (`make bench-worker`): job turnaround of `lcw work` on a devnet with 1 s blocks
//! and the real LLM server, split into its steps.
//!
//! A devnet, the indexer following it and the worker pipeline in this process, llama-server with
//! Gemma 3 270M beside it. Consumers on `--sessions` sessions submit `--jobs` jobs (a real blob
//! with a sealed prompt each) from parallel tasks. For every completed job the pipeline's own
//! timings give: ack latency in blocks (ack block minus submission block), blob fetch, session
//! key unwrap and prompt decryption, inference, response encryption with its KZG sidecar, the
//! wait from a ready result to the completion being sent (the ack must be mined first), and the
//! completion's inclusion in blocks. "Overhead" is everything but inference and queueing:
//! fetch + decrypt + encrypt + wait + inclusion, in blocks of the chain's block time.

use std::time::{Duration, Instant};

use alloy::primitives::U256;
use clap::Parser;
use lcw_schema::store::Store;
use lcw_schema::suite::Suite;
use lcw_tests::indexing::Follower;
use lcw_tests::llm::LlmServer;
use lcw_tests::parties::{self, submit_prompt};
use lcw_tests::stats::{Dist, dist};
use lcw_tests::{TestNet, wait_until};
use lcw_worker::blobs::BlobSource;
use lcw_worker::llm::{Api, Llm, LlmConfig};
use lcw_worker::pipeline::{JobTiming, WorkConfig};
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(name = "bench-worker", about = "Job turnaround of the lcw worker on a devnet with a real LLM")]
struct Args {
    /// Jobs to serve.
    #[arg(long, default_value_t = 100)]
    jobs: usize,
    /// Consumer sessions submitting in parallel (at most 4 on the devnet).
    #[arg(long, default_value_t = 4)]
    sessions: usize,
    /// Tokens generated per job.
    #[arg(long, default_value_t = 16)]
    num_predict: u32,
    /// Encryption suite of the worker: p256-aesgcm | x25519.
    #[arg(long, default_value = "p256-aesgcm")]
    suite: String,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    jobs: usize,
    completed: usize,
    block_time_s: f64,
    wall_s: f64,
    ack_latency_blocks: Dist,
    acked_within_one_block: usize,
    fetch_ms: Dist,
    decrypt_ms: Dist,
    inference_ms: Dist,
    encrypt_ms: Dist,
    wait_for_ack_ms: Dist,
    completion_inclusion_blocks: Dist,
    overhead_blocks: Dist,
    completion_tokens: Dist,
    refused: usize,
    reverted: u64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn report(
    args: &Args,
    timings: &[JobTiming],
    block_time: f64,
    wall: Duration,
    refused: usize,
    reverted: u64,
) -> Report {
    let done: Vec<&JobTiming> =
        timings.iter().filter(|t| t.ack_block.is_some() && t.complete_block.is_some()).collect();
    let ack: Vec<f64> = done.iter().map(|t| (t.ack_block.unwrap() - t.submitted_block) as f64).collect();
    let inclusion: Vec<f64> = done
        .iter()
        .map(|t| (t.complete_block.unwrap().saturating_sub(t.complete_sent_block.unwrap_or_default())) as f64)
        .collect();
    let overhead: Vec<f64> = done
        .iter()
        .zip(&inclusion)
        .map(|(t, inc)| (t.fetch + t.decrypt + t.encrypt + t.post).as_secs_f64() / block_time + inc)
        .collect();
    Report {
        jobs: args.jobs,
        completed: done.len(),
        block_time_s: block_time,
        wall_s: wall.as_secs_f64(),
        acked_within_one_block: ack.iter().filter(|b| **b <= 1.0).count(),
        ack_latency_blocks: dist(ack),
        fetch_ms: dist(done.iter().map(|t| ms(t.fetch)).collect()),
        decrypt_ms: dist(done.iter().map(|t| ms(t.decrypt)).collect()),
        inference_ms: dist(done.iter().map(|t| ms(t.inference)).collect()),
        encrypt_ms: dist(done.iter().map(|t| ms(t.encrypt)).collect()),
        wait_for_ack_ms: dist(done.iter().map(|t| ms(t.post)).collect()),
        completion_inclusion_blocks: dist(inclusion),
        overhead_blocks: dist(overhead),
        completion_tokens: dist(done.iter().filter_map(|t| t.completion_tokens.map(|n| n as f64)).collect()),
        refused,
        reverted,
    }
}

fn line(name: &str, unit: &str, d: &Dist) {
    println!(
        "{name:<24} p50 {:>8.2}  p90 {:>8.2}  p99 {:>8.2}  max {:>8.2}  mean {:>8.2} {unit}",
        d.p50, d.p90, d.p99, d.max, d.mean
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let suite: Suite = args.suite.parse().map_err(|e| anyhow::anyhow!("--suite: {e}"))?;
    let sessions = args.sessions.clamp(1, 4);
    let net = TestNet::start_with(|o| {
        o.block_time = 1;
        o.deploy.dispute_window = 3_600;
        o.deploy.ack_timeout = 120;
        o.deploy.completion_timeout = 900;
    })
    .await;
    let server = LlmServer::start();
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("lcw.db");
    let indexer = Follower::start(net.profile(), &db);
    anyhow::ensure!(
        wait_until(Duration::from_secs(60), || async { Store::open_readonly(&db).is_ok() }).await,
        "the indexer did not create the store"
    );
    let worker = parties::register_worker(&net, 0, suite).await;
    let deposit = U256::from(10u64).pow(U256::from(21u64));
    let mut opened = Vec::new();
    for c in 0..sessions {
        opened.push(parties::open_session(&net, c, &worker, deposit).await);
    }
    let llm = Llm::new(LlmConfig {
        url: server.url.clone(),
        api: Api::OpenAi,
        num_predict: args.num_predict,
        ..LlmConfig::default()
    })?;
    let signer = net.signer(lcw_schema::profile::Role::Worker, 0);
    let secret = lcw_schema::suite::EncryptionSecret::from_bytes(worker.secret.suite(), &worker.secret.to_bytes())?;
    let mut config = WorkConfig::new(
        net.profile().clone(),
        db.clone(),
        signer,
        std::sync::Arc::new(secret),
        llm,
        vec![server.model.clone()],
        BlobSource::Anvil(net.provider()),
    );
    config.expected_job_secs = 2.0;
    config.stop_after = Some(args.jobs as u64);
    let (stop, rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let task = tokio::spawn(lcw_worker::pipeline::run(config, rx));

    // Submitters: one task per session, each its share of the jobs, one after another.
    let prompts = ["Name a colour.", "Name an animal.", "What is 2 + 3?", "Say hello in French.", "Name a city."];
    let net = std::sync::Arc::new(net);
    let mut submitters = Vec::new();
    for (i, session) in opened.into_iter().enumerate() {
        let net = net.clone();
        let n = args.jobs / sessions + usize::from(i < args.jobs % sessions);
        submitters.push(tokio::spawn(async move {
            for k in 0..n {
                submit_prompt(&net, &session, prompts[(i + k) % prompts.len()]).await;
            }
        }));
    }
    for s in submitters {
        s.await?;
    }
    let summary = tokio::select! {
        r = task => r??,
        _ = tokio::time::sleep(Duration::from_secs(900)) => {
            let _ = stop.send(true);
            anyhow::bail!("the worker did not complete {} jobs within 15 min", args.jobs);
        }
    };
    let wall = started.elapsed();
    indexer.finish().await;
    let r = report(&args, &summary.timings, 1.0, wall, summary.refused.len(), summary.reverted);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "bench-worker: {} of {} jobs completed in {:.1} s ({} sessions, {} tokens each, suite {}, 1 s blocks)",
        r.completed, r.jobs, r.wall_s, sessions, args.num_predict, args.suite
    );
    println!("acked within 1 block     {} of {}", r.acked_within_one_block, r.completed);
    line("ack latency", "blocks", &r.ack_latency_blocks);
    line("blob fetch", "ms", &r.fetch_ms);
    line("decrypt", "ms", &r.decrypt_ms);
    line("inference", "ms", &r.inference_ms);
    line("encrypt + sidecar", "ms", &r.encrypt_ms);
    line("wait for ack mined", "ms", &r.wait_for_ack_ms);
    line("completion inclusion", "blocks", &r.completion_inclusion_blocks);
    line("overhead (not inference)", "blocks", &r.overhead_blocks);
    line("completion tokens", "", &r.completion_tokens);
    println!("refused {}, reverted transactions {}", r.refused, r.reverted);
    Ok(())
}
