//! `lcw demo` and `make demo`: bad input explained before anything starts, and the whole product
//! up from `make demo`, serving and releasing jobs, with nothing left running after Ctrl-C.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::lcw;

#[test]
fn demo_explains_a_missing_anvil_a_bad_llm_url_and_a_directory_it_would_empty() {
    let dir = tempfile::tempdir().unwrap();
    let demo = |args: &[&str], env: &[(&str, &str)]| {
        let out = lcw()
            .arg("demo")
            .arg("--dir")
            .arg(dir.path().join("demo"))
            .args(args)
            .envs(env.iter().copied())
            .output()
            .expect("run lcw demo");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = demo(&[], &[("ANVIL_BIN", "/nonexistent/anvil")]);
    assert!(err.contains("lcw demo runs a devnet on anvil") && err.contains("ANVIL_BIN"), "{err}");
    let err = demo(&["--llm-url", "ftp://127.0.0.1:1"], &[]);
    assert!(err.contains("--llm-url `ftp://127.0.0.1:1` must start with http://"), "{err}");
    let err = demo(&["--listen", "0.0.0.0:0"], &[]);
    assert!(err.contains("on this machine only"), "{err}");

    std::fs::create_dir_all(dir.path().join("demo/keys")).unwrap();
    std::fs::write(dir.path().join("demo/notes.txt"), "mine").unwrap();
    let err = demo(&[], &[]);
    assert!(err.contains("is not an earlier demo's directory") && err.contains("--dir"), "{err}");
    assert!(dir.path().join("demo/notes.txt").exists(), "a directory the demo does not own is left alone");
}

/// Kills a process group when dropped: a failed assertion leaves nothing running.
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.0)]).stderr(Stdio::null()).status();
    }
}

