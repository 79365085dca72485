//! `bench-sortition` (`make bench-sortition`): how lcw's worker fares in the sortition race on a
//! devnet with 1 s blocks and the real LLM server.
//!
//! A devnet with sortition on, the indexer following it and lcw's worker (predicting its turn
//! from the store) in this process, llama-server with Gemma 3 270M beside it, and
//! `--competitors` other workers with the same stake that claim every request in the block their
//! turn comes (`lcw_tests::sortition::competitor`). Consumers make `--requests` session requests,
//! one per block; when lcw's worker wins one, its consumer provides the key and submits a job
//! with a real sealed prompt.
//!
//! Reported: requests claimed and expired; for every claim, the blocks from the winner's first
//! eligible block to the block the claim landed in (target: 0 or 1); how often lcw's worker was
//! the first eligible and how often it then won; and, for the sessions it won, the time from
//! `requestSession` to the first answer (the completion mined), in blocks and seconds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use clap::Parser;
use lcw_schema::bindings::{JobRegistry, SessionManager};
use lcw_schema::profile::Role;
use lcw_schema::store::Store;
use lcw_schema::suite::Suite;
use lcw_tests::indexing::Follower;
use lcw_tests::llm::LlmServer;
use lcw_tests::parties::{self, submit_prompt};
use lcw_tests::sortition::{competitor, manager, predicted_delay, provide_key, request};
use lcw_tests::stats::{Dist, dist};
use lcw_tests::{TestNet, send, wait_until};
use lcw_worker::blobs::BlobSource;
use lcw_worker::claim::Rule;
use lcw_worker::llm::{Api, Llm, LlmConfig};
use lcw_worker::pipeline::WorkConfig;
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(name = "bench-sortition", about = "lcw's worker in the sortition race on a devnet with a real LLM")]
struct Args {
    /// Session requests to make (one per block).
    #[arg(long, default_value_t = 100)]
    requests: usize,
    /// Other workers racing for the same requests (at most 10 on the devnet).
    #[arg(long, default_value_t = 3)]
    competitors: usize,
    /// AIConfig claim window, in blocks.
    #[arg(long, default_value_t = 8)]
    window: u64,
    /// Tokens generated per job.
    #[arg(long, default_value_t = 16)]
    num_predict: u32,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    requests: usize,
    claimed: usize,
    expired: usize,
    workers: usize,
    window_blocks: u64,
    /// Claim block minus the winner's first eligible block, every claim.
    claim_lateness_blocks: Dist,
    /// The same for lcw's claims that won.
    ours_claim_lateness_blocks: Dist,
    ours_claims_in_first_or_next_block: usize,
    ours_first_eligible: usize,
    ours_won_when_first: usize,
    ours_won: usize,
    ours_claims_sent: u64,
    ours_claims_lost: u64,
    ours_missed: u64,
    /// requestSession → completion mined, for the sessions lcw won.
    request_to_answer_blocks: Dist,
    request_to_answer_s: Dist,
    wall_s: f64,
}

