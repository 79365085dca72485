//! What the demo prints on stdout once it is up: what to open, and what runs.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use alloy::primitives::Address;

use super::traffic::{DISPUTE_SHARE, SETTLE_SHARE, TIMEOUT_SHARE};

/// Who serves besides the simulated workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ours<'a> {
    /// Our worker, with its model on this LLM server (its URL redacted), serving or drained.
    Worker { model: &'a str, llm: String, serving: bool },
    /// Nobody: the exit plan shown is this simulated worker's.
    Nobody { simulated: Address },
}

/// Everything the text says.
#[derive(Debug, Clone)]
pub(super) struct Up<'a> {
    pub(super) after: Duration,
    pub(super) called_as: &'a str,
    pub(super) dir: &'a Path,
    pub(super) listen: SocketAddr,
    pub(super) rpc_url: &'a str,
    pub(super) chain_id: u64,
    /// Our key: the keeper's, and our worker's.
    pub(super) key: Address,
    pub(super) ours: Ours<'a>,
    /// Block time, ack and completion timeouts, dispute window, resolution timeout (seconds).
    pub(super) windows: [u64; 5],
    pub(super) rate: f64,
    pub(super) workers: usize,
    pub(super) reorg_every: Option<Duration>,
}

/// The lines to print.
pub(super) fn lines(up: &Up<'_>) -> Vec<String> {
    let api = format!("http://{}", up.listen);
    let dir = up.dir.display();
    let lcw = up.called_as;
    let [block, ack, completion, window, resolution] = up.windows;
    let (worker, exit_worker, whose, in_run) = match &up.ours {
        Ours::Worker { model, llm, serving } => {
            let how = if *serving {
                "serving"
            } else {
                "drained until the LLM server answers; the status line shows how it is going"
            };
            (format!("{}, {model} via {llm} ({how})", up.key), up.key, "our worker", ", our worker")
        }
        Ours::Nobody { simulated } => (
            format!("none: no --llm-url, so only simulated workers serve (the keeper is {})", up.key),
            *simulated,
            "a simulated worker",
            "",
        ),
    };
    let reorgs = match up.reorg_every {
        Some(e) => format!("a reorg every {} s", e.as_secs()),
        None => "no reorgs".into(),
    };
    let plural = if up.rate == 1.0 { "" } else { "s" };
    let and_ours = if matches!(up.ours, Ours::Worker { .. }) { " and ours" } else { "" };
    vec![
        format!("lcw demo is up after {:.1} s. Open:", up.after.as_secs_f64()),
        format!("  dashboard   {api}/"),
        format!("  GraphiQL    {api}/graphql"),
        format!("  store       {dir}/lcw.db (SQLite; `{lcw} serve --db {dir}/lcw.db` serves it after the demo)"),
        format!("  exit plan   {lcw} --data-dir {dir} exit-plan --worker {exit_worker}   ({whose})"),
        "What runs:".into(),
        format!(
            "  devnet      anvil at {} (chain {}), {block} s blocks, sessions by sortition; ack {ack} s, completion \
             {completion} s, dispute window {window} s, resolution {resolution} s",
            up.rpc_url, up.chain_id
        ),
        format!("  lcw run     indexer, keeper (releases and timeouts of every worker), API and dashboard{in_run}"),
        format!("  our worker  {worker}"),
        format!(
            "  traffic     lcw simulate, {} job{plural}/s to {} simulated workers{and_ours}: {TIMEOUT_SHARE}% time out, \
             {DISPUTE_SHARE}% disputed, {SETTLE_SHARE}% on closed sessions, the rest released; {reorgs}",
            up.rate, up.workers
        ),
        format!("  logs        {dir}/logs/"),
        "Ctrl-C stops everything.".into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(ours: Ours<'static>) -> Up<'static> {
        Up {
            after: Duration::from_millis(12_345),
            called_as: "target/debug/lcw",
            dir: Path::new("lcw-data/demo"),
            listen: "127.0.0.1:8080".parse().unwrap(),
            rpc_url: "http://127.0.0.1:40000",
            chain_id: 31337,
            key: Address::repeat_byte(0x11),
            ours,
            windows: [1, 10, 60, 20, 15],
            rate: 1.0,
            workers: 3,
            reorg_every: Some(Duration::from_secs(120)),
        }
    }

    #[test]
    fn says_what_to_open_and_what_runs() {
        let text =
            lines(&up(Ours::Worker { model: "gemma3-270m", llm: "http://127.0.0.1:8181".into(), serving: true }))
                .join("\n");
        for part in [
            "lcw demo is up after 12.3 s. Open:",
            "  dashboard   http://127.0.0.1:8080/\n",
            "  GraphiQL    http://127.0.0.1:8080/graphql\n",
            "  store       lcw-data/demo/lcw.db",
            "target/debug/lcw --data-dir lcw-data/demo exit-plan --worker 0x1111111111111111111111111111111111111111   \
             (our worker)",
            "API and dashboard, our worker\n",
            "gemma3-270m via http://127.0.0.1:8181 (serving)",
            "1 job/s to 3 simulated workers and ours: 10% time out, 15% disputed, 5% on closed sessions",
            "a reorg every 120 s",
            "\nCtrl-C stops everything.",
        ] {
            assert!(text.contains(part), "{part:?} in\n{text}");
        }
    }

    #[test]
    fn without_an_llm_server_only_simulated_workers_serve() {
        let simulated = Address::repeat_byte(0x22);
        let mut u = up(Ours::Nobody { simulated });
        u.rate = 2.5;
        u.reorg_every = None;
        let text = lines(&u).join("\n");
        assert!(text.contains("none: no --llm-url, so only simulated workers serve"), "{text}");
        assert!(text.contains(&format!("exit-plan --worker {simulated}   (a simulated worker)")), "{text}");
        assert!(text.contains("API and dashboard\n") && text.contains("2.5 jobs/s to 3 simulated workers:"), "{text}");
        assert!(text.contains("no reorgs"), "{text}");
    }
}
