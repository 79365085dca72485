//! `lcw keygen`, `lcw keys`, `lcw register` and the other worker verbs with the real binary
//! against a devnet: both suites register, registering is idempotent, a rotated key is refused
//! until the staked one is recovered, a suspension is explained and lifted, and bad input is
//! explained before anything is sent.

use std::path::Path;
use std::process::Command;

use alloy::primitives::{Address, B256, U256, keccak256};
use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use alloy::sol_types::SolValue;
use lcw_schema::bindings::WorkerRegistry;
use lcw_schema::profile::Role;
use lcw_tests::TestNet;

const PW: &str = "correct horse battery staple";
const MODEL: &str = "gemma3-270m";

/// `lcw --data-dir DATA ...` with the password in LCW_PASSWORD.
fn lcw(data: &Path) -> Command {
    let mut cmd = crate::lcw_in(data);
    cmd.env("LCW_PASSWORD", PW);
    cmd
}

struct Out {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(cmd: &mut Command) -> Out {
    let out = cmd.output().expect("run lcw");
    Out {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs and requires success; returns stdout.
fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.ok, "lcw failed ({:?}): {cmd:?}\nstdout: {}\nstderr: {}", out.code, out.stdout, out.stderr);
    out.stdout
}

/// Runs and requires failure; returns stderr.
fn fails(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(!out.ok, "lcw should have failed: {cmd:?}\nstdout: {}", out.stdout);
    out.stderr
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn dev_key(net: &TestNet, index: usize) -> (Address, String) {
    let account = net.profile().accounts_with(Role::Worker).nth(index).expect("worker account");
    (account.address, account.private_key.to_string())
}

fn fingerprint(key_hex: &str) -> String {
    let bytes = alloy::hex::decode(key_hex).unwrap();
    alloy::hex::encode(&keccak256(bytes)[..4])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_register_rotate_and_recover_against_a_devnet() {
    let net = TestNet::start().await;
    let a = net.dir.path();
    let profile_file = a.join("devnet.json");
    let wr = WorkerRegistry::new(net.profile().contracts.worker_registry, net.provider());
    let (w0, key0) = dev_key(&net, 0);
    let (w1, key1) = dev_key(&net, 1);

    // keygen, both suites: x25519 for worker 0 here, p256 for worker 1 in a second data dir.
    let created = json(&ok(lcw(a).args(["keygen", "--suite", "x25519", "--json", "--import-key", &key0])));
    assert_eq!(created["address"].as_str().unwrap().parse::<Address>().unwrap(), w0);
    assert_eq!(created["suite"], "x25519");
    let x_key = created["public_key"].as_str().unwrap().to_owned();
    let b_dir = tempfile::tempdir().unwrap();
    let b = b_dir.path();
    let text = ok(lcw(b).args(["keygen", "--suite", "p256"]).env("LCW_IMPORT_KEY", &key1));
    assert!(text.contains(&w1.to_string()) && text.contains("p256-aesgcm"), "{text}");

    // Bad input is explained and nothing is sent.
    let e = fails(lcw(a).args(["register", "--models", MODEL, "--stake", "abc"]));
    assert!(e.contains("--stake") && e.contains("not a plain decimal"), "{e}");
    let e = fails(lcw(a).args(["register", "--models", &format!("{MODEL},no-such-model")]));
    assert!(e.contains("not whitelisted") && e.contains("no-such-model") && e.contains("nothing was sent"), "{e}");
    let e = fails(lcw(a).args(["register", "--models", MODEL]).env("LCW_PASSWORD", "hunter2"));
    assert!(e.contains("could not decrypt") && e.contains("wrong password"), "{e}");
    assert!(!e.contains("hunter2") && !e.contains(PW), "no password in errors: {e}");
    let e = fails(lcw(a).args(["register", "--models", MODEL, "--stake", "1"]));
    assert!(e.contains("below the network's minimum stake"), "{e}");
    let e = fails(lcw(a).args(["register", "--models", MODEL, "--stake", "1000000000"]));
    assert!(e.contains(&format!("{w0} holds")) && e.contains("fund it"), "{e}");
    assert!(!wr.isWorkerRegistered(w0).call().await.unwrap(), "nothing was registered");

    // Register both; the stake defaults to the minimum.
    let r = json(&ok(lcw(a).args(["register", "--json", "--models", MODEL])));
    assert_eq!(r["already_registered"], false);
    assert_eq!(r["models_added"][0], MODEL);
    let out = ok(lcw(b).args(["register", "--network"]).arg(&profile_file).args(["--models", MODEL]));
    assert!(out.contains("registered") && out.contains("p256-aesgcm"), "{out}");
    assert_eq!(wr.getWorkerEncryptionKey(w0).call().await.unwrap().to_string(), x_key);
    assert_eq!(wr.getWorkerEncryptionKey(w1).call().await.unwrap().len(), 65);
    let model = lcw_schema::types::ModelId::from_name(MODEL).0;
    assert!(wr.workerSupportsModel(w1, model).call().await.unwrap());

    // Status: registered, at the minimum, the key matches.
    let s = json(&ok(lcw(a).args(["status", "--json"])));
    assert_eq!(s["registered"], true);
    assert_eq!(s["encryption_key"]["matches"], true);
    assert_eq!(s["stake_wei"], s["min_stake_wei"]);
    assert_eq!(s["models"][0]["id"], model.to_string());
    let text = ok(lcw(a).args(["status", "--models", MODEL]));
    assert!(text.contains("matches the local key") && text.contains(MODEL), "{text}");

    // Idempotent: registering again sends nothing and says so.
    let again = json(&ok(lcw(a).args(["register", "--json", "--models", MODEL])));
    assert_eq!(again["already_registered"], true);
    assert_eq!(again["models_present"][0], MODEL);
    assert!(again["register_tx"].is_null());

    // Models and stake.
    let removed = json(&ok(lcw(a).args(["remove-models", "--json", "--models", MODEL])));
    assert_eq!(removed["removed"][0], MODEL);
    assert!(!wr.workerSupportsModel(w0, model).call().await.unwrap());
    let added = json(&ok(lcw(a).args(["add-models", "--json", "--models", MODEL])));
    assert_eq!(added["added"][0], MODEL);
    let before = wr.getWorkerStake(w0).call().await.unwrap();
    ok(lcw(a).args(["top-up-stake", "--amount", "1.5"]));
    let after = wr.getWorkerStake(w0).call().await.unwrap();
    assert_eq!(after - before, U256::from(1_500_000_000_000_000_000u128));
    let e = fails(lcw(a).args(["top-up-stake", "--amount", "1e3"]));
    assert!(e.contains("not a plain decimal"), "{e}");

    // A second keygen refuses to overwrite.
    let e = fails(lcw(a).args(["keygen", "--import-key", &key0]));
    assert!(e.contains("already exist") && e.contains("lcw keys archive"), "{e}");

    // Rotate: archive, new key for the same address; registering it is refused.
    let archived = json(&ok(lcw(a).args(["keys", "archive", "--json", "--reason", "rotation test"])));
    let archived_name = archived["name"].as_str().unwrap().to_owned();
    let new = json(&ok(lcw(a).args(["keygen", "--json", "--suite", "p256", "--import-key", &key0])));
    let new_key = new["public_key"].as_str().unwrap().to_owned();
    let e = fails(lcw(a).args(["register", "--models", MODEL]));
    assert!(e.contains(&fingerprint(&x_key)) && e.contains(&fingerprint(&new_key)), "both fingerprints: {e}");
    assert!(e.contains("lcw keys recover") && e.contains("nothing was sent"), "{e}");
    let s = json(&ok(lcw(a).args(["status", "--json"])));
    assert_eq!(s["encryption_key"]["matches"], false);

    // The list flags the archived key: it still holds the stake.
    let list = ok(lcw(a).args(["keys", "list", "--network", "devnet"]));
    assert!(list.contains("still staked") && list.contains(&format!("lcw keys recover {archived_name}")), "{list}");
    let list = json(&ok(lcw(a).args(["keys", "list", "--json", "--network", "devnet"])));
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0]["active"].clone(), rows[0]["still_staked"].clone()), (true.into(), false.into()));
    assert_eq!((rows[1]["active"].clone(), rows[1]["still_staked"].clone()), (false.into(), true.into()));
    assert_eq!(rows[1]["reason"], "rotation test");
    let offline = ok(lcw(a).args(["keys", "list"]));
    assert!(!offline.contains("on chain"), "no chain reads without --network: {offline}");

