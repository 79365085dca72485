//! Crash safety of `lcw index`: SIGKILL at random moments during backfill and during live
//! indexing loses nothing and duplicates nothing; every restart resumes from the cursor, and the
//! final store equals a fresh index of the same chain. Also bad input before anything starts: a
//! missing network profile, and an RPC URL whose API key must not reach the output.

use std::process::{Child, Stdio};
use std::time::Duration;

use alloy::providers::ext::AnvilApi;
use lcw_contracts::simulate::{self, SimulateOptions, plan::Shares};
use lcw_tests::TestNet;
use lcw_tests::indexing;
use rand::{Rng, SeedableRng};

use crate::{lcw, lcw_in};

fn index(profile: &std::path::Path, db: &std::path::Path, until_head: bool) -> Child {
    let mut cmd = lcw();
    cmd.args(["index", "--progress", "off", "--target-logs", "150", "--range", "2", "--poll-ms", "100", "--network"])
        .arg(profile)
        .arg("--db")
        .arg(db)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if until_head {
        cmd.arg("--until-head");
    }
    cmd.spawn().expect("spawn lcw index")
}

fn quiet(_: simulate::Progress<'_>) {}

fn kill9(child: &mut Child) {
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_loses_and_duplicates_nothing() {
    let seed: u64 = rand::random();
    eprintln!("kill schedule seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let net = TestNet::start_with(|o| {
        o.block_time = 1;
        o.deploy.ack_timeout = 3;
        o.deploy.completion_timeout = 3;
        o.deploy.dispute_window = 3;
        o.deploy.resolution_timeout = 3;
    })
    .await;
    let profile = net.devnet.profile_path.clone();
    let db = net.dir.path().join("crash.db");
    let options = |jobs, seed| SimulateOptions {
        jobs,
        workers: 3,
        auto_complete: true,
        auto_release: true,
        shares: Shares { timeout: 10.0, dispute: 20.0, settle: 5.0 },
        seed,
        ..SimulateOptions::default()
    };
    simulate::run(net.profile(), &options(600, 1), |_| {}).await.expect("simulation");
    net.provider().anvil_mine(Some(70), None).await.unwrap();
    let head = {
        use alloy::providers::Provider;
        net.provider().get_block_number().await.unwrap()
    };

    // Backfill, killed repeatedly. Each kill waits for the cursor to pass a random block in the
    // first half of what is left (plus a random few milliseconds), so it lands mid-backfill however
    // fast the machine is; a fixed sleep could outlast the whole backfill on a quick runner.
    let mut cursors = Vec::new();
    for _ in 0..5 {
        let start = indexing::cursor(&db).map_or(0, |c| c.0);
        if start >= head {
            break;
        }
        let target = rng.gen_range(start + 1..=start + (head - start).div_ceil(2));
        let extra = Duration::from_micros(rng.gen_range(0..3_000));
        let mut child = index(&profile, &db, true);
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            if child.try_wait().expect("poll lcw index").is_some() {
                break;
            }
            if indexing::cursor(&db).is_some_and(|c| c.0 >= target) {
                tokio::time::sleep(extra).await;
                break;
            }
            assert!(std::time::Instant::now() < deadline, "lcw index never reached block {target}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        kill9(&mut child);
        if let Some(c) = indexing::cursor(&db) {
            cursors.push(c.0);
        }
    }
    eprintln!("backfill kills left the cursor at {cursors:?} (head {head})");
    assert!(cursors.windows(2).all(|w| w[0] <= w[1]), "the cursor never moves back: {cursors:?}");
    assert!(cursors.iter().any(|c| *c < head), "at least one kill landed mid-backfill: {cursors:?} (head {head})");

    // Live indexing during more traffic, killed repeatedly.
    let traffic = {
        let profile = net.profile().clone();
        let opts = options(300, 2);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(simulate::run(&profile, &opts, quiet))
        })
    };
    while !traffic.is_finished() {
        let mut child = index(&profile, &db, false);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(300..1500))).await;
        kill9(&mut child);
    }
    traffic.join().unwrap().expect("second simulation");

    // A clean final run, then the store must equal a fresh index of the same chain.
    let status = index(&profile, &db, true).wait().unwrap();
    assert!(status.success());
    let fresh = net.dir.path().join("fresh.db");
    indexing::until_head(net.profile(), &fresh).await;
    let (a, b) = (indexing::cursor(&db).unwrap().0, indexing::cursor(&fresh).unwrap().0);
    if a < b {
        // The fresh index saw a few more (empty) blocks: bring the first store to the same head.
        assert!(index(&profile, &db, true).wait().unwrap().success());
    }
    assert_eq!(indexing::differences(&db, &fresh), vec![], "seed {seed}");
    let replayed = lcw_indexer::replay::replay(&db, false).unwrap();
    assert!(replayed.equal(), "seed {seed}: {:?}", replayed.differences);
}

/// Bad input before anything starts: a network profile that is not there is named, with the
/// reason given once, and the command fails without creating a store.
#[test]
fn a_missing_network_profile_is_named_and_its_reason_given_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-profile.json");
    let db = dir.path().join("lcw.db");
    let out = lcw()
        .args(["index", "--until-head", "--progress", "off", "--network"])
        .arg(&missing)
        .arg("--db")
        .arg(&db)
        .output()
        .expect("run lcw index");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a missing profile must fail: {stderr}");
    assert!(stderr.contains(&missing.display().to_string()), "the profile's path is named: {stderr}");
    assert_eq!(stderr.matches("No such file or directory").count(), 1, "the reason is given once: {stderr}");
    assert!(!db.exists(), "no store is created for a network that could not be read");
}

/// An API key in the RPC URL (here in the query, as some providers take it) never reaches the
/// output when the node cannot be reached: the operator verbs say which node failed, redacted.
#[test]
fn an_api_key_in_the_rpc_url_never_reaches_the_output() {
    const KEY: &str = "K3yOfTheOperator";
    let dir = tempfile::tempdir().expect("tempdir");
    let profile = dir.path().join("network.json");
    // Port 1 on loopback: refused at once, and reqwest quotes the whole URL in its error.
    let text = format!(
        r#"{{ "name": "leaky", "chain_id": 31337, "rpc_url": "http://127.0.0.1:1/rpc?apikey={KEY}", "start_block": 0,
             "contracts": {{ "worker_registry": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
                            "job_registry": "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512",
                            "ai_config": "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0" }},
             "accounts": [] }}"#
    );
    std::fs::write(&profile, text).expect("write profile");
    for verb in ["balance", "status", "exit-plan"] {
        let out = lcw_in(dir.path())
            .args([verb, "--worker", "0x70997970C51812dc3A010C7d01b50e0d17dc79C8", "--network"])
            .arg(&profile)
            .env("LCW_LOG", "debug")
            .output()
            .expect("run lcw");
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "`lcw {verb}` without a node must fail: {all}");
        assert!(!all.contains(KEY), "`lcw {verb}` printed the API key: {all}");
        assert!(all.contains("http://127.0.0.1:1/…"), "`lcw {verb}` names the node, redacted: {all}");
    }
}
