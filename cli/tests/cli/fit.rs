//! Memory fit of the served models, with the real binary against a devnet and the real LLM
//! server (llama-server with Gemma 3 270M): `lcw register`, `lcw add-models` and `lcw preflight`
//! given a `--memory-limit` below the model's footprint refuse with the sizes and the fix, exit
//! non-zero and send nothing; just above it (under 10 % headroom) they warn and go on; with room
//! to spare they say nothing about memory.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::{Out, PW, run};
use alloy::providers::Provider;
use lcw_contracts::deploy::ModelSpec;
use lcw_schema::bindings::WorkerRegistry;
use lcw_schema::profile::Role;
use lcw_schema::types::{Lcai, ModelId};
use lcw_tests::TestNet;
use lcw_tests::llm::LlmServer;
use lcw_worker::fit::human_bytes;
use lcw_worker::llm::Llm;

const MODEL: &str = "gemma3-270m";
/// Whitelisted on the devnet, not served by the LLM server: its size is unknown.
const OTHER: &str = "fit-test-unserved";

/// `lcw --data-dir DATA <verb> --llm-api openai --llm-url URL --memory-limit LIMIT ...`.
fn verb(data: &Path, verb: &str, llm: &LlmServer, limit: u64) -> Command {
    let mut cmd = crate::lcw_in(data);
    cmd.env("LCW_PASSWORD", PW).arg(verb);
    cmd.args(["--llm-api", "openai", "--llm-url", &llm.url, "--memory-limit", &limit.to_string()]);
    cmd
}

/// The footprint of the served model, as the LLM server reports it.
async fn footprint(llm: &LlmServer) -> u64 {
    let client = Llm::new(llm.config()).unwrap();
    let footprints = client.footprints(&[MODEL.to_owned()]).await.unwrap();
    assert!(footprints.unknown.is_empty(), "{footprints:?}");
    let f = &footprints.sized[0];
    assert!(f.kv_cache.is_some_and(|kv| kv > 0), "the KV cache is counted: {f:?}");
    f.ram()
}