    // Recover: the staked key is active again (the newer one is archived, not lost).
    ok(lcw(a).args(["keys", "recover", &archived_name]));
    let s = json(&ok(lcw(a).args(["status", "--json"])));
    assert_eq!(s["encryption_key"]["matches"], true);
    assert_eq!(s["encryption_key"]["local"], x_key.as_str());
    let list = json(&ok(lcw(a).args(["keys", "list", "--json", "--network", "devnet"])));
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["public_key"], new_key.as_str());
    assert_eq!(rows[1]["still_staked"], false);
    ok(lcw(a).args(["register", "--models", MODEL]));

    // Reinstate: not suspended is fine; a running suspension says when it ends; then it lifts.
    let out = ok(lcw(a).arg("reinstate"));
    assert!(out.contains("not suspended"), "{out}");
    let until = net.now().await + 3_600;
    suspend(&net, w0, until).await;
    let out = run(lcw(a).arg("reinstate"));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("UTC") && out.stderr.contains("in 60 min"), "{}", out.stderr);
    net.advance(3_601).await;
    let out = ok(lcw(a).arg("reinstate"));
    assert!(out.contains("reinstated"), "{out}");
    assert_eq!(wr.getSuspendedUntil(w0).call().await.unwrap(), U256::ZERO);
}

