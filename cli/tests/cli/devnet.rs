//! The `lcw` binary as an operator uses it: `devnet`, `deploy`, `simulate`, and the errors a
//! mistake produces.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::lcw;

/// Starts `lcw devnet --port 0` and waits for its "devnet up" line; returns the child and the
/// lines it printed (profile path, addresses, roles).
fn start_devnet(data_dir: &std::path::Path, extra: &[&str]) -> (Child, Vec<String>) {
    let mut child = lcw()
        .arg("--data-dir")
        .arg(data_dir)
        .args(["devnet", "--port", "0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lcw devnet");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = Vec::new();
    let mut reader = BufReader::new(stdout);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).expect("read") == 0 || Instant::now() > deadline {
            let _ = child.kill();
            panic!("lcw devnet did not come up; printed: {lines:?}");
        }
        let done = line.starts_with("Ctrl-C");
        lines.push(line.trim_end().to_owned());
        if done {
            break;
        }
    }
    (child, lines)
}

fn anvil_pid(lines: &[String]) -> u32 {
    let first = &lines[0];
    let pid = first.split("anvil pid ").nth(1).and_then(|s| s.trim_end_matches(')').parse().ok());
    pid.unwrap_or_else(|| panic!("no anvil pid in {first:?}"))
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ")
}

#[test]
fn devnet_writes_profile_and_sigterm_leaves_nothing_running() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, lines) = start_devnet(dir.path(), &["--dispute-window", "7"]);
    let profile_path = dir.path().join("devnet.json");
    assert!(lines.iter().any(|l| l.contains(&profile_path.display().to_string())), "{lines:?}");
    let profile = lcw_schema::profile::Profile::load(&profile_path).expect("valid profile");
    assert_eq!(profile.chain_id, 31337);
    for role in ["deployer", "dispatcher", "disputer", "consumer", "worker", "keeper"] {
        assert!(lines.iter().any(|l| l.trim_start().starts_with(role)), "role {role} missing from {lines:?}");
    }
    let pid = anvil_pid(&lines);
    assert!(alive(pid));

    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "lcw devnet exits cleanly on SIGTERM: {status}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(pid), "anvil {pid} still running after lcw devnet stopped");
}

#[test]
fn devnet_refuses_a_taken_port_and_a_missing_anvil() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = lcw().arg("--data-dir").arg(dir.path()).args(["devnet", "--port", &port]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("port {port}")) && err.contains("already in use"), "{err}");

    let out = lcw()
        .arg("--data-dir")
        .arg(dir.path())
        .args(["devnet", "--port", "0"])
        .env("ANVIL_BIN", "/nonexistent/anvil")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ANVIL_BIN=/nonexistent/anvil") && err.contains("not an executable"), "{err}");
}

#[test]
fn simulate_explains_malformed_and_foreign_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{ \"name\": \"devnet\", \"chain_id\": 31337,\n  \"rpc_url\": 5 }").unwrap();
    let out = lcw().args(["simulate", "--jobs", "1", "--network"]).arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.json") && err.contains("malformed") && err.contains("line 2"), "{err}");

    let out = lcw().arg("--data-dir").arg(dir.path()).args(["simulate", "--jobs", "1"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no devnet profile") && err.contains("lcw devnet"), "{err}");

    // A profile for another chain, pointing at a running devnet.
    let (mut child, _) = start_devnet(dir.path(), &[]);
    let mut profile = lcw_schema::profile::Profile::load(&dir.path().join("devnet.json")).unwrap();
    profile.chain_id = 8200;
    let wrong = dir.path().join("wrong.json");
    profile.save(&wrong).unwrap();
    let out = lcw().args(["simulate", "--jobs", "1", "--network"]).arg(&wrong).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("chain 8200") && err.contains("answers chain 31337"), "{err}");
    let out = lcw()
        .args(["simulate", "--jobs", "1", "--timeout-share", "150", "--network"])
        .arg(dir.path().join("devnet.json"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--timeout-share must be a percentage"), "{err}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn anvil_does_not_outlive_a_killed_devnet() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, lines) = start_devnet(dir.path(), &[]);
    let pid = anvil_pid(&lines);
    assert!(alive(pid));
    child.kill().unwrap(); // SIGKILL: lcw gets no chance to clean up
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(pid), "anvil {pid} outlived its SIGKILLed owner");
}

#[test]
fn deploy_to_a_bare_node_writes_a_usable_profile() {
    let dir = tempfile::tempdir().unwrap();
    let mut anvil = lcw_contracts::anvil::AnvilProcess::spawn(&lcw_contracts::anvil::AnvilConfig {
        port: 0,
        block_time: None,
        accounts: 2,
        gas_limit: 30_000_000,
        chain_id: 4242,
        config_out: dir.path().join("accounts.json"),
        log_file: None,
        prune_history: None,
        genesis_timestamp: None,
    })
    .expect("anvil");
    let key = anvil.accounts[0].private_key.to_string();
    let out_path = dir.path().join("deployed.json");
    let out = lcw()
        .args(["deploy", "--rpc", &anvil.http_url(), "--out"])
        .arg(&out_path)
        .env("LCW_DEPLOYER_KEY", &key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let profile = lcw_schema::profile::Profile::load(&out_path).unwrap();
    assert_eq!(profile.chain_id, 4242);
    assert_ne!(profile.contracts.job_registry, profile.contracts.worker_registry);

    let out = lcw().args(["deploy", "--rpc", &anvil.http_url()]).env("LCW_DEPLOYER_KEY", "0x1234").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not a 32-byte hex private key"), "{err}");
    anvil.stop();
}
