//! `lcw speedtest` with the real binary, a real devnet and the real LLM server: the table and a
//! fitting verdict on a default devnet, a completion timeout shorter than the worst case fails
//! naming the model, a model the server lacks fails naming it and the server, and an unreachable
//! chain still shows the local figures before failing.

use std::path::Path;
use std::process::Command;

use lcw_tests::TestNet;
use lcw_tests::llm::{LlmServer, MODEL};

/// `lcw --data-dir DATA speedtest --llm-api openai --llm-url URL --num-predict 16`.
fn speedtest(data: &Path, llm: &LlmServer) -> Command {
    let mut cmd = crate::lcw_in(data);
    cmd.args(["speedtest", "--llm-api", "openai", "--llm-url", &llm.url, "--num-predict", "16"]);
    cmd
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn run(cmd: &mut Command) -> Out {
    let out = cmd.output().expect("run lcw");
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The table row of prompt `n`: (kind, prompt tokens, completion tokens).
fn row(stdout: &str, n: usize) -> (String, u64, u64) {
    let line = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&n.to_string()))
        .unwrap_or_else(|| panic!("no row {n}:\n{stdout}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    (cols[1].to_owned(), cols[2].parse().expect("prompt tokens"), cols[3].parse().expect("completion tokens"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fits_a_default_devnet_and_names_a_model_the_server_lacks() {
    let net = TestNet::start_with(|o| o.block_time = 1).await;
    let llm = LlmServer::start();
    let data = net.dir.path();

    let out = run(speedtest(data, &llm).args(["--prompts", "2"]));
    assert!(out.ok, "speedtest failed:\nstdout: {}\nstderr: {}", out.stdout, out.stderr);
    let s = &out.stdout;
    assert!(s.contains("ack timeout 30 s, completion timeout 60 s"), "{s}");
    assert!(s.contains(&format!("{MODEL}: cold start")), "{s}");
    for (n, kind) in [(1, "question"), (2, "list")] {
        let (k, prompt_tokens, completion_tokens) = row(s, n);
        assert_eq!(k, kind, "{s}");
        assert!(prompt_tokens > 5 && (1..=16).contains(&completion_tokens), "{s}");
    }
    assert!(row_count(s) == 2, "one row per prompt: {s}");
    assert!(s.contains("blob fetch is network and not measured"), "{s}");
    assert!(s.contains("of the 60 s completion timeout") && s.contains("verdict: fits"), "{s}");

    // A model the server does not have: named, with the server, before anything is measured.
    let out = run(speedtest(data, &llm).args(["--models", "no-such-model"]));
    assert!(!out.ok, "a missing model must fail:\n{}", out.stdout);
    assert!(out.stderr.contains("no-such-model") && out.stderr.contains(&llm.url), "{}", out.stderr);
    assert!(out.stderr.contains(&format!("it has: {MODEL}")), "{}", out.stderr);
    assert!(out.stdout.contains("no-such-model: not measured"), "{}", out.stdout);
}

fn row_count(stdout: &str) -> usize {
    stdout.lines().filter(|l| l.split_whitespace().next().is_some_and(|w| w.parse::<usize>().is_ok())).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_timeout_below_the_worst_case_fails_naming_the_model() {
    let net = TestNet::start_with(|o| {
        o.block_time = 1;
        o.deploy.completion_timeout = 1;
    })
    .await;
    let llm = LlmServer::start();
    let data = net.dir.path();

    // The local encryption key's suite wins over --suite.
    let keygen = crate::lcw_in(data)
        .env("LCW_PASSWORD", "speedtest password")
        .args(["keygen", "--suite", "x25519"])
        .output()
        .expect("run lcw keygen");
    assert!(keygen.status.success(), "keygen: {}", String::from_utf8_lossy(&keygen.stderr));

    let out = run(speedtest(data, &llm).args(["--prompts", "1", "--suite", "p256", "--json"]));
    assert!(!out.ok, "a 1 s completion timeout cannot fit:\n{}", out.stdout);
    let e = &out.stderr;
    assert!(e.contains(&format!("model {MODEL}: the worst-case job takes")), "{e}");
    assert!(e.contains("completion timeout of 1 s") && e.contains("lower --num-predict (now 16)"), "{e}");
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("one JSON object");
    assert_eq!((v["suite"].as_str(), v["suite_from"].as_str()), (Some("x25519"), Some("the local encryption key")));
    assert_eq!(v["chain"]["completion_timeout_s"], 1);
    assert_eq!(v["fits"], false);
    let m = &v["models"][0];
    assert_eq!(m["model"], MODEL);
    assert_eq!(m["fits"], false);
    assert_eq!(m["prompts"].as_array().map(Vec::len), Some(1));
    assert!(m["worst_case_s"].as_f64().unwrap() > 1.0 && m["completion_headroom_s"].as_f64().unwrap() < 0.0, "{v}");

    // The chain cannot be reached: the local figures are still shown, then it fails saying so.
    let out = run(speedtest(data, &llm).args(["--prompts", "1", "--rpc-url", "http://127.0.0.1:9"]));
    assert!(!out.ok, "an unreachable chain must fail:\n{}", out.stdout);
    assert_eq!(row(&out.stdout, 1).0, "question", "{}", out.stdout);
    let e = &out.stderr;
    assert!(e.contains("the local figures above were measured") && e.contains("--rpc-url"), "{e}");
}
