//! `lcw preflight` with the real binary against a devnet and the real LLM server: a worker that is
//! set up passes every check; a dead LLM server and a model not added fail with the URL and the
//! fix; an unregistered worker is told to register; on a sortition network the SessionManager,
//! the worker's claims and the gateway sign-in are checked. No password is given to preflight.

use std::path::Path;
use std::process::Command;

use crate::support::{Out, PW, ok, run};
use lcw_schema::profile::Role;
use lcw_tests::TestNet;
use lcw_tests::llm::LlmServer;

const MODEL: &str = "gemma3-270m";

/// `lcw --data-dir DATA ...` with the password in LCW_PASSWORD.
fn lcw(data: &Path) -> Command {
    let mut cmd = crate::lcw_in(data);
    cmd.env("LCW_PASSWORD", PW);
    cmd
}

/// `lcw preflight` without any password.
fn preflight(data: &Path, llm_url: &str) -> Command {
    let mut cmd = crate::lcw_in(data);
    cmd.args(["preflight", "--llm-api", "openai", "--llm-url", llm_url]);
    cmd
}

/// A fresh key set for the devnet's `index`-th worker account.
fn keygen(net: &TestNet, data: &Path, index: usize) {
    let account = net.profile().accounts_with(Role::Worker).nth(index).expect("worker account");
    ok(lcw(data).args(["keygen", "--suite", "x25519", "--import-key", &account.private_key.to_string()]));
}

/// The report's line for check `name` (`STATUS  name  detail`).
fn line<'a>(out: &'a Out, name: &str) -> &'a str {
    out.stdout
        .lines()
        .find(|l| l.get(6..).is_some_and(|rest| rest.starts_with(&format!("{name} "))))
        .unwrap_or_else(|| panic!("no `{name}` line in:\n{}", out.stdout))
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_up_worker_passes_and_a_dead_llm_and_missing_model_fail_with_fixes() {
    let llm = LlmServer::start();
    let net = TestNet::start().await;
    let data = net.dir.path();
    keygen(&net, data, 0);
    ok(lcw(data).args(["register", "--models", MODEL]));

    // Fully set up: every check is ok, one line each.
    let out = run(&mut preflight(data, &llm.url));
    assert_eq!(out.code, Some(0), "stdout: {}\nstderr: {}", out.stdout, out.stderr);
    let (model, llm_model) = (format!("model {MODEL}"), format!("llm {MODEL}"));
    let names = ["rpc", "contracts", "registration", "stake", "gas money", "encryption key", &model];
    let rest = ["sortition", "claims", "llm server", &llm_model, "model set", "memory", "blobs", "gateway"];
    for name in names.into_iter().chain(rest) {
        assert!(line(&out, name).starts_with("ok  "), "{name}:\n{}", out.stdout);
    }
    assert!(line(&out, "sortition").contains("off: sessions are assigned by the dispatcher"), "{}", out.stdout);
    assert!(out.stdout.contains("all 15 checks ok"), "{}", out.stdout);
    assert!(!out.stdout.contains("FAIL") && !out.stdout.contains("WARN"), "{}", out.stdout);

    // The model removed and the LLM server gone: both fail, naming the URL and the fixes.
    ok(lcw(data).args(["remove-models", "--models", MODEL]));
    let dead = format!("http://127.0.0.1:{}", closed_port());
    let out = run(&mut preflight(data, &dead));
    assert_eq!(out.code, Some(1), "stdout: {}\nstderr: {}", out.stdout, out.stderr);
    assert!(line(&out, &format!("model {MODEL}")).starts_with("FAIL"), "{}", out.stdout);
    assert!(out.stdout.contains(&format!("fix: lcw add-models --models {MODEL}")), "{}", out.stdout);
    assert!(line(&out, "llm server").starts_with("FAIL") && line(&out, "llm server").contains(&dead), "{}", out.stdout);
    assert!(line(&out, &format!("llm {MODEL}")).contains("skipped"), "{}", out.stdout);
    assert!(line(&out, "registration").starts_with("ok"), "{}", out.stdout);
    assert!(out.stderr.contains("2 checks failed"), "{}", out.stderr);

    // The same as JSON: one object per check.
    let out = run(preflight(data, &dead).arg("--json"));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let checks: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("JSON");
    let failed: Vec<&str> = checks
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(failed, [format!("model {MODEL}").as_str(), "llm server"]);
    assert_eq!(checks[0]["name"], "rpc");
    assert_eq!(checks[0]["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_worker_is_told_to_register() {
    let net = TestNet::start().await;
    let data = net.dir.path();
    keygen(&net, data, 1);
    let out = run(&mut preflight(data, &format!("http://127.0.0.1:{}", closed_port())));
    assert_eq!(out.code, Some(1), "stdout: {}\nstderr: {}", out.stdout, out.stderr);
    let registration = line(&out, "registration");
    assert!(registration.starts_with("FAIL") && registration.contains("not registered"), "{}", out.stdout);
    assert!(out.stdout.contains(&format!("fix: lcw register --models {MODEL}")), "{}", out.stdout);
    assert!(line(&out, "stake").contains("skipped: the worker is not registered"), "{}", out.stdout);
    assert!(line(&out, "rpc").starts_with("ok"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_sortition_network_the_session_manager_the_claims_and_the_gateway_sign_in_are_checked() {
    let net = TestNet::start_with(|o| o.deploy.sortition = true).await;
    let data = net.dir.path();
    keygen(&net, data, 0);
    ok(lcw(data).args(["register", "--models", MODEL]));
    let worker = net.profile().accounts_with(Role::Worker).next().unwrap().address;
    let gateway = lcw_tests::gateway::TestGateway::start(worker).await;
    let dead = format!("http://127.0.0.1:{}", closed_port());

    let out = run(preflight(data, &dead).args(["--gateway-url", &gateway.url()]));
    let sortition = line(&out, "sortition");
    assert!(sortition.starts_with("ok") && sortition.contains("on: SessionManager 0x"), "{}", out.stdout);
    assert!(sortition.contains("claim window 5 blocks"), "{}", out.stdout);
    let claims = line(&out, "claims");
    assert!(claims.starts_with("ok") && claims.contains(&format!("eligible for {MODEL}")), "{}", out.stdout);
    assert!(claims.contains("0 active jobs of at most 64"), "{}", out.stdout);
    let signed = line(&out, "gateway");
    assert!(signed.starts_with("ok") && signed.contains("signs in"), "{}", out.stdout);
    assert!(gateway.sign_ins() >= 1 && gateway.violations().is_empty(), "{:?}", gateway.violations());

    // A gateway that does not know this worker refuses it, and says what to check.
    let stranger = lcw_tests::gateway::TestGateway::start(alloy::primitives::Address::repeat_byte(7)).await;
    let out = run(preflight(data, &dead).args(["--gateway-url", &stranger.url()]));
    let refused = line(&out, "gateway");
    assert!(refused.starts_with("FAIL") && refused.contains("refused the sign-in"), "{}", out.stdout);

    // An expected SessionManager other than AIConfig's is a failure with the fix.
    let other = "0x0000000000000000000000000000000000000001";
    let out = run(preflight(data, &dead).args(["--session-manager", other]));
    let mismatch = line(&out, "sortition");
    assert!(mismatch.starts_with("FAIL") && mismatch.contains("AIConfig names"), "{}", out.stdout);
    assert!(out.stdout.contains("fix: unset SESSION_MANAGER_ADDRESS"), "{}", out.stdout);
}