/// Sets the worker's `suspendedUntil` in WorkerRegistry storage (the devnet offers no cheaper way
/// to suspend than three slashes). The struct's first slot packs `registered` (byte 0),
/// `offenseCount` (bytes 1-4) and `suspendedUntil` (bytes 5-12); the mapping's slot is found by
/// looking for that word next to the worker's stake.
async fn suspend(net: &TestNet, worker: Address, until: u64) {
    let p = net.provider();
    let registry = net.profile().contracts.worker_registry;
    let stake = WorkerRegistry::new(registry, &p).getWorkerStake(worker).call().await.unwrap();
    for mapping_slot in 0u64..32 {
        let base = U256::from_be_bytes(keccak256((worker, U256::from(mapping_slot)).abi_encode()).0);
        let first = p.get_storage_at(registry, base).await.unwrap();
        let second = p.get_storage_at(registry, base + U256::from(1)).await.unwrap();
        if first == U256::from(1) && second == stake {
            let word = U256::from(1) | (U256::from(until) << 40);
            assert!(p.anvil_set_storage_at(registry, base, B256::from(word)).await.unwrap());
            p.anvil_mine(Some(1), None).await.unwrap();
            return;
        }
    }
    panic!("WorkerRegistry's workers mapping not found");
}

/// The key files `lcw keygen`, `keys archive` and `keys recover` leave are 0600 in 0700
/// directories (a `keys/` made 0755 beforehand included), and `keys recover` takes only a set
/// in the archive: a symbolic link, or a directory outside the archive, is refused with a reason
/// and nothing moves.
#[cfg(unix)]
#[test]
fn key_files_are_private_and_recover_takes_only_archived_sets() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let keys = data.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o755)).unwrap();
    let first = json(&ok(lcw(&data).args(["keygen", "--suite", "x25519", "--json"])));
    assert_eq!(mode(&keys), 0o700, "a wide keys/ is tightened");
    for file in ["signing.json", "encryption.json"] {
        assert_eq!(mode(&keys.join(file)), 0o600, "{file}");
    }
    let archived = json(&ok(lcw(&data).args(["keys", "archive", "--json"])));
    let name = archived["name"].as_str().unwrap().to_owned();
    let set = keys.join("archive").join(&name);
    assert_eq!((mode(&keys.join("archive")), mode(&set)), (0o700, 0o700));
    assert_eq!(mode(&set.join("archive.json")), 0o600);
    let second = json(&ok(lcw(&data).args(["keygen", "--json"])));
    // A directory outside the archive holding a copy of the set.
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    for file in ["signing.json", "encryption.json"] {
        std::fs::copy(set.join(file), outside.join(file)).unwrap();
    }
    let e = fails(lcw(&data).args(["keys", "recover"]).arg(&outside));
    assert!(e.contains("is not an archived key set") && e.contains("lcw keys list"), "{e}");
    // A link in the archive to that directory, by name and by path.
    symlink(&outside, keys.join("archive").join("planted")).unwrap();
    for given in [Path::new("planted").to_owned(), keys.join("archive").join("planted")] {
        let e = fails(lcw(&data).args(["keys", "recover"]).arg(&given));
        assert!(e.contains("symbolic link") && e.contains("nothing was moved"), "{e}");
    }
    // An archived set whose signing key is a link to a file elsewhere.
    let linked = keys.join("archive").join("linked");
    std::fs::create_dir_all(&linked).unwrap();
    std::fs::copy(set.join("encryption.json"), linked.join("encryption.json")).unwrap();
    symlink(outside.join("signing.json"), linked.join("signing.json")).unwrap();
    let e = fails(lcw(&data).args(["keys", "recover", "linked"]));
    assert!(e.contains("signing.json") && e.contains("symbolic link"), "{e}");
    // Nothing moved: the second set is still the active one.
    let list = json(&ok(lcw(&data).args(["keys", "list", "--json"])));
    assert_eq!(list[0]["address"], second["address"], "{list}");
    // The archived set by its name recovers, its files private.
    ok(lcw(&data).args(["keys", "recover", &name]));
    let list = json(&ok(lcw(&data).args(["keys", "list", "--json"])));
    assert_eq!(list[0]["address"], first["address"], "{list}");
    for file in ["signing.json", "encryption.json"] {
        assert_eq!(mode(&keys.join(file)), 0o600, "{file}");
    }
}
