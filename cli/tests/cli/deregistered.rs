//! `lcw run --work` with the real binary, a devnet and the real LLM server, through `lcw exit`:
//! the worker serves a job, the exit waits out its dispute window while `lcw run` releases it,
//! deregisters, and `lcw run` then stops by itself, exit status 0, saying why. No job can reach
//! the worker after its deregistration: the chain refuses to submit one.

use std::time::Duration;

use crate::support::{count, ok, operator, registered_worker, run_worker, session_with};
use lcw_schema::bindings::{JobRegistry, WorkerRegistry};
use lcw_tests::llm::LlmServer;
use lcw_tests::parties::submit_prompt;
use lcw_tests::{TestNet, revert_of, wait_until};

const MODEL: &str = "gemma3-270m";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deregistered_worker_finishes_what_it_owes_and_lcw_run_exits_0() {
    let net = TestNet::start_with(|o| {
        o.block_time = 1;
        o.deploy.dispute_window = 15;
        // Generous: two cores shared with builds can make a short answer take 20 s.
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
    let text = || std::fs::read_to_string(&log).unwrap_or_default();

    let mut run = run_worker(data, &server.url, MODEL, 16, &log);
    let job = submit_prompt(&net, &session, "Name a planet.").await;
    let completed = || async { count(&db, "SELECT count(*) FROM jobs WHERE state = 'COMPLETED'") == 1 };
    assert!(wait_until(Duration::from_secs(180), completed).await, "the job was completed:\n{}", text());

    // The exit starts while the job waits out its dispute window: it drains, waits, and
    // deregisters once `lcw run`'s settler (or the exit itself) has released the job.
    assert!(run.try_wait().unwrap().is_none(), "lcw run still serves:\n{}", text());
    let exit = ok(operator(data).args(["exit"]));
    assert!(exit.contains("deregistered"), "{exit}");
    let wr = WorkerRegistry::new(net.profile().contracts.worker_registry, net.provider());
    assert!(!wr.isWorkerRegistered(account.address).call().await.unwrap());

    // Nothing can be assigned to it any more: the chain refuses the submission.
    let jr = JobRegistry::new(net.profile().contracts.job_registry, &session.consumer);
    let err = revert_of(jr.submitJob(session.id, lcw_tests::b256(0x42)).call().await.unwrap_err());
    assert!(err.starts_with("WorkerNotEligible"), "{err}");

    // `lcw run` stops by itself, cleanly, and says why.
    let stopped = wait_until(Duration::from_secs(60), || {
        let exited = run.try_wait().unwrap().is_some();
        async move { exited }
    })
    .await;
    if !stopped {
        let _ = run.kill();
    }
    let status = run.wait().expect("wait");
    let text = text();
    assert!(stopped, "lcw run stopped after the deregistration:\n{text}");
    assert!(status.success(), "lcw run exited 0 ({status}):\n{text}");
    let block = count(
        &db,
        &format!("SELECT deregistered_block FROM workers WHERE address = x'{}'", alloy::hex::encode(account.address)),
    );
    assert!(block > 0, "the store has the deregistration");
    assert!(text.contains(&format!("this worker was deregistered in block {block}")), "{text}");
    assert!(text.contains("owes nothing more") && text.contains("lcw run stops"), "{text}");
    assert!(text.contains("restart lcw"), "the line says re-registering needs a restart:\n{text}");

    // The job was served once and released; nothing was refused.
    let state = count(&db, &format!("SELECT count(*) FROM jobs WHERE job_id = {} AND state = 'RELEASED'", job.job));
    assert_eq!(state, 1, "the job was released:\n{text}");
    assert_eq!(count(&db, "SELECT count(*) FROM outbox WHERE kind = 'ack' AND status = 'mined'"), 1);
    assert_eq!(count(&db, "SELECT count(*) FROM outbox WHERE kind = 'complete' AND status = 'mined'"), 1);
    assert_eq!(count(&db, "SELECT count(*) FROM outbox WHERE status = 'reverted'"), 0, "{text}");
    assert_eq!(count(&db, "SELECT count(*) FROM worker_refusals"), 0, "{text}");
}