struct Outcome {
    winner: Option<Address>,
    claim_block: Option<u64>,
    first_blocks: HashMap<Address, u64>,
    answer: Option<(u64, f64)>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let competitors = args.competitors.clamp(0, 10);
    let net = TestNet::start_with(|o| {
        o.block_time = 1;
        o.deploy.sortition = true;
        o.deploy.claim_window_blocks = args.window;
        o.deploy.max_concurrent_jobs = 1_000;
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
    let ours = parties::register_worker(&net, 0, Suite::P256AesGcm).await;
    let mut everyone = vec![ours.address];
    for i in 1..=competitors {
        everyone.push(parties::register_worker(&net, i, Suite::P256AesGcm).await.address);
    }
    let llm = Llm::new(LlmConfig {
        url: server.url.clone(),
        api: Api::OpenAi,
        num_predict: args.num_predict,
        ..LlmConfig::default()
    })?;
    let secret = lcw_schema::suite::EncryptionSecret::from_bytes(ours.secret.suite(), &ours.secret.to_bytes())?;
    let mut config = WorkConfig::new(
        net.profile().clone(),
        db.clone(),
        net.signer(Role::Worker, 0),
        Arc::new(secret),
        llm,
        vec![server.model.clone()],
        BlobSource::Anvil(net.provider()),
    );
    config.expected_job_secs = 2.0;
    config.claims.rule = Rule::Predict;
    let (stop, rx) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(lcw_worker::pipeline::run(config, rx));
    let (requests_tx, requests_rx) = tokio::sync::watch::channel(Vec::new());
    let rivals: Vec<_> = (1..=competitors).map(|i| competitor(&net, i, requests_rx.clone())).collect();
    drop(requests_rx);

    let net = Arc::new(net);
    let ours = Arc::new(ours);
    let everyone = Arc::new(everyone);
    let started = Instant::now();
    let mut followers = Vec::new();
    for i in 0..args.requests {
        let req = request(&net, i % 4, 300, U256::ZERO).await;
        requests_tx.send_modify(|v| v.push((req.id, req.block)));
        let (shared, ours, everyone, db) = (net.clone(), ours.clone(), everyone.clone(), db.clone());
        followers.push(tokio::spawn(async move {
            let net = shared;
            let sent_at = Instant::now();
            let mut first_blocks = HashMap::new();
            for w in everyone.iter() {
                first_blocks.insert(*w, req.block + predicted_delay(&net, &req, *w).await);
            }
            let sm = SessionManager::new(manager(&net).await, net.provider());
            let mut winner = None;
            for _ in 0..3_000 {
                let r = sm.getRequest(req.id).call().await.expect("getRequest");
                if r.status == 1 || r.status == 2 {
                    winner = Some(r.worker);
                    break;
                }
                if r.status == 3 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let claim_block = match winner {
                Some(_) => {
                    let filter = alloy::rpc::types::Filter::new()
                        .address(*sm.address())
                        .event_signature(<SessionManager::SessionClaimed as alloy::sol_types::SolEvent>::SIGNATURE_HASH)
                        .topic1(alloy::primitives::B256::from(req.id))
                        .from_block(req.block);
                    net.provider().get_logs(&filter).await.expect("logs").first().and_then(|l| l.block_number)
                }
                None => None,
            };
            let mut answer = None;
            if winner == Some(ours.address) {
                let session = provide_key(&net, &req, &ours).await;
                let jr = JobRegistry::new(net.profile().contracts.job_registry, &session.consumer);
                send!(jr.deposit().value(U256::from(10u64).pow(U256::from(18u64))));
                let job = submit_prompt(&net, &session, "Name a colour.").await;
                let done = || async {
                    Store::open_readonly(&db).ok().is_some_and(|s| {
                        s.conn()
                            .query_row("SELECT state FROM jobs WHERE job_id = ?1", [job.job as i64], |r| {
                                r.get::<_, String>(0)
                            })
                            .is_ok_and(|state| state == "COMPLETED")
                    })
                };
                if wait_until(Duration::from_secs(600), done).await {
                    let r = jr.getJob(U256::from(job.job)).call().await.expect("getJob");
                    answer = Some((r.completionBlockNumber.to::<u64>() - req.block, sent_at.elapsed().as_secs_f64()));
                }
            }
            Outcome { winner, claim_block, first_blocks, answer }
        }));
        // One request per block.
        let head = net.provider().get_block_number().await?;
        wait_until(Duration::from_secs(10), || async {
            net.provider().get_block_number().await.is_ok_and(|h| h > head)
        })
        .await;
    }
    let mut outcomes = Vec::new();
    for f in followers {
        outcomes.push(f.await?);
    }
    drop(requests_tx);
    for r in rivals {
        r.await?;
    }
    let _ = stop.send(true);
    let summary = worker.await??;
    indexer.finish().await;
    let wall = started.elapsed();

    let me = ours.address;
    let lateness = |o: &Outcome| -> Option<f64> {
        let (w, at) = (o.winner?, o.claim_block?);
        Some(at.saturating_sub(o.first_blocks[&w]) as f64)
    };
    let first = |o: &Outcome| o.first_blocks.values().min().copied().unwrap_or(u64::MAX);
    let ours_first: Vec<&Outcome> = outcomes.iter().filter(|o| o.first_blocks[&me] == first(o)).collect();
    let ours_late: Vec<f64> = outcomes.iter().filter(|o| o.winner == Some(me)).filter_map(lateness).collect();
    let report = Report {
        requests: outcomes.len(),
        claimed: outcomes.iter().filter(|o| o.winner.is_some()).count(),
        expired: outcomes.iter().filter(|o| o.winner.is_none()).count(),
        workers: everyone.len(),
        window_blocks: args.window,
        claim_lateness_blocks: dist(outcomes.iter().filter_map(lateness).collect()),
        ours_claims_in_first_or_next_block: ours_late.iter().filter(|b| **b <= 1.0).count(),
        ours_claim_lateness_blocks: dist(ours_late),
        ours_first_eligible: ours_first.len(),
        ours_won_when_first: ours_first.iter().filter(|o| o.winner == Some(me)).count(),
        ours_won: outcomes.iter().filter(|o| o.winner == Some(me)).count(),
        ours_claims_sent: summary.claims.sent,
        ours_claims_lost: summary.claims.lost,
        ours_missed: summary.claims.missed.values().sum(),
        request_to_answer_blocks: dist(outcomes.iter().filter_map(|o| o.answer.map(|a| a.0 as f64)).collect()),
        request_to_answer_s: dist(outcomes.iter().filter_map(|o| o.answer.map(|a| a.1)).collect()),
        wall_s: wall.as_secs_f64(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let line = |name: &str, unit: &str, d: &Dist| {
        println!(
            "{name:<36} n {:>4}  p50 {:>7.2}  p90 {:>7.2}  max {:>7.2}  mean {:>7.2} {unit}",
            d.n, d.p50, d.p90, d.max, d.mean
        )
    };
    println!(
        "bench-sortition: {} requests, {} workers (lcw + {} competitors, equal stakes), claim window {} blocks, 1 s \
         blocks, {:.0} s",
        report.requests, report.workers, competitors, report.window_blocks, report.wall_s
    );
    println!("claimed {}, expired {}", report.claimed, report.expired);
    line("claim lateness, every winner", "blocks", &report.claim_lateness_blocks);
    line("claim lateness, lcw's won claims", "blocks", &report.ours_claim_lateness_blocks);
    println!(
        "lcw's claims in the first eligible block or the next: {} of {}",
        report.ours_claims_in_first_or_next_block, report.ours_won
    );
    println!(
        "lcw first eligible on {} requests, won {} of them ({:.0} %); won {} in all",
        report.ours_first_eligible,
        report.ours_won_when_first,
        100.0 * report.ours_won_when_first as f64 / report.ours_first_eligible.max(1) as f64,
        report.ours_won
    );
    println!(
        "lcw claims sent {}, lost {}, missed {}",
        report.ours_claims_sent, report.ours_claims_lost, report.ours_missed
    );
    line("requestSession to first answer", "blocks", &report.request_to_answer_blocks);
    line("requestSession to first answer", "s", &report.request_to_answer_s);
    Ok(())
}
