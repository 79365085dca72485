//! The network checks of the real binary: a `--rpc-url` of another chain fails every command
//! that reads the chain, with a message naming the node (redacted) and both chain ids; a store of
//! another network is refused by the operator verbs, even while another indexer holds it.

use std::process::Command;
use std::time::Duration;

use lcw_contracts::anvil::{AnvilConfig, AnvilProcess};
use lcw_schema::profile::Role;
use lcw_tests::TestNet;
use lcw_tests::indexing::{self, Follower};

use crate::lcw_in;

/// A marker API key: it must never be printed.
const KEY: &str = "K3yOfTheOperator";

/// Runs a command that must fail; returns stdout and stderr together.
fn fails(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run lcw");
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{cmd:?} must fail: {all}");
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rpc_url_of_another_chain_fails_with_a_clear_message() {
    let net = TestNet::start().await;
    let other = AnvilProcess::spawn(&AnvilConfig {
        port: 0,
        block_time: None,
        accounts: 1,
        gas_limit: 30_000_000,
        chain_id: 8200,
        config_out: net.dir.path().join("anvil-8200.json"),
        log_file: None,
        prune_history: None,
        genesis_timestamp: None,
    })
    .expect("anvil starts");
    let url = format!("{}/?apikey={KEY}", other.http_url());
    let shown = format!("http://127.0.0.1:{}/…", other.port());
    let worker = net.signer(Role::Worker, 0).address().to_string();
    for verb in ["exit-plan", "balance", "status"] {
        let started = std::time::Instant::now();
        let all = fails(lcw_in(net.dir.path()).args([verb, "--worker", &worker, "--rpc-url", &url]));
        assert!(started.elapsed() < Duration::from_secs(20), "`lcw {verb}` fails at once");
        assert!(all.contains("no RPC endpoint serves chain 31337"), "`lcw {verb}`: {all}");
        assert!(all.contains(&format!("{shown} answers chain 8200")), "`lcw {verb}` names the node: {all}");
        assert!(!all.contains(KEY), "`lcw {verb}` printed the API key: {all}");
    }
    // Preflight reports it as its failed RPC check.
    let all = fails(lcw_in(net.dir.path()).args(["preflight", "--worker", &worker, "--rpc-url", &url]));
    assert!(all.contains("no RPC endpoint serves chain 31337") && !all.contains(KEY), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_another_network_is_refused_even_while_another_indexer_holds_it() {
    let devnet = TestNet::start().await;
    let other = TestNet::start_with(|o| o.chain_id = 31_338).await;
    let db = devnet.dir.path().join("lcw.db");
    indexing::until_head(devnet.profile(), &db).await;
    let follower = Follower::start(devnet.profile(), &db);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let worker = other.signer(Role::Worker, 0).address().to_string();
    let db_arg = db.display().to_string();
    for verb in ["exit-plan", "balance", "drain"] {
        let all = fails(lcw_in(other.dir.path()).args([verb, "--worker", &worker, "--db", &db_arg]));
        assert!(all.contains(&format!("store {db_arg} belongs to chain 31337")), "`lcw {verb}`: {all}");
        assert!(all.contains("not to chain 31338"), "`lcw {verb}` names this network: {all}");
        assert!(all.contains("--data-dir or --db"), "`lcw {verb}` says what to do: {all}");
    }
    // The store was left as it was: its own network still uses it.
    let network = lcw_schema::store::Identity::of(devnet.profile());
    assert!(lcw_schema::store::Store::open_readonly_as(&db, &network).is_ok());
    follower.finish().await;
}
