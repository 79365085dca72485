//! What the tests that drive `lcw` as an operator share: the keystore password, `lcw` with it,
//! running a command and reading what the user reads, counting rows of the store, and a worker
//! set up on the devnet (keys imported, registered, a consumer's session open to it) with
//! `lcw run --work` in the background.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use alloy::primitives::U256;
use lcw_schema::profile::{DevAccount, Role};
use lcw_schema::store::Store;
use lcw_tests::TestNet;
use lcw_tests::parties::{self, Session, Worker};

/// The keystore password of every test worker.
pub(crate) const PW: &str = "correct horse battery staple";

/// `lcw --data-dir DATA ...` with the password in LCW_PASSWORD, logging at `info` (the log is
/// shown when a test fails).
pub(crate) fn operator(data: &Path) -> Command {
    let mut cmd = crate::lcw_in(data);
    cmd.env("LCW_PASSWORD", PW).env("LCW_LOG", "info");
    cmd
}

/// What one command printed, and how it ended.
pub(crate) struct Out {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs `cmd` to its end; what it printed is shown with --nocapture (and on failure): what the
/// user reads.
pub(crate) fn run(cmd: &mut Command) -> Out {
    let out = cmd.output().expect("run lcw");
    eprintln!("$ {cmd:?}\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `cmd`, which must succeed; its stdout.
pub(crate) fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert_eq!(out.code, Some(0), "lcw failed: {cmd:?}\nstdout: {}\nstderr: {}", out.stdout, out.stderr);
    out.stdout
}

/// The single integer `sql` answers on the store `db` (0 while it cannot be read).
pub(crate) fn count(db: &Path, sql: &str) -> i64 {
    Store::open_readonly(db).ok().and_then(|s| s.conn().query_row(sql, [], |r| r.get(0)).ok()).unwrap_or(0)
}

/// The devnet's first worker account, its keys imported into `data` and registered for `model`.
pub(crate) fn registered_worker(net: &TestNet, data: &Path, model: &str) -> DevAccount {
    let account = net.profile().accounts_with(Role::Worker).next().expect("worker account").clone();
    ok(operator(data).args(["keygen", "--suite", "x25519", "--import-key", &account.private_key.to_string()]));
    ok(operator(data).args(["register", "--models", model]));
    account
}

/// A consumer's session with the worker whose keys are in `data`, 100 LCAI deposited.
pub(crate) async fn session_with(net: &TestNet, data: &Path, account: &DevAccount) -> Session {
    let secret = lcw_worker::keys::KeyDir::new(data).load_encryption(PW).expect("the encryption key");
    let worker = Worker { address: account.address, provider: net.provider(), secret };
    parties::open_session(net, 0, &worker, U256::from(10u64).pow(U256::from(20u64))).await
}

/// `lcw run --work` in the background for `model` on the LLM server at `llm_url`, no API,
/// answers of at most `num_predict` tokens, its log appended to `log`.
pub(crate) fn run_worker(data: &Path, llm_url: &str, model: &str, num_predict: u32, log: &Path) -> Child {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
    operator(data)
        .args(["run", "--work", "--no-api", "--llm-api", "openai", "--llm-url", llm_url, "--models", model])
        .args(["--num-predict", &num_predict.to_string()])
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("spawn lcw run")
}
