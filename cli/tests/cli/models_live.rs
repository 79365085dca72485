//! The worker's model set follows the chain while `lcw run --work` runs, against a devnet that
//! registers two models and the real LLM server (llama-server in router mode serving the one
//! cached GGUF under both names, loading nothing on its own): a model added to the worker on
//! chain is loaded by the worker and its next job is acked and completed without a restart; a
//! model removed on chain (which WorkerRegistry allows only once its last job is released) is
//! unloaded while the other stays loaded, as the LLM server's own `/models` shows; a model added
//! on chain that would not fit in memory beside the served one is left cold, with the fix.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{PW, count, operator, registered_worker};
use alloy::primitives::U256;
use lcw_contracts::deploy::{DEFAULT_MODEL, ModelSpec};
use lcw_schema::bindings::WorkerRegistry;
use lcw_schema::profile::Role;
use lcw_schema::store::Store;
use lcw_schema::types::{Lcai, ModelId};
use lcw_tests::llm::LlmServer;
use lcw_tests::parties::{self, Worker, submit_prompt};
use lcw_tests::{TestNet, wait_until};

const SECOND: &str = "gemma3-270m-b";

fn job_state(db: &Path, job: u64) -> String {
    Store::open_readonly(db)
        .ok()
        .and_then(|s| s.conn().query_row("SELECT state FROM jobs WHERE job_id = ?1", [job as i64], |r| r.get(0)).ok())
        .unwrap_or_default()
}

