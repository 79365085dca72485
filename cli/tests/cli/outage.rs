//! `lcw run --keeper` through node outages, with the real binary and a devnet behind a proxy
//! that can answer every request with HTTP 503: started while no endpoint answers, it waits
//! instead of exiting and indexes once the node is back; an outage longer than the indexer's
//! one-minute retry budget does not stop it either. An operator's process (and the worker's
//! obligations it carries) must outlive its node's bad minutes.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use alloy::providers::Provider;
use lcw_schema::store::{Store, obligations};
use lcw_tests::proxy::{Faults, FlakyProxy};
use lcw_tests::{TestNet, wait_until};

/// `lcw --data-dir DATA ...` logging at `info`: the log shows what it did while the node was down.
fn lcw(data: &Path) -> Command {
    let mut cmd = crate::lcw_in(data);
    cmd.env("LCW_LOG", "info");
    cmd
}

/// Every request answered HTTP 503.
fn down() -> Faults {
    Faults { server_error: 1.0, ..Faults::default() }
}

fn cursor(db: &Path) -> u64 {
    Store::open_readonly(db).ok().and_then(|s| obligations::cursor(s.conn()).ok()).unwrap_or(0)
}

async fn indexes_to_the_head(net: &TestNet, db: &Path, within: Duration) -> bool {
    let head = net.provider().get_block_number().await.expect("head");
    wait_until(within, || async { cursor(db) >= head }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lcw_run_waits_through_node_outages_instead_of_exiting() {
    let net = TestNet::start_with(|o| o.block_time = 1).await;
    let proxy = FlakyProxy::start(&net.profile().rpc_url, down()).await;
    let data = net.dir.path();
    let db = data.join("lcw.db");
    let log = data.join("lcw-run.log");
    let file = std::fs::File::create(&log).expect("log file");
    let mut run = lcw(data)
        .args(["run", "--keeper", "--no-api", "--rpc-url", &proxy.url])
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("spawn lcw run");
    let text = || std::fs::read_to_string(&log).unwrap_or_default();

    // Started during an outage: still there after several failed rounds.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(run.try_wait().expect("try_wait").is_none(), "lcw run exited while the node was down:\n{}", text());
    proxy.set_faults(Faults::default());
    assert!(
        indexes_to_the_head(&net, &db, Duration::from_secs(90)).await,
        "indexed once the node is back:\n{}",
        text()
    );

    // An outage past the indexer's one-minute budget.
    proxy.set_faults(down());
    tokio::time::sleep(Duration::from_secs(75)).await;
    assert!(run.try_wait().expect("try_wait").is_none(), "lcw run exited during a long outage:\n{}", text());
    proxy.set_faults(Faults::default());
    assert!(indexes_to_the_head(&net, &db, Duration::from_secs(90)).await, "indexing resumed:\n{}", text());

    let _ = Command::new("kill").args(["-INT", &run.id().to_string()]).status();
    let status = run.wait().expect("wait");
    assert!(status.success(), "stopped cleanly on SIGINT ({status}):\n{}", text());
}
