//! GraphQL load shared by the benchmarks that put `lcw serve` under wrk (bench-queries on the
//! SQLite store, bench-replica on SQLite and PostgreSQL side by side): the four measured queries
//! and the targets they are asked about, the wrk script that sends them with fresh variables and
//! counts GraphQL errors, and the parsing of wrk's report. Figures only: nothing here asserts a
//! time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use alloy::primitives::Address;
use anyhow::{Context, bail, ensure};
use lcw_schema::store::Store;
use serde::Serialize;

/// What the queries are asked about, read from the store.
#[derive(Debug)]
pub struct Targets {
    pub min_job: u64,
    pub max_job: u64,
    pub workers: Vec<Address>,
    /// Workers with open jobs (exit plans with obligations).
    pub busy_workers: Vec<Address>,
    pub from: u64,
}

/// Reads the [`Targets`] from the store `db`.
pub fn targets(db: &Path) -> anyhow::Result<Targets> {
    let store = Store::open_readonly(db)?;
    let conn = store.conn();
    let (min_job, max_job): (i64, i64) =
        conn.query_row("SELECT min(job_id), max(job_id) FROM jobs", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let addresses = |sql: &str| -> anyhow::Result<Vec<Address>> {
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        Ok(rows.map(|r| r.map(|b| Address::from_slice(&b))).collect::<Result<_, _>>()?)
    };
    // Workers that served jobs (every registered one in a large store; a small one leaves some
    // without, and an empty page would not measure the query).
    let workers = addresses(
        "SELECT address FROM workers WHERE registered = 1 \
         AND EXISTS (SELECT 1 FROM jobs WHERE jobs.worker = workers.address) ORDER BY address",
    )?;
    let busy_workers = addresses(
        "SELECT DISTINCT worker FROM jobs WHERE state NOT IN ('RELEASED', 'TIMED_OUT') \
         AND NOT (state = 'RESOLVED' AND guilty = 1) ORDER BY worker",
    )?;
    let head_time: i64 =
        conn.query_row("SELECT b.timestamp FROM blocks b JOIN cursor c ON b.number = c.block_number", [], |r| {
            r.get(0)
        })?;
    ensure!(!workers.is_empty() && max_job > 0, "the store has no workers or no jobs");
    ensure!(!busy_workers.is_empty(), "no worker has open jobs in the store: exit plans would be empty");
    Ok(Targets {
        min_job: min_job as u64,
        max_job: max_job as u64,
        workers,
        busy_workers,
        from: (head_time as u64).saturating_sub(30 * 86_400),
    })
}

/// How a query's variables are chosen per request.
#[derive(Debug, Clone)]
pub enum Vars {
    /// `{"id": "<n>"}` with n uniform in lo..=hi.
    JobId { lo: u64, hi: u64 },
    /// `{"w": "<address>"}` picked uniformly from the list.
    Worker(Vec<Address>),
    /// The same variables every time.
    Fixed(serde_json::Value),
}

impl Vars {
    /// One request's variables (the middle of the range), for a first check.
    pub fn sample(&self) -> serde_json::Value {
        match self {
            Vars::JobId { lo, hi } => serde_json::json!({ "id": ((lo + hi) / 2).to_string() }),
            Vars::Worker(list) => serde_json::json!({ "w": list[list.len() / 2].to_string() }),
            Vars::Fixed(v) => v.clone(),
        }
    }

    /// The Lua function `vars()` returning the variables as JSON text.
    fn lua(&self) -> String {
        match self {
            Vars::JobId { lo, hi } => format!(
                "local lo, hi = {lo}, {hi}\n\
                 function vars() return string.format('{{\"id\":\"%d\"}}', math.random(lo, hi)) end\n"
            ),
            Vars::Worker(list) => {
                let items: Vec<String> = list.iter().map(|a| format!("\"{a}\"")).collect();
                format!(
                    "local list = {{ {} }}\n\
                     function vars() return '{{\"w\":\"' .. list[math.random(#list)] .. '\"}}' end\n",
                    items.join(", ")
                )
            }
            Vars::Fixed(v) => format!("local fixed = [==[{v}]==]\nfunction vars() return fixed end\n"),
        }
    }
}

/// One measured query.
#[derive(Debug, Clone)]
pub struct Query {
    /// How the figures name it.
    pub name: &'static str,
    /// The root field, for the response check.
    pub root: &'static str,
    /// The document.
    pub text: &'static str,
    /// How each request's variables are chosen.
    pub vars: Vars,
    /// The p99 target in ms, where one is set.
    pub target_p99_ms: Option<f64>,
}

/// The four measured queries over `t`.
pub fn queries(t: &Targets) -> Vec<Query> {
    vec![
        Query {
            name: "job(id)",
            root: "job",
            text: "query($id: BigInt!) { job(id: $id) { id state worker submittedAt completedAt releasableAt \
                   releasedAt releaseTx workerShare timeline { name block time } } }",
            vars: Vars::JobId { lo: t.min_job, hi: t.max_job },
            target_p99_ms: Some(10.0),
        },
        Query {
            name: "jobs(worker, first: 50)",
            root: "jobs",
            text: "query($w: Address!) { jobs(filter: { worker: $w }, first: 50) { nodes { id state fee submittedAt } \
                   pageInfo { endCursor hasNextPage } } }",
            vars: Vars::Worker(t.workers.clone()),
            target_p99_ms: None,
        },
        Query {
            name: "exitPlan(worker)",
            root: "exitPlan",
            text: "query($w: Address!) { exitPlan(worker: $w) { activeJobs earliestDeregisterAt deregisterReady \
                   next { kind } obligations { jobId action at } } }",
            vars: Vars::Worker(t.busy_workers.clone()),
            target_p99_ms: Some(10.0),
        },
        Query {
            name: "earnings(DAY, 30 days)",
            root: "earnings",
            text: "query($from: Timestamp!) { earnings(bucket: DAY, from: $from) { start released fees workerShare } }",
            vars: Vars::Fixed(serde_json::json!({ "from": t.from })),
            target_p99_ms: None,
        },
    ]
}

/// The wrk script of a query: POSTs it to /graphql with fresh variables per request, and counts
/// responses that are not 200 or carry GraphQL `errors` (reported by `done` as `graphql errors: n`).
pub fn wrk_script(q: &Query, generator: &str) -> anyhow::Result<String> {
    let prefix = format!("{{\"query\":{},\"variables\":", serde_json::to_string(q.text)?);
    Ok(format!(
        r#"-- generated by {generator} for {name}
wrk.method = "POST"
wrk.path = "/graphql"
wrk.headers["Content-Type"] = "application/json"
local prefix = [==[{prefix}]==]
{vars}
local threads = {{}}
local next_id = 1
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end
function init(args)
  errors = 0
  math.randomseed(id * 7919 + os.time())
end
function request()
  return wrk.format(nil, nil, nil, prefix .. vars() .. "}}")
end
function response(status, headers, body)
  if status ~= 200 or string.find(body, '"errors"', 1, true) then
    errors = errors + 1
    if first_error == nil then
      first_error = status .. " " .. string.gsub(string.sub(body, 1, 300), "%s+", " ")
    end
  end
end
function done(summary, latency, requests)
  local n, first = 0, nil
  for _, t in ipairs(threads) do
    n = n + t:get("errors")
    first = first or t:get("first_error")
  end
  io.write(string.format("graphql errors: %d\n", n))
  if first then io.write("first error: " .. first .. "\n") end
end
"#,
        name = q.name,
        vars = q.vars.lua(),
    ))
}

/// One query's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadResult {
    /// The query's name (set by the caller).
    pub query: String,
    /// Requests completed.
    pub requests: u64,
    /// Requests per second.
    pub requests_per_sec: f64,
    /// Median latency, in ms (the other percentiles too).
    pub p50_ms: f64,
    /// 75th percentile.
    pub p75_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Responses that were not 200 or carried GraphQL `errors`.
    pub errors: u64,
    /// The first of them (status and body).
    pub first_error: Option<String>,
    /// Connect, read, write and timeout errors wrk counted.
    pub socket_errors: u64,
    /// The p99 target in ms, where one is set.
    pub target_p99_ms: Option<f64>,
}

