//! `lcw run --work` with the real binary, a devnet, and the real LLM server: killed with SIGKILL
//! in the middle of its jobs and started again, it completes every job exactly once (one ack and
//! one completion each, nothing reverted) and each answer is the model's.

use std::process::Command;
use std::time::Duration;

use crate::support::{count, registered_worker, run_worker, session_with};
use alloy::primitives::{B256, Bytes};
use alloy::providers::Provider;
use lcw_schema::store::Store;
use lcw_tests::llm::LlmServer;
use lcw_tests::parties::submit_prompt;
use lcw_tests::{TestNet, wait_until};
use lcw_worker::llm::{Api, Llm, LlmConfig};

const MODEL: &str = "gemma3-270m";
const NUM_PREDICT: u32 = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_job_and_restarted_it_completes_every_job_exactly_once() {
    let net = TestNet::start_with(|o| {
        o.block_time = 1;
        o.deploy.dispute_window = 600;
        // Generous: two cores shared with builds can make a 24-token answer take 20 s.
        o.deploy.ack_timeout = 120;
        o.deploy.completion_timeout = 600;
    })
    .await;
    let server = LlmServer::start();
    let data = net.dir.path();
    let db = data.join("lcw.db");
    let log = data.join("lcw-run.log");
    let account = registered_worker(&net, data, MODEL);
    let session = session_with(&net, data, &account).await;

    let mut first = run_worker(data, &server.url, MODEL, NUM_PREDICT, &log);
    let prompts = ["Name a planet.", "Name a river.", "Name a mountain.", "Name a tree."];
    let mut jobs = Vec::new();
    for p in prompts {
        jobs.push(submit_prompt(&net, &session, p).await);
    }
    // Kill it as soon as it has sent an ack: that job's work is running, the rest are queued.
    let acking = || async { count(&db, "SELECT count(*) FROM outbox WHERE kind = 'ack' AND status <> 'intent'") > 0 };
    let sent = wait_until(Duration::from_secs(60), acking).await;
    first.kill().expect("SIGKILL");
    let _ = first.wait();
    assert!(sent, "an ack was sent before the kill:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
    let completed_before = count(&db, "SELECT count(*) FROM jobs WHERE state = 'COMPLETED'");
    assert!(completed_before < jobs.len() as i64, "killed mid-way ({completed_before} completed)");

    let mut second = run_worker(data, &server.url, MODEL, NUM_PREDICT, &log);
    // Done when the indexer shows every job completed and the outbox has seen every completion's
    // receipt (it records a transaction as mined when it reads the receipt, which can come after
    // the indexer has committed the block).
    let all_done = || async {
        count(&db, "SELECT count(*) FROM jobs WHERE state = 'COMPLETED'") == jobs.len() as i64
            && count(&db, "SELECT count(*) FROM outbox WHERE kind = 'complete' AND status = 'mined'")
                >= jobs.len() as i64
    };
    let done = wait_until(Duration::from_secs(300), all_done).await;
    // A clean stop: SIGINT, and it says so.
    let _ = Command::new("kill").args(["-INT", &second.id().to_string()]).status();
    let status = second.wait().expect("wait");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(done, "every job completed after the restart:\n{text}");
    assert!(status.success(), "stopped cleanly on SIGINT ({status}):\n{text}");

    // Exactly one ack and one completion per job, nothing reverted, nothing sent twice.
    for kind in ["ack", "complete"] {
        let mined = count(&db, &format!("SELECT count(*) FROM outbox WHERE kind = '{kind}' AND status = 'mined'"));
        assert_eq!(mined, jobs.len() as i64, "one mined {kind} per job:\n{text}");
        let per_job = count(
            &db,
            &format!(
                "SELECT count(*) FROM (SELECT oj.job_id FROM outbox_jobs oj JOIN outbox o ON o.id = oj.outbox_id
                 WHERE o.kind = '{kind}' AND o.status IN ('sent', 'mined', 'reverted') GROUP BY oj.job_id
                 HAVING count(*) > 1)"
            ),
        );
        assert_eq!(per_job, 0, "no job has two {kind} transactions");
    }
    assert_eq!(count(&db, "SELECT count(*) FROM outbox WHERE status = 'reverted'"), 0, "{text}");
    for event in ["JobAcknowledged", "JobCompleted"] {
        let n = count(&db, &format!("SELECT count(*) FROM logs WHERE event = '{event}'"));
        assert_eq!(n, jobs.len() as i64, "one {event} per job on chain");
    }

    // Each response is the model's answer to the prompt, as the consumer reads it.
    let reference = Llm::new(LlmConfig {
        url: server.url.clone(),
        api: Api::OpenAi,
        num_predict: NUM_PREDICT,
        ..LlmConfig::default()
    })
    .unwrap();
    let store = Store::open_readonly(&db).unwrap();
    for s in &jobs {
        let hash: Vec<u8> = store
            .conn()
            .query_row("SELECT response_blob_hash FROM jobs WHERE job_id = ?1", [s.job as i64], |r| r.get(0))
            .unwrap();
        let blob: Bytes = net
            .provider()
            .raw_request("anvil_getBlobByHash".into(), (B256::from_slice(&hash),))
            .await
            .expect("anvil_getBlobByHash");
        let ciphertext = lcw_schema::blob::decode(&blob).expect("blob payload");
        let answer = String::from_utf8(s.key.open(&ciphertext).expect("the consumer decrypts")).unwrap();
        assert_eq!(answer, reference.generate(MODEL, &s.prompt).await.unwrap().text, "job {}", s.job);
    }
}