/// A 1 s devnet that registers [`SECOND`] beside the default model, with the dispute window
/// `window` when given.
async fn two_models(window: Option<u64>) -> TestNet {
    TestNet::start_with(|o| {
        o.block_time = 1;
        if let Some(w) = window {
            o.deploy.dispute_window = w;
        }
        o.deploy.ack_timeout = 120;
        o.deploy.completion_timeout = 600;
        o.deploy.models.push(ModelSpec {
            name: SECOND.into(),
            fee: Lcai(U256::from(10_000_000_000_000_000u128)),
            max_output_tokens: 256,
        });
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_added_on_chain_is_served_without_a_restart_and_a_removed_one_is_unloaded_after_its_last_job() {
    // A short window: the keeper releases the model's jobs before it can be removed.
    let net = two_models(Some(10)).await;
    let data = net.dir.path();
    let server = LlmServer::start_router(data, &[DEFAULT_MODEL, SECOND]);
    let db = data.join("lcw.db");
    let log = data.join("lcw-run.log");
    let account = registered_worker(&net, data, DEFAULT_MODEL);
    let secret = lcw_worker::keys::KeyDir::new(data).load_encryption(PW).expect("the encryption key");
    let signer = net.signer(Role::Worker, 0);
    let worker = Worker { address: account.address, provider: net.wallet(signer), secret };
    let deposit = U256::from(10u64).pow(U256::from(20u64));

    let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file");
    let mut run: Child = operator(data)
        .args(["run", "--keeper", "--work", "--no-api", "--llm-api", "openai", "--llm-url", &server.url])
        .args(["--models", DEFAULT_MODEL, "--num-predict", "16"])
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("spawn lcw run");
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    let completed = |job: u64| {
        let db = db.clone();
        move || {
            let db = db.clone();
            async move { job_state(&db, job) == "COMPLETED" }
        }
    };

    // The worker loads the model it serves at start; the other stays unloaded.
    let loaded = wait_until(Duration::from_secs(120), || async {
        server.router_status(DEFAULT_MODEL).as_deref() == Some("loaded")
    })
    .await;
    assert!(loaded, "the served model is loaded at start:\n{}", text());
    assert_eq!(server.router_status(SECOND).as_deref(), Some("unloaded"));
    let first = parties::open_session(&net, 0, &worker, deposit).await;
    let a = submit_prompt(&net, &first, "Name a planet.").await;
    assert!(wait_until(Duration::from_secs(180), completed(a.job)).await, "job {} completed:\n{}", a.job, text());

    // Added on chain while it runs: loaded, and its next job acked and completed.
    let wr = WorkerRegistry::new(net.profile().contracts.worker_registry, &worker.provider);
    lcw_tests::send!(wr.addSupportedModel(ModelId::from_name(SECOND).0));
    let second = parties::open_session_for(&net, 1, &worker, deposit, ModelId::from_name(SECOND).0).await;
    let b = submit_prompt(&net, &second, "Name a river.").await;
    assert!(wait_until(Duration::from_secs(180), completed(b.job)).await, "job {} completed:\n{}", b.job, text());
    assert_eq!(server.router_status(SECOND).as_deref(), Some("loaded"), "{}", text());
    assert!(run.try_wait().expect("try_wait").is_none(), "no restart:\n{}", text());

    // preflight with the same flags: the model set names what is served, and the model on chain
    // that --models lacks, with the fix.
    let out = operator(data)
        .args(["preflight", "--llm-api", "openai", "--llm-url", &server.url, "--models", DEFAULT_MODEL])
        .output()
        .expect("run lcw preflight");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = |name: &str| {
        stdout.lines().find(|l| l.get(6..).is_some_and(|r| r.starts_with(&format!("{name} ")))).unwrap_or("").to_owned()
    };
    assert!(line(&format!("model set {SECOND}")).starts_with("WARN"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "fix: add {SECOND} to --models (LCW_MODELS), or stop serving it: `lcw remove-models --models {SECOND}`"
        )),
        "{stdout}"
    );
    let served = stdout.lines().find(|l| l.contains(&format!("serves {DEFAULT_MODEL}, {SECOND}"))).unwrap_or("");
    assert!(served.starts_with("ok    model set "), "{stdout}");

    // Removed on chain: WorkerRegistry refuses while a job of the model is not yet released
    // (ActiveJobsExistForModel), so the removal goes through once the keeper has released the
    // last one; then the worker unloads it, and keeps the other loaded.
    let id = ModelId::from_name(SECOND).0;
    let releasable =
        wait_until(Duration::from_secs(180), || async { wr.removeSupportedModel(id).call().await.is_ok() });
    assert!(releasable.await, "the model's jobs were released:\n{}", text());
    lcw_tests::send!(wr.removeSupportedModel(id));
    let unloaded =
        wait_until(Duration::from_secs(60), || async { server.router_status(SECOND).as_deref() == Some("unloaded") });
    assert!(unloaded.await, "the removed model is unloaded:\n{}", text());
    assert_eq!(server.router_status(DEFAULT_MODEL).as_deref(), Some("loaded"), "the other model stays");
    let log_text = text();
    assert!(log_text.contains("model removed from this worker on chain"), "{log_text}");
    assert!(log_text.contains("model unloaded: its last job is done"), "{log_text}");
    // Still serving the model it kept, without a restart.
    let c = submit_prompt(&net, &first, "Name a mountain.").await;
    assert!(wait_until(Duration::from_secs(180), completed(c.job)).await, "job {} completed:\n{}", c.job, text());

    let _ = Command::new("kill").args(["-INT", &run.id().to_string()]).status();
    let status = run.wait().expect("wait");
    assert!(status.success(), "stopped cleanly ({status}):\n{}", text());
    for event in ["JobAcknowledged", "JobCompleted"] {
        assert_eq!(count(&db, &format!("SELECT count(*) FROM logs WHERE event = '{event}'")), 3, "{event}");
    }
    assert_eq!(count(&db, "SELECT count(*) FROM outbox WHERE status = 'reverted'"), 0, "{}", text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_added_on_chain_that_does_not_fit_beside_the_served_one_stays_cold_and_its_jobs_wait() {
    let net = two_models(None).await;
    let data = net.dir.path();
    let server = LlmServer::start_router(data, &[DEFAULT_MODEL, SECOND]);
    // One model's footprint as the worker sizes it on this router (the model file and its KV
    // cache); the limit holds one of the two, not both.
    let client = lcw_worker::llm::Llm::new(server.config()).expect("LLM client");
    let sized = client.footprints(&[DEFAULT_MODEL.to_owned()]).await.expect("footprints");
    let one = sized.sized.first().unwrap_or_else(|| panic!("the router's model is sized: {sized:?}")).total;
    let limit = (one * 3 / 2).to_string();
    let db = data.join("lcw.db");
    let log = data.join("lcw-run.log");
    let account = registered_worker(&net, data, DEFAULT_MODEL);
    let secret = lcw_worker::keys::KeyDir::new(data).load_encryption(PW).expect("the encryption key");
    let worker = Worker { address: account.address, provider: net.wallet(net.signer(Role::Worker, 0)), secret };
    let deposit = U256::from(10u64).pow(U256::from(20u64));
    let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file");
    let mut run: Child = operator(data)
        .args(["run", "--work", "--no-api", "--llm-api", "openai", "--llm-url", &server.url])
        .args(["--models", DEFAULT_MODEL, "--num-predict", "16", "--memory-limit", &limit])
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("spawn lcw run");
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    let loaded = wait_until(Duration::from_secs(120), || async {
        server.router_status(DEFAULT_MODEL).as_deref() == Some("loaded")
    });
    assert!(loaded.await, "the served model is loaded at start:\n{}", text());

    // Added on chain (from a machine where it fits, say): the worker leaves it cold, says why and
    // what to do, and does not ack its job.
    let wr = WorkerRegistry::new(net.profile().contracts.worker_registry, &worker.provider);
    lcw_tests::send!(wr.addSupportedModel(ModelId::from_name(SECOND).0));
    let session = parties::open_session_for(&net, 1, &worker, deposit, ModelId::from_name(SECOND).0).await;
    let b = submit_prompt(&net, &session, "Name a river.").await;
    let told = wait_until(Duration::from_secs(60), || async { text().contains("does not fit in memory beside") });
    assert!(told.await, "the worker says the added model does not fit:\n{}", text());
    let log_text = text();
    assert!(log_text.contains(&format!("do not add {SECOND}")), "{log_text}");
    // Ten blocks later its job is still not acked and the model still not loaded.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(job_state(&db, b.job), "SUBMITTED", "{}", text());
    assert_eq!(server.router_status(SECOND).as_deref(), Some("unloaded"), "{}", text());
    assert_eq!(server.router_status(DEFAULT_MODEL).as_deref(), Some("loaded"));
    assert!(run.try_wait().expect("try_wait").is_none(), "still running:\n{}", text());

    let _ = Command::new("kill").args(["-INT", &run.id().to_string()]).status();
    let status = run.wait().expect("wait");
    assert!(status.success(), "stopped cleanly ({status}):\n{}", text());
    assert_eq!(count(&db, "SELECT count(*) FROM logs WHERE event = 'JobAcknowledged'"), 0, "{}", text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refuses_to_start_when_the_llm_server_serves_no_model_added_on_chain_and_says_the_fix() {
    let net = TestNet::start().await;
    let data = net.dir.path();
    // The server answers to another name only: the exact-name trap.
    let server = LlmServer::start_router(data, &[SECOND]);
    registered_worker(&net, data, DEFAULT_MODEL);
    let out = operator(data)
        .args(["run", "--work", "--no-api", "--llm-api", "openai", "--llm-url", &server.url])
        .args(["--models", DEFAULT_MODEL])
        .output()
        .expect("run lcw");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it does not start:\n{stderr}");
    assert!(stderr.contains("no model can be served"), "{stderr}");
    assert!(
        stderr.contains(&format!("{DEFAULT_MODEL} is added on chain but the LLM server does not serve it")),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("--alias {DEFAULT_MODEL}")), "{stderr}");
    assert!(stderr.contains(&format!("lcw remove-models --models {DEFAULT_MODEL}")), "{stderr}");
    assert_eq!(server.router_status(SECOND).as_deref(), Some("unloaded"), "nothing was loaded");
}