/// Reads the store file once, so every run measures lcw on a warm page cache, as a server that
/// has been up for a while sees it. Random ids over a cold 2 GB file measure the disk instead (a
/// run right after writing other large files dropped job(id) to half its throughput).
pub fn warm_page_cache(db: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut file = std::fs::File::open(db).with_context(|| format!("opening {}", db.display()))?;
    let bytes = std::io::copy(&mut file, &mut std::io::sink()).with_context(|| format!("reading {}", db.display()))?;
    eprintln!("read {} MiB of the store into the page cache in {:.1} s", bytes >> 20, started.elapsed().as_secs_f64());
    Ok(())
}

/// wrk's durations: `512.00us`, `1.23ms`, `1.02s`, `2.00m`.
fn parse_duration_ms(s: &str) -> Option<f64> {
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (value, unit) = s.split_at(split);
    let value: f64 = value.parse().ok()?;
    Some(match unit {
        "us" => value / 1_000.0,
        "ms" => value,
        "s" => value * 1_000.0,
        "m" => value * 60_000.0,
        "h" => value * 3_600_000.0,
        _ => return None,
    })
}

/// The figures of wrk's `--latency` report and the script's error count.
pub fn parse_wrk(out: &str) -> anyhow::Result<LoadResult> {
    let mut r = LoadResult::default();
    let mut percentiles = BTreeMap::new();
    for line in out.lines().map(str::trim) {
        if let Some(first) = line.strip_prefix("first error: ") {
            r.first_error = Some(first.to_owned());
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [p, value] if p.ends_with('%') => {
                if let Some(ms) = parse_duration_ms(value) {
                    percentiles.insert(p.trim_end_matches('%').to_owned(), ms);
                }
            }
            ["Requests/sec:", value] => r.requests_per_sec = value.parse().unwrap_or_default(),
            [n, "requests", "in", ..] => r.requests = n.parse().unwrap_or_default(),
            ["Non-2xx", "or", "3xx", "responses:", n] => r.errors = r.errors.max(n.parse().unwrap_or_default()),
            ["graphql", "errors:", n] => r.errors = r.errors.max(n.parse().unwrap_or_default()),
            ["Socket", "errors:", rest @ ..] => {
                r.socket_errors = rest.iter().filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok()).sum();
            }
            _ => {}
        }
    }
    let get = |p: &str| percentiles.get(p).copied().with_context(|| format!("no {p}% latency in wrk's output"));
    (r.p50_ms, r.p75_ms, r.p90_ms, r.p99_ms) = (get("50")?, get("75")?, get("90")?, get("99")?);
    ensure!(r.requests_per_sec > 0.0, "no Requests/sec in wrk's output:\n{out}");
    Ok(r)
}

