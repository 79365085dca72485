//! `lcw run --keeper --work --metrics ADDR` with the real binary, a devnet and the real LLM
//! server: once it has served and released a few jobs, its one `/metrics` answer carries the
//! indexer's, the settler's and the worker's families with the figures an operator checks, and
//! `promtool check metrics` accepts it.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{count, operator, registered_worker, session_with};
use lcw_tests::llm::LlmServer;
use lcw_tests::parties::submit_prompt;
use lcw_tests::{TestNet, wait_until};

const MODEL: &str = "gemma3-270m";

/// The body of `GET /metrics` at `addr`, if it answers.
fn scrape(addr: &str) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    stream.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1) == Some("200")).then(|| body.to_owned())
}

/// The value of the sample `series` (name and labels as written), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_metrics_answer_carries_every_part_and_promtool_accepts_it() {
    let net = TestNet::start_with(|o| {
        o.block_time = 1;
        o.deploy.dispute_window = 5;
        o.deploy.ack_timeout = 120;
        o.deploy.completion_timeout = 600;
    })
    .await;
    let server = LlmServer::start();
    let data = net.dir.path();
    let db = data.join("lcw.db");
    let log = data.join("lcw-run.log");
    let account = registered_worker(&net, data, MODEL);
    let session = session_with(&net, data, &account).await;

    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().expect("its address").to_string()
    };
    let file = std::fs::File::create(&log).expect("log file");
    let mut run = operator(data)
        .args(["run", "--keeper", "--work", "--no-api", "--metrics", &addr])
        .args(["--llm-api", "openai", "--llm-url", &server.url, "--models", MODEL, "--num-predict", "16"])
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("spawn lcw run");
    let text = || std::fs::read_to_string(&log).unwrap_or_default();

    let prompts = ["Name a planet.", "Name a river.", "Name a tree."];
    for p in prompts {
        submit_prompt(&net, &session, p).await;
    }
    let jobs = prompts.len() as i64;
    // Released on chain, and the settler has read every release's receipt.
    let released = || async {
        count(&db, "SELECT count(*) FROM jobs WHERE state = 'RELEASED'") == jobs
            && count(
                &db,
                "SELECT count(*) FROM outbox_jobs oj JOIN outbox o ON o.id = oj.outbox_id
                 WHERE o.kind = 'release' AND o.status = 'mined'",
            ) >= jobs
    };
    let done = wait_until(Duration::from_secs(300), released).await;
    let body = scrape(&addr);
    let _ = Command::new("kill").args(["-INT", &run.id().to_string()]).status();
    let status = run.wait().expect("wait");
    assert!(done, "every job released:\n{}", text());
    assert!(status.success(), "stopped cleanly on SIGINT ({status}):\n{}", text());
    let body = body.unwrap_or_else(|| panic!("GET http://{addr}/metrics answered:\n{}", text()));

    // The figures an operator checks.
    let v = |series: &str| value(&body, series).unwrap_or_else(|| panic!("{series} in:\n{body}"));
    assert!(v("lcw_indexer_indexed_block") > 0.0, "{body}");
    assert!(v("lcw_settler_jobs_total{kind=\"release\"}") >= jobs as f64, "{body}");
    assert!(v("lcw_settler_mined_total{kind=\"release\"}") >= 1.0, "{body}");
    assert_eq!(v("lcw_settler_reverted_total{kind=\"release\"}"), 0.0, "{body}");
    assert!(v("lcw_settler_fees_paid_wei_total{kind=\"release\"}") > 0.0, "{body}");
    let price = v("lcw_settler_gas_price_max_wei{kind=\"release\"}");
    assert!(price > 0.0 && price <= v("lcw_settler_fee_cap_wei"), "paid under the ceiling:\n{body}");
    assert!(v("lcw_settler_release_lag_blocks_count") >= 1.0, "{body}");
    assert!(v("lcw_worker_jobs_acked_total") >= jobs as f64, "{body}");
    assert!(v("lcw_worker_jobs_completed_total") >= jobs as f64, "{body}");
    assert!(v("lcw_worker_llm_seconds_count") >= jobs as f64, "{body}");
    for step in ["prompt", "funds", "deadline", "llm"] {
        assert_eq!(v(&format!("lcw_worker_jobs_refused_total{{step=\"{step}\"}}")), 0.0, "{body}");
    }
    assert!(v("lcw_worker_balance_wei") > 0.0, "{body}");
    assert!(v("lcw_worker_runway_jobs") > 0.0, "{body}");
    v("lcw_worker_outbox_live_transactions{lane=\"worker\"}");
    v("lcw_settler_outbox_live_transactions{lane=\"settler\"}");

    // The exposition format, as Prometheus reads it.
    let file = data.join("metrics.txt");
    std::fs::write(&file, &body).expect("write the scrape");
    let out = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).expect("the scrape"))
        .output()
        .expect("promtool (Debian's prometheus package; .ci/run installs it)");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool check metrics:\n{said}\n{body}");
    assert!(said.trim().is_empty(), "promtool check metrics said:\n{said}\n{body}");
}
