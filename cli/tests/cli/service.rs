//! `lcw service` and `lcw run` under systemd: the unit `lcw service install` writes passes
//! `systemd-analyze verify`, carries no secret and no environment; the keystore password comes
//! from a systemd credential; and a real `lcw run` speaks the notification protocol to a test
//! server exactly (READY=1 once at the head, STATUS= lines, WATCHDOG=1 at half WATCHDOG_USEC,
//! STOPPING=1 at SIGTERM), with the keep-alives stopping while its node stops answering (an RPC
//! proxy that hangs every request, so the indexer stalls while anvil's head moves on) and
//! coming back with the node.

use std::os::linux::net::SocketAddrExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lcw_tests::TestNet;
use lcw_tests::proxy::{Faults, FlakyProxy};

const PW: &str = "service password 4417";

fn output(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("run lcw");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_installed_unit_verifies_clean_and_names_only_the_password_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let password = dir.path().join("password");
    std::fs::write(&password, format!("{PW}\n")).expect("password file");
    let unit = dir.path().join("lcw-test.service");
    let (ok, stdout, stderr) = output(
        crate::lcw_in(&data)
            .args(["service", "install", "--path"])
            .arg(&unit)
            .arg("--password-file")
            .arg(&password)
            .args(["--", "--work", "--network", "devnet", "--listen", "127.0.0.1:8181"]),
    );
    assert!(ok, "install failed:\n{stdout}\n{stderr}");
    let text = std::fs::read_to_string(&unit).expect("unit written");
    assert!(text.contains(&format!("LoadCredential=lcw-password:{}\n", password.display())), "{text}");
    assert!(!text.contains(PW) && !stdout.contains(PW) && !stderr.contains(PW), "the password itself leaked");
    assert!(!text.contains("Environment"), "nothing goes through the environment:\n{text}");
    assert!(text.contains(&format!("ReadWritePaths={}\n", data.display())), "{text}");
    assert!(data.is_dir(), "the data dir exists for ReadWritePaths=");

    let analyze = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze (Debian's systemd package) must be installed for this test");
    let complaints = String::from_utf8_lossy(&analyze.stderr);
    assert!(analyze.status.success() && complaints.trim().is_empty(), "systemd-analyze verify:\n{complaints}\n{text}");

    // --print writes nothing and shows the same unit.
    let elsewhere = dir.path().join("other.service");
    let (ok, printed, _) = output(
        crate::lcw_in(&data)
            .args(["service", "install", "--print", "--path"])
            .arg(&elsewhere)
            .arg("--password-file")
            .arg(&password)
            .args(["--", "--work", "--network", "devnet", "--listen", "127.0.0.1:8181"]),
    );
    assert!(ok && printed == text && !elsewhere.exists(), "--print:\n{printed}");
}

#[test]
fn install_refuses_credentials_and_foreign_flags_in_the_unit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let unit = dir.path().join("x.service");
    let (ok, _, stderr) = output(crate::lcw_in(dir.path()).args(["service", "install", "--path"]).arg(&unit).args([
        "--",
        "--keeper",
        "--rpc-url",
        "https://rpc.example/v2/k3yk3yk3yk3yk3yk3yk3yk3y",
    ]));
    assert!(!ok && stderr.contains("credential") && !stderr.contains("k3yk3y"), "{stderr}");
    let (ok, _, stderr) = output(
        crate::lcw_in(dir.path()).args(["service", "install", "--path"]).arg(&unit).args(["--", "--no-such-flag"]),
    );
    assert!(!ok && stderr.contains("not lcw run's"), "{stderr}");
    assert!(!unit.exists());
}

#[test]
fn the_keystore_password_comes_from_the_systemd_credential() {
    let dir = tempfile::tempdir().expect("temp dir");
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).expect("credentials dir");
    std::fs::write(creds.join("lcw-password"), format!("{PW}\n")).expect("credential");
    let data = dir.path().join("data");
    let (ok, stdout, stderr) =
        output(crate::lcw_in(&data).args(["keygen", "--json"]).env("CREDENTIALS_DIRECTORY", &creds));
    assert!(ok, "keygen with the credential:\n{stdout}\n{stderr}");
    let created: serde_json::Value = serde_json::from_str(stdout.trim()).expect("json");
    let keystore = created["signing_path"].as_str().expect("signing_path");
    let signer =
        lcw_chain::keys::load_keystore(Path::new(keystore), PW).expect("sealed with the credential's password");
    assert_eq!(format!("{:?}", signer.address()).to_lowercase(), created["address"].as_str().unwrap().to_lowercase());

    // Without LCW_PASSWORD nor a credential, the error says where a password may come from.
    let (ok, _, stderr) = output(crate::lcw_in(&dir.path().join("other")).args(["keygen"]));
    assert!(!ok && stderr.contains("LoadCredential=lcw-password"), "{stderr}");
}

/// The notification server: every datagram with its arrival time.
type Messages = Arc<Mutex<Vec<(Instant, String)>>>;