/// The `lcw serve` flags that bound the load: the defaults, except a connection cap above wrk's
/// connections (past the cap, a new connection closes the longest-idle one, or is answered 503
/// when every one has a request in flight).
pub fn serve_flags(wrk_connections: u64) -> Vec<String> {
    let defaults = lcw_queries::ServeConfig::new(PathBuf::new());
    let connections = defaults.limits.connections.max(wrk_connections as usize + 1);
    [
        ("--pool", defaults.pool.to_string()),
        ("--timeout-ms", defaults.request_timeout.as_millis().to_string()),
        ("--api-max-requests", defaults.limits.requests.to_string()),
        ("--api-max-connections", connections.to_string()),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_owned(), value])
    .collect()
}

/// Sends the query once and fails on `errors`, null data or an empty answer; returns a short
/// description of what came back.
pub async fn check_query(client: &reqwest::Client, url: &str, q: &Query) -> anyhow::Result<String> {
    let body = serde_json::json!({ "query": q.text, "variables": q.vars.sample() });
    let response = client.post(url).json(&body).send().await.with_context(|| format!("POST {}", q.name))?;
    let status = response.status();
    let text = response.text().await?;
    ensure!(status.is_success(), "{} answered HTTP {status}: {text}", q.name);
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} answered with invalid JSON: {text}", q.name))?;
    if let Some(errors) = value.get("errors") {
        bail!("{} answered with errors: {errors}", q.name);
    }
    let data = &value["data"][q.root];
    ensure!(!data.is_null(), "{} answered null data: {text}", q.name);
    let summary = match q.root {
        "job" => {
            format!("state {}, {} timeline events", data["state"], data["timeline"].as_array().map_or(0, Vec::len))
        }
        "jobs" => {
            let n = data["nodes"].as_array().map_or(0, Vec::len);
            ensure!(n > 0, "{} returned no jobs: {text}", q.name);
            format!("{n} jobs, hasNextPage {}", data["pageInfo"]["hasNextPage"])
        }
        "exitPlan" => format!(
            "{} active jobs, {} obligations, next {}",
            data["activeJobs"],
            data["obligations"].as_array().map_or(0, Vec::len),
            data["next"]["kind"]
        ),
        "earnings" => {
            let n = data.as_array().map_or(0, Vec::len);
            ensure!(n > 0, "{} returned no buckets: {text}", q.name);
            format!("{n} daily buckets")
        }
        _ => String::new(),
    };
    Ok(summary)
}

/// Runs wrk with `script` against `url` for `seconds`, and parses its report.
pub fn run_wrk(threads: u64, connections: u64, url: &str, script: &Path, seconds: u64) -> anyhow::Result<LoadResult> {
    let out = Command::new("wrk")
        .args(["-t", &threads.to_string(), "-c", &connections.to_string()])
        .args(["-d", &format!("{seconds}s"), "--timeout", "10s", "--latency", "-s"])
        .arg(script)
        .arg(url)
        .output()
        .context("running wrk (install it: apt-get install -y wrk)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "wrk failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    parse_wrk(&stdout)
}
