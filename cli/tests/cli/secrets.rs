//! The real `lcw` with API keys in every URL it is given (RPC, beacon, gateway, LLM; in the
//! path, the query and the user info): whatever each command prints, on stdout (`--json`
//! included) or stderr at `LCW_LOG=trace`, holds no key, whether the servers cannot be reached or
//! answer with error pages that quote the request URL.

// The hostile node of the chain layer's tests, shared rather than copied.
#[path = "../../../chain/tests/hostile/mod.rs"]
mod hostile;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hostile::{Answer, HostileNode, SECRET};

const PW: &str = "correct horse battery staple";
const WORKER: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";

/// A network profile of chain 31337 whose every URL is at `host` and carries the key.
fn write_profile(dir: &Path, host: &str) -> std::path::PathBuf {
    let urls = hostile::secret_urls(host);
    let path = dir.join(format!("network-{}.json", host.replace(':', "-")));
    let text = serde_json::json!({
        "name": "leaky", "chain_id": 31337, "rpc_url": urls[0], "rpc_fallback_urls": [urls[1]],
        "beacon_url": urls[1], "gateway_url": urls[2], "start_block": 0,
        "contracts": { "worker_registry": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
                       "job_registry": "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512",
                       "ai_config": "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0" },
        "accounts": [] });
    std::fs::write(&path, text.to_string()).expect("write profile");
    path
}

/// `lcw --data-dir DATA ...` with the password in LCW_PASSWORD.
fn lcw(data: &Path) -> Command {
    let mut cmd = crate::lcw_in(data);
    cmd.env("LCW_PASSWORD", PW);
    cmd
}

/// Every command that talks to a node, a beacon node, a gateway or an LLM server, over `profile`
/// and with the variables of the official worker set to URLs with keys at `host`.
fn spawn_all(data: &Path, profile: &Path, host: &str) -> Vec<(String, Child)> {
    let urls = hostile::secret_urls(host);
    let network = profile.to_str().expect("utf-8 path");
    let commands: Vec<Vec<&str>> = vec![
        vec!["balance", "--worker", WORKER],
        vec!["status", "--worker", WORKER],
        vec!["exit-plan", "--worker", WORKER, "--json"],
        vec!["drain", "--json"],
        vec!["preflight", "--json"],
        vec!["keys", "list", "--network", network, "--json"],
        vec!["work", "--json", "--models", "gemma3-270m"],
        vec!["settle", "--keeper", "--json"],
        vec!["release", "--json"],
        vec!["index", "--until-head", "--progress", "off"],
        vec!["verify"],
        vec!["run", "--keeper", "--work", "--no-api", "--models", "gemma3-270m"],
    ];
    commands
        .into_iter()
        .enumerate()
        .map(|(i, args)| {
            let shown = args.join(" ");
            let mut cmd = lcw(data);
            cmd.args(&args)
                .env("LCW_NETWORK", network)
                .env("LCW_DB", data.join(format!("store-{i}.db")))
                .env("RPC_URL", &urls[0])
                .env("BEACON_API_URL", &urls[1])
                .env("WORKER_GATEWAY_URL", &urls[2])
                .env("LCW_LLM_URL", &urls[0])
                .env("LCW_LOG", "trace")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            (shown, cmd.spawn().expect("spawn lcw"))
        })
        .collect()
}

/// Waits for `child` until `deadline`, then stops it (SIGTERM, so that `--json` commands print
/// their summary, then SIGKILL), and returns all it printed.
fn finish(mut child: Child, deadline: Instant) -> String {
    while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(100));
    }
    if matches!(child.try_wait(), Ok(None)) {
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let grace = Instant::now() + Duration::from_secs(5);
        while Instant::now() < grace && matches!(child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("lcw output");
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn check_every_command(data: &Path, host: &str) {
    let profile = write_profile(data, host);
    let children = spawn_all(data, &profile, host);
    let deadline = Instant::now() + Duration::from_secs(8);
    for (shown, child) in children {
        let all = finish(child, deadline);
        assert!(!all.trim().is_empty(), "`lcw {shown}` printed something");
        if let Some(line) = all.lines().find(|l| l.contains(SECRET)) {
            panic!("`lcw {shown}` printed the key: {line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_command_prints_a_key_from_any_url() {
    let data = tempfile::tempdir().expect("tempdir");
    let out = lcw(data.path()).args(["keygen", "--json"]).output().expect("run lcw keygen");
    assert!(out.status.success(), "keygen: {}", String::from_utf8_lossy(&out.stderr));
    let node = HostileNode::start().await;
    node.answer(Answer::Unauthorized);
    let (data_dir, host) = (data.path().to_owned(), node.host.clone());
    tokio::task::spawn_blocking(move || check_every_command(&data_dir, &host)).await.expect("hostile node");
    assert!(node.served() > 0, "the commands reached the hostile node");
    let data_dir = data.path().to_owned();
    tokio::task::spawn_blocking(move || check_every_command(&data_dir, "127.0.0.1:1")).await.expect("unreachable");
}