fn notify_server(name: &str) -> Messages {
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract name");
    let socket = std::os::unix::net::UnixDatagram::bind_addr(&addr).expect("bind the notify socket");
    let messages: Messages = Arc::default();
    let kept = messages.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            kept.lock().expect("messages").push((Instant::now(), text));
        }
    });
    messages
}

fn seen(messages: &Messages) -> Vec<(Instant, String)> {
    messages.lock().expect("messages").clone()
}

fn keep_alives_between(messages: &Messages, from: Instant, to: Instant) -> Vec<Instant> {
    seen(messages).into_iter().filter(|(t, m)| m == "WATCHDOG=1" && *t >= from && *t < to).map(|(t, _)| t).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lcw_run_notifies_systemd_and_its_keep_alives_stop_while_the_indexer_stalls() {
    const WATCHDOG: Duration = Duration::from_secs(2);
    let net = TestNet::start_with(|o| o.block_time = 1).await;
    let proxy = FlakyProxy::start(&net.profile().rpc_url, Faults::default()).await;
    let name = format!("lcw-notify-test-{}", std::process::id());
    let messages = notify_server(&name);
    let data = net.dir.path();
    let log = data.join("lcw-run.log");
    let mut run = crate::lcw_in(data)
        .args(["run", "--keeper", "--no-api", "--rpc-url", &proxy.url])
        .env("LCW_LOG", "info")
        .env("NOTIFY_SOCKET", format!("@{name}"))
        .env("WATCHDOG_USEC", WATCHDOG.as_micros().to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn lcw run");
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    let dump = || format!("{:#?}\n{}", seen(&messages).into_iter().map(|(_, m)| m).collect::<Vec<_>>(), text());

    let ready = lcw_tests::wait_until(Duration::from_secs(90), || async {
        seen(&messages).iter().any(|(_, m)| m == "READY=1")
    })
    .await;
    assert!(ready, "READY=1 once at the head:\n{}", dump());

    // Healthy: a keep-alive every WATCHDOG / 2.
    let from = Instant::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let beats = keep_alives_between(&messages, from, Instant::now());
    assert!((4..=7).contains(&beats.len()), "{} keep-alives in 6 s at 1 s intervals:\n{}", beats.len(), dump());
    for pair in beats.windows(2) {
        let gap = pair[1] - pair[0];
        // Never faster than the pace; never as late as the window itself, even on a loaded machine.
        assert!(gap >= Duration::from_millis(800) && gap < WATCHDOG, "gap {gap:?}:\n{}", dump());
    }
    assert!(
        seen(&messages).iter().any(|(_, m)| m.starts_with("STATUS=indexed block ") && m.contains(" of head ")),
        "STATUS= lines:\n{}",
        dump()
    );

    // The node stops answering lcw; anvil goes on mining. Within a window the keep-alives stop.
    let stalled = Instant::now();
    proxy.set_faults(Faults { hang: 1.0, hang_for: Duration::from_secs(600), ..Faults::default() });
    tokio::time::sleep(Duration::from_secs(10)).await;
    // The cursor is looked at every second: the last keep-alive may come up to 2 s after the
    // window.
    let during = keep_alives_between(&messages, stalled + WATCHDOG + Duration::from_secs(3), Instant::now());
    assert!(during.is_empty(), "keep-alives went on while the indexer stalled: {during:?}\n{}", dump());
    assert!(seen(&messages).iter().any(|(_, m)| m.contains("stalled, no keep-alive")), "{}", dump());
    assert!(run.try_wait().expect("try_wait").is_none(), "lcw run itself stays up:\n{}", text());

    // The node answers again: the indexer catches up and the keep-alives come back.
    proxy.set_faults(Faults::default());
    let healed = Instant::now();
    let back = lcw_tests::wait_until(Duration::from_secs(60), || async {
        keep_alives_between(&messages, healed, Instant::now()).len() >= 2
    })
    .await;
    assert!(back, "keep-alives resumed with the node:\n{}", dump());

    let _ = Command::new("kill").args(["-TERM", &run.id().to_string()]).status();
    let status = run.wait().expect("wait");
    assert!(status.success(), "stopped cleanly on SIGTERM ({status}):\n{}", text());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let all: Vec<String> = seen(&messages).into_iter().map(|(_, m)| m).collect();
    assert_eq!(all.iter().filter(|m| *m == "READY=1").count(), 1, "{all:#?}");
    assert_eq!(all.iter().filter(|m| *m == "STOPPING=1").count(), 1, "{all:#?}");
    assert_eq!(all.last().map(String::as_str), Some("STOPPING=1"), "STOPPING=1 comes last: {all:#?}");
    assert!(
        all.iter().all(|m| ["READY=1", "STOPPING=1", "WATCHDOG=1"].contains(&m.as_str())
            || m.starts_with("STATUS=")
            || m.starts_with("EXTEND_TIMEOUT_USEC=")),
        "only protocol messages: {all:#?}"
    );
}