/// Processes whose session is `sid` or whose command line mentions `marker`: what is left of a
/// demo started with `setsid` in a directory named `marker`.
fn leftovers(sid: u32, marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // pid (comm) state ppid pgrp session ...: the fields after the last ')'.
        let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
        if fields.first() == Some(&"Z") {
            continue;
        }
        let session = fields.get(3).and_then(|s| s.parse::<u32>().ok());
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if session == Some(sid) || cmdline.contains(marker) {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

/// `make demo` as a user runs it (with this build of lcw, a temporary directory and short
/// windows): within a bounded time the dashboard answers, the API shows jobs acknowledged by our
/// worker on the real LLM server and jobs released by lcw's keeper, and after Ctrl-C (SIGINT to
/// the process group, as a terminal sends it) no process of the demo is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_demo_serves_and_releases_jobs_and_ctrl_c_leaves_no_process() {
    lcw_tests::llm::installed();
    lcw_schema::ensure_tls();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("lcw-demo-under-test");
    let llm_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let stderr_path = dir.path().join("make-demo.err");
    // A clean environment: neither the flags of a make running these tests (MAKEFLAGS) nor a
    // developer's lcw variables reach the demo.
    let mut make = lcw_tests::binary::clean("setsid");
    make.arg("make")
        .arg("-s")
        .arg("-C")
        .arg(root)
        .arg("demo")
        .arg(format!("LCW={}", env!("CARGO_BIN_EXE_lcw")))
        .arg(format!("DEMO_DIR={}", demo_dir.display()))
        .arg(format!("DEMO_LLM_PORT={llm_port}"))
        .arg(
            "DEMO_ARGS=--listen 127.0.0.1:0 --rate 2 --ack-timeout 8 --completion-timeout 30 --dispute-window 4 \
             --resolution-timeout 4 --reorg-every 20",
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap());
    let mut make = make.spawn().expect("run make demo");
    let sid = make.id();
    let group = Group(sid);
    let stderr = || std::fs::read_to_string(&stderr_path).unwrap_or_default();

    // What to open, read as it is printed.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = make.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !printed.iter().any(|l: &String| l.starts_with("Ctrl-C stops everything")) {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => printed.push(line),
            Err(_) if Instant::now() > deadline || make.try_wait().unwrap().is_some() => {
                panic!("make demo was not up within 90 s; it printed {printed:?}\nstderr:\n{}", stderr());
            }
            Err(_) => {}
        }
    }
    let up = started.elapsed();
    let field = |name: &str| -> String {
        let line = printed
            .iter()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("{name} in {printed:?}"));
        line.trim_start()[name.len()..].split_whitespace().next().unwrap().to_owned()
    };
    let dashboard = field("dashboard");
    let graphql = field("GraphiQL");
    let exit_plan = printed.iter().find(|l| l.contains("exit-plan --worker")).expect("a sample exit-plan command");
    let ours = exit_plan.split("--worker ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().to_owned();
    assert!(exit_plan.contains("(our worker)"), "the LLM server is installed, so our worker serves: {printed:?}");
    assert!(printed.iter().any(|l| l.contains(&format!("{}/lcw.db", demo_dir.display()))), "{printed:?}");

    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let page = http.get(&dashboard).send().await.expect("the dashboard answers");
    assert!(page.status().is_success(), "GET {dashboard}: {}", page.status());
    assert!(page.text().await.unwrap().contains("<html"), "the dashboard is a page");

    // Jobs our worker acknowledged, and jobs lcw's keeper (our key) released.
    let query = format!(
        "{{ ours: jobs(filter: {{ worker: \"{ours}\", states: [ACKNOWLEDGED, COMPLETED, DISPUTED, RESOLVED, RELEASED] }}, \
         first: 5) {{ nodes {{ id state }} }} released: jobs(filter: {{ states: [RELEASED] }}, first: 100) \
         {{ nodes {{ id worker keeper }} }} }}"
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = serde_json::Value::Null;
    loop {
        if let Ok(r) = http.post(&graphql).json(&serde_json::json!({ "query": query })).send().await
            && let Ok(answer) = r.json::<serde_json::Value>().await
        {
            let acked = answer["data"]["ours"]["nodes"].as_array().is_some_and(|n| !n.is_empty());
            let by_keeper = answer["data"]["released"]["nodes"]
                .as_array()
                .is_some_and(|n| n.iter().any(|j| j["keeper"].as_str().is_some_and(|k| k.eq_ignore_ascii_case(&ours))));
            if acked && by_keeper {
                break;
            }
            last = answer;
        }
        let exited = make.try_wait().unwrap();
        if Instant::now() > deadline || exited.is_some() {
            let why = match exited {
                Some(status) => format!("make demo exited ({status})"),
                None => "90 s went by".to_owned(),
            };
            panic!(
                "{why} before a job was acknowledged by our worker {ours} and released by its keeper; the API last \
                 said {last}\nstderr:\n{}\nlcw run's log ends with:\n{}",
                stderr(),
                std::fs::read_to_string(demo_dir.join("logs/run.log"))
                    .unwrap_or_default()
                    .lines()
                    .rev()
                    .take(30)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let served = started.elapsed();

    // Ctrl-C, as a terminal sends it: SIGINT to the foreground process group.
    Command::new("kill").args(["-INT", "--", &format!("-{sid}")]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    while make.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            panic!("make demo did not stop within 40 s of SIGINT\nstderr:\n{}", stderr());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let marker = demo_dir.file_name().unwrap().to_string_lossy().into_owned();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut left = leftovers(sid, &marker);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        left = leftovers(sid, &marker);
    }
    drop(group);
    assert!(left.is_empty(), "processes of the demo outlived Ctrl-C: {left:#?}\nstderr:\n{}", stderr());
    assert!(stderr().contains("lcw demo: stopped"), "{}", stderr());
    eprintln!(
        "make demo: up after {:.1} s, served and released after {:.1} s, stopped after {:.1} s",
        up.as_secs_f64(),
        served.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