async fn net_with_other_model() -> TestNet {
    TestNet::start_with(|o| {
        o.deploy.models.push(ModelSpec {
            name: OTHER.into(),
            fee: Lcai::parse("0.001").unwrap(),
            max_output_tokens: 64,
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_and_add_models_refuse_a_set_that_does_not_fit_and_send_nothing() {
    let llm = LlmServer::start();
    let net = net_with_other_model().await;
    let data = net.dir.path();
    let account = net.profile().accounts_with(Role::Worker).next().unwrap().clone();
    let out = run(crate::lcw_in(data).env("LCW_PASSWORD", PW).args([
        "keygen",
        "--suite",
        "x25519",
        "--import-key",
        &account.private_key.to_string(),
    ]));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let provider = net.provider();
    let wr = WorkerRegistry::new(net.profile().contracts.worker_registry, provider.clone());
    let size = footprint(&llm).await;
    let nonce = provider.get_transaction_count(account.address).await.unwrap();

    // Half the footprint: refused before anything is sent, with the size, the limit and the fix.
    let out = run(verb(data, "register", &llm, size / 2).args(["--models", MODEL]));
    assert_ne!(out.code, Some(0), "{}", out.stdout);
    for part in [
        format!("{MODEL} {}", human_bytes(size)),
        format!("of {} (--memory-limit)", human_bytes(size / 2)),
        format!("do not add {MODEL}"),
        "nothing was sent".to_owned(),
    ] {
        assert!(out.stderr.contains(&part), "missing `{part}` in: {}", out.stderr);
    }
    assert!(!wr.isWorkerRegistered(account.address).call().await.unwrap(), "not registered");
    assert_eq!(provider.get_transaction_count(account.address).await.unwrap(), nonce, "no transaction");

    // 5 % above the footprint: registered, with a warning about the headroom.
    let tight = size + size / 20;
    let out = run(verb(data, "register", &llm, tight).args(["--models", MODEL]));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stderr.contains("warning:") && out.stderr.contains("less than 10 %"), "{}", out.stderr);
    assert!(out.stderr.contains(&format!("{MODEL} {}", human_bytes(size))), "{}", out.stderr);
    assert!(wr.isWorkerRegistered(account.address).call().await.unwrap());
    assert!(wr.workerSupportsModel(account.address, ModelId::from_name(MODEL).0).call().await.unwrap());

    // Adding a model to a set that already fills the limit: the served model is named for removal.
    let nonce = provider.get_transaction_count(account.address).await.unwrap();
    let out = run(verb(data, "add-models", &llm, size / 2).args(["--models", OTHER]));
    assert_ne!(out.code, Some(0), "{}", out.stdout);
    assert!(out.stderr.contains(&format!("lcw remove-models --models {MODEL}")), "{}", out.stderr);
    assert!(out.stderr.contains(&format!("not served, or the server reports no size): {OTHER}")), "{}", out.stderr);
    assert!(!wr.workerSupportsModel(account.address, ModelId::from_name(OTHER).0).call().await.unwrap());
    assert_eq!(provider.get_transaction_count(account.address).await.unwrap(), nonce, "no transaction");

    // Room to spare: added, and nothing said about the memory but the unsized model.
    let out = run(verb(data, "add-models", &llm, 8 << 30).args(["--models", OTHER]));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
    assert!(out.stderr.contains(&format!("{OTHER}: size unknown")), "{}", out.stderr);
    assert!(wr.workerSupportsModel(account.address, ModelId::from_name(OTHER).0).call().await.unwrap());

    // The worker itself: a set that cannot fit stops `lcw work` before it serves anything.
    let mut work = verb(data, "work", &llm, size / 2);
    work.args(["--models", MODEL, "--no-index"]).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = work.spawn().expect("start lcw work");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while child.try_wait().expect("wait for lcw work").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("lcw work started serving a model set that does not fit in the memory limit");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("lcw work's output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("do not fit in memory together"), "{stderr}");
    assert!(stderr.contains(&format!("{MODEL} {}", human_bytes(size))), "{stderr}");
    assert!(stderr.contains(&format!("lcw remove-models --models {MODEL}")), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_fails_warns_or_passes_on_the_memory_of_the_served_models() {
    let llm = LlmServer::start();
    let net = TestNet::start().await;
    let data = net.dir.path();
    let account = net.profile().accounts_with(Role::Worker).next().unwrap().clone();
    let key = account.private_key.to_string();
    let ok = |cmd: &mut Command| assert_eq!(run(cmd).code, Some(0), "{cmd:?}");
    ok(crate::lcw_in(data).env("LCW_PASSWORD", PW).args(["keygen", "--suite", "x25519", "--import-key", &key]));
    ok(verb(data, "register", &llm, 8 << 30).args(["--models", MODEL]));
    let size = footprint(&llm).await;
    let memory = |out: &Out| -> String {
        let line = out.stdout.lines().find(|l| l.get(6..).is_some_and(|r| r.starts_with("memory ")));
        line.unwrap_or_else(|| panic!("no memory line in:\n{}", out.stdout)).to_owned()
    };

    let out = run(&mut verb(data, "preflight", &llm, size / 2));
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    let line = memory(&out);
    assert!(line.starts_with("FAIL") && line.contains(&format!("{MODEL} {}", human_bytes(size))), "{line}");
    assert!(out.stdout.contains(&format!("lcw remove-models --models {MODEL}")), "{}", out.stdout);
    assert!(out.stderr.contains("1 check failed (memory)"), "{}", out.stderr);

    let out = run(&mut verb(data, "preflight", &llm, size + size / 20));
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(memory(&out).starts_with("WARN"), "{}", out.stdout);
    assert!(out.stdout.contains("less than 10 %"), "{}", out.stdout);

    let out = run(&mut verb(data, "preflight", &llm, 8 << 30));
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(memory(&out).starts_with("ok") && memory(&out).contains("of 8.0 GiB (--memory-limit)"), "{}", out.stdout);
    assert!(!out.stdout.contains("WARN"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_start_refuses_a_set_that_does_not_fit() {
    use lcw_worker::fit::{FitError, Verdict, check_at_start};
    let llm = LlmServer::start();
    let size = footprint(&llm).await;
    let client = Llm::new(llm.config()).unwrap();
    let models = [MODEL.to_owned()];

    let err = check_at_start(&client, &models, Some(size / 2), "").await.unwrap_err();
    assert!(matches!(&err, FitError::TooBig(fit) if fit.total() == size), "{err:?}");
    assert!(err.to_string().contains("`lcw remove-models --models gemma3-270m`"), "{err}");
    // The fix names the network the worker runs on.
    let FitError::TooBig(fit) = err else { unreachable!() };
    let on_testnet = fit.refusal(" --network testnet");
    assert!(on_testnet.contains("`lcw remove-models --network testnet --models gemma3-270m`"), "{on_testnet}");

    let tight = check_at_start(&client, &models, Some(size + size / 20), "").await.unwrap().unwrap();
    assert_eq!(tight.verdict, Verdict::Tight);
    // No limit: the machine's own memory, which holds the 270M model with room to spare.
    let fits = check_at_start(&client, &models, None, "").await.unwrap().unwrap();
    assert_eq!(fits.verdict, Verdict::Fits, "{}", fits.sizes());
}
