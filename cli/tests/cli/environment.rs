//! The environment of the `lcw` these tests run. A developer's shell may hold lcw's own settings
//! (`WORKER_KEYSTORE_PATH`, `LCW_NETWORK`, `RPC_URL`, ...): started as usual, lcw reads them;
//! started through the tests' helper ([`lcw_tests::binary`]), it does not, and a variable the test
//! sets on the command still does.

use std::ffi::OsString;
use std::process::{Command, Output};

use lcw_tests::binary::{self, KEPT};

const BIN: &str = env!("CARGO_BIN_EXE_lcw");

/// This process's environment with settings of lcw a developer may have exported on top.
fn developers_shell() -> Vec<(OsString, OsString)> {
    let exported = [
        ("WORKER_KEYSTORE_PATH", "/leaked/keystore.json"),
        ("LCW_NETWORK", "/leaked/network.json"),
        ("LCW_DATA_DIR", "/leaked/data"),
        ("RPC_URL", "http://127.0.0.1:9/leaked"),
        ("LCW_PASSWORD", "leaked password"),
        ("LCW_LLM_URL", "http://127.0.0.1:9/leaked"),
        ("LCW_LOG_FORMAT", "json"),
    ];
    std::env::vars_os().chain(exported.map(|(name, value)| (name.into(), value.into()))).collect()
}

/// `lcw` started as a shell starts it: with the whole of `env`.
fn as_usual(env: Vec<(OsString, OsString)>) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear().envs(env).env("LCW_LOG", binary::LOG);
    cmd
}

/// `lcw` started through the helper from a process whose environment is `env`.
fn through_the_helper(env: Vec<(OsString, OsString)>) -> Command {
    let mut cmd = binary::clean_from(BIN, env);
    cmd.env("LCW_LOG", binary::LOG);
    cmd
}

fn stdout_and_stderr(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn the_helper_passes_only_the_kept_variables_and_the_log_filter() {
    let cmd = crate::lcw();
    let mut set: Vec<String> = cmd.get_envs().map(|(name, _)| name.to_string_lossy().into_owned()).collect();
    set.sort();
    let mut expected: Vec<String> =
        KEPT.iter().filter(|name| std::env::var_os(name).is_some()).map(|name| (*name).to_owned()).collect();
    expected.push("LCW_LOG".to_owned());
    expected.sort();
    assert_eq!(set, expected);
}

/// Each leaked variable changes what a command does when lcw is started as usual, and nothing
/// when it is started through the helper.
#[test]
fn variables_of_a_developers_shell_never_reach_lcw() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A network whose node is refused at once (port 1 on loopback).
    let network = dir.path().join("network.json");
    let profile = serde_json::json!({
        "name": "closed", "chain_id": 31337, "rpc_url": "http://127.0.0.1:1/", "start_block": 0,
        "contracts": { "worker_registry": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
                       "job_registry": "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512",
                       "ai_config": "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0" },
        "accounts": [] });
    std::fs::write(&network, profile.to_string()).expect("write the profile");
    let network = network.to_str().expect("utf-8 path");
    let worker = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
    // As usual, each command's output names what the shell's variable points at.
    let commands: [(&str, &[&str]); 4] = [
        ("LCW_NETWORK", &["simulate", "--jobs", "1"]),
        ("LCW_DATA_DIR", &["keys", "list"]),
        ("WORKER_KEYSTORE_PATH", &["balance", "--network", network]),
        ("RPC_URL", &["balance", "--network", network, "--worker", worker]),
    ];
    let run = |mut cmd: Command, args: &[&str]| {
        let out = cmd.current_dir(dir.path()).args(args).output().expect("run lcw");
        stdout_and_stderr(&out)
    };
    for (var, args) in commands {
        let shown = format!("lcw {}", args.join(" "));
        let usual = run(as_usual(developers_shell()), args);
        assert!(usual.contains("/leaked"), "started as usual, `{shown}` reads {var}: {usual}");
        let helped = run(through_the_helper(developers_shell()), args);
        assert!(!helped.contains("leaked"), "through the helper, `{shown}` read the shell: {helped}");
    }
    // A variable the test sets on the command does reach it.
    let mine = dir.path().join("mine.json");
    let mut cmd = through_the_helper(developers_shell());
    cmd.env("LCW_NETWORK", &mine);
    let err = run(cmd, &["simulate", "--jobs", "1"]);
    assert!(err.contains(&mine.display().to_string()) && !err.contains("leaked"), "{err}");
}
