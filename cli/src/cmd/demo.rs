//! `lcw demo`: the whole product on a local devnet until Ctrl-C, as an operator sees it. This
//! process is the orchestrator: a devnet (`lcw devnet`), one `lcw run` (indexer, keeper, API and
//! dashboard, and our worker), consumer traffic (`lcw simulate`, run after run) and, when asked,
//! the command starting the LLM server, all its children ([`procs`]); now and then a reorg
//! ([`chain`]); and a status line read from the API ([`status`]).

mod banner;
mod chain;
mod llm;
mod procs;
mod setup;
mod status;
mod traffic;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use anyhow::{Context, bail};
use clap::Args;
use lcw_contracts::deploy::DEFAULT_MODEL;
use lcw_schema::profile::{Profile, Role};

use self::llm::LlmServer;
use self::procs::{Proc, Spec};
use self::setup::{Settings, keystore_address, prepare, write_password};
use self::status::{Ours, Screen};
use self::traffic::Traffic;
use crate::args::DataArgs;

/// The claim window: with stakes at 10 times the minimum, each worker's first block falls 1 to 5
/// blocks after a request, drawn anew for every request, so that sessions spread over the workers
/// (with a short window, every worker could claim in the first block and the quickest would win
/// them all).
const CLAIM_WINDOW_BLOCKS: &str = "41";
/// The fee per job: its keeper bounty pays for a release of one job at a devnet's gas price (at the
/// default 0.01 LCAI a keeper waits until several are due, as it should, and releases late).
const JOB_FEE_LCAI: &str = "0.1";
/// LCAI of gas money for our key.
const GAS_MONEY_LCAI: u64 = 10_000;
/// How long the start waits for an LLM server the demo started before draining our worker.
const LLM_START_WAIT: Duration = Duration::from_secs(10);
/// How often the fuller summary is printed.
const SUMMARY_EVERY: Duration = Duration::from_secs(60);
/// How long after a failed undrain of our worker it is tried again.
const UNDRAIN_RETRY: Duration = Duration::from_secs(10);

/// `lcw demo --help`.
pub(crate) const LONG_ABOUT: &str = "\
Run the whole product on a local devnet until Ctrl-C, as an operator sees it.

Starts, as children of this process: a devnet (`lcw devnet`: anvil with the contracts, sessions \
assigned by sortition as on today's testnet); one `lcw run` with the indexer, the keeper (releases \
and timeouts of every worker), the GraphQL API and dashboard and, given --llm-url, our worker \
serving jobs with a real model; and consumer traffic (`lcw simulate`, run after run) with every \
outcome: released, disputed (guilty, not guilty, defaulted), timed out, settled without fault. \
Every --reorg-every seconds it replaces the last 1 to 3 blocks (a reorg).

Once up (in 5 to 20 s) it prints the dashboard and GraphiQL URLs, the store, a sample `lcw \
exit-plan` command and what runs, then keeps a status line refreshed in place (indexed head, jobs \
our worker served and got released, jobs released of all submitted, release lag, reorgs) and \
prints a summary of every outcome each minute.

Without --llm-url only simulated workers serve. With it our worker is registered at once; when the \
server does not answer (with --llm-start: within 10 s of its start) our worker is drained (claims \
no sessions) until the server lists the model and answers, then undrained, and claims sessions from \
the traffic's next session requests on. --llm-start runs a command that starts the server (`make \
demo` installs and starts llama-server with it: about 15 min the first time, seconds after).

Needs anvil: `make tools` in the repository, Foundry's anvil on PATH, or ANVIL_BIN. The demo's \
directory is emptied at each start; Ctrl-C stops every process of the demo and leaves its store \
and logs.";

/// The flags of `lcw demo` (its help is [`LONG_ABOUT`]).
#[derive(Args)]
pub(crate) struct DemoArgs {
    /// The demo's directory: devnet profile, store (lcw.db), keys, logs/. Emptied at each start
    /// (refused unless it is empty or an earlier demo's). Default: <data-dir>/demo.
    #[arg(long, env = "LCW_DEMO_DIR")]
    dir: Option<PathBuf>,
    /// The LLM server our worker serves jobs with: llama-server, vLLM or Ollama
    /// (http://127.0.0.1:11434). Without it only simulated workers serve.
    #[arg(long, env = "LCW_LLM_URL")]
    llm_url: Option<String>,
    /// Its API: auto (Ollama when /api/version answers, else OpenAI-compatible), openai or ollama.
    #[arg(long, env = "LCW_DEMO_LLM_API", default_value = "auto", value_parser = ["auto", "openai", "ollama"])]
    llm_api: String,
    /// A shell command that starts the LLM server at --llm-url (installing it first if need be),
    /// run in the background when nothing answers there yet; its output goes to logs/llm.log and
    /// its last line shows in the status until the server answers. Stopped with the demo.
    #[arg(long, env = "LCW_DEMO_LLM_START", requires = "llm_url", value_name = "COMMAND")]
    llm_start: Option<String>,
    /// The model: registered on the devnet, asked for by the traffic, served by our worker (the
    /// LLM server must list it: Ollama `ollama pull gemma3:270m` and --model gemma3:270m).
    #[arg(long, env = "LCW_DEMO_MODEL", default_value = DEFAULT_MODEL)]
    model: String,
    /// Most tokens per answer of our worker.
    #[arg(long, env = "LCW_DEMO_NUM_PREDICT", default_value_t = 32)]
    num_predict: u32,
    /// Address of the API and dashboard, on this machine (default 127.0.0.1:8080, or a free port
    /// when that is taken; port 0 picks a free one).
    #[arg(long, env = "LCW_DEMO_LISTEN")]
    listen: Option<SocketAddr>,
    /// Jobs per second the consumers submit.
    #[arg(long, env = "LCW_DEMO_RATE", default_value_t = 1.0)]
    rate: f64,
    /// Simulated workers beside ours.
    #[arg(long, env = "LCW_DEMO_WORKERS", default_value_t = 3)]
    workers: usize,
    /// Seconds between reorgs (the last 1 to 3 blocks replaced); 0 for none.
    #[arg(long, env = "LCW_DEMO_REORG_EVERY", default_value_t = 120, value_name = "SECS")]
    reorg_every: u64,
    /// Seconds between blocks.
    #[arg(long, env = "LCW_BLOCK_TIME", default_value_t = 1)]
    block_time: u64,
    /// Seconds a worker has to acknowledge a job.
    #[arg(long, env = "LCW_ACK_TIMEOUT", default_value_t = 10)]
    ack_timeout: u64,
    /// Seconds a worker has to complete an acknowledged job.
    #[arg(long, env = "LCW_COMPLETION_TIMEOUT", default_value_t = 60)]
    completion_timeout: u64,
    /// Seconds after completion before a job can be released.
    #[arg(long, env = "LCW_DISPUTE_WINDOW", default_value_t = 20)]
    dispute_window: u64,
    /// Seconds the disputer has to rule before a dispute defaults.
    #[arg(long, env = "LCW_RESOLUTION_TIMEOUT", default_value_t = 15)]
    resolution_timeout: u64,
}

/// Written by hand: the LLM URL, and the command that starts the server, may carry an API key.
impl std::fmt::Debug for DemoArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoArgs")
            .field("dir", &self.dir)
            .field("llm_url", &self.llm_url.as_deref().map(lcw_schema::profile::redact_url))
            .field("llm_api", &self.llm_api)
            .field("llm_start", &self.llm_start.as_deref().map(lcw_schema::profile::redact_urls))
            .field("model", &self.model)
            .field("listen", &self.listen)
            .field("rate", &self.rate)
            .field("workers", &self.workers)
            .field("reorg_every", &self.reorg_every)
            .finish_non_exhaustive()
    }
}

pub(crate) async fn run(args: DemoArgs, data: DataArgs) -> anyhow::Result<()> {
    let stop = crate::shutdown_signal();
    let settings = Settings::new(args, &data)?;
    lcw_contracts::anvil::locate().context(
        "lcw demo runs a devnet on anvil (Foundry's local node): `make tools` installs it into the repository, \
         `curl -L https://foundry.paradigm.xyz | bash && foundryup` anywhere; or set ANVIL_BIN",
    )?;
    let mut demo = Demo::new(settings)?;
    prepare(&demo.s.dir)?;
    let result = tokio::select! {
        biased;
        _ = stop => Ok(()),
        r = demo.start_and_watch() => r,
    };
    demo.stop().await;
    result
}

/// The running demo.
#[derive(Debug)]
struct Demo {
    s: std::sync::Arc<Settings>,
    screen: Screen,
    started: Instant,
    devnet: Option<Proc>,
    run: Option<Proc>,
    traffic: Option<Traffic>,
    llm: Option<LlmServer>,
    /// Our key: the worker's (when it serves) and the keeper's.
    key: Option<Address>,
    reorgs: u64,
    /// When our worker, drained while the LLM server is not ready, is undrained next (a failed
    /// undrain is tried again: one refused transaction must not end the demo).
    undrain_at: Option<Instant>,
}

impl Demo {
    fn new(s: Settings) -> anyhow::Result<Demo> {
        let llm = s.args.llm_url.as_deref().map(|u| LlmServer::new(u, &s.args.llm_api, &s.args.model)).transpose()?;
        Ok(Demo {
            s: std::sync::Arc::new(s),
            screen: Screen::new(Duration::from_secs(10)),
            started: Instant::now(),
            devnet: None,
            run: None,
            traffic: None,
            llm,
            key: None,
            reorgs: 0,
            undrain_at: None,
        })
    }

    async fn start_and_watch(&mut self) -> anyhow::Result<()> {
        let profile = self.start().await?;
        self.watch(&profile).await
    }

    /// Starts everything and prints what to open.
    async fn start(&mut self) -> anyhow::Result<Profile> {
        let s = self.s.clone();
        let a = &s.args;
        self.screen.say(&format!(
            "lcw demo: starting in {} (logs in {})",
            s.dir.display(),
            s.dir.join("logs").display()
        ));
        let secs = |v: u64| v.to_string();
        let (block, ack, completion, window, resolution) = (
            secs(a.block_time),
            secs(a.ack_timeout),
            secs(a.completion_timeout),
            secs(a.dispute_window),
            secs(a.resolution_timeout),
        );
        let mut devnet_args = vec![
            "devnet",
            "--port",
            "0",
            "--sortition",
            "--claim-window-blocks",
            CLAIM_WINDOW_BLOCKS,
            "--job-fee",
            JOB_FEE_LCAI,
            "--block-time",
            &block,
            "--ack-timeout",
            &ack,
            "--completion-timeout",
            &completion,
            "--dispute-window",
            &window,
            "--resolution-timeout",
            &resolution,
        ];
        if a.model != DEFAULT_MODEL {
            devnet_args.extend(["--model", a.model.as_str()]);
        }
        self.devnet = Some(Proc::spawn(s.lcw("lcw devnet", "devnet", &devnet_args))?);
        write_password(&s.password())?;
        let password = s.password().to_string_lossy().into_owned();
        let mut keygen = Proc::spawn(s.lcw("lcw keygen", "keygen", &["keygen", "--password-file", &password]))?;

        if let Some(llm) = self.llm.as_mut() {
            llm.probe_now().await;
            if let llm::State::Unusable(why) = &llm.state {
                bail!("the LLM server at {} answers but cannot serve the demo: {why}", llm.label());
            }
            match (&llm.state, &s.args.llm_start) {
                (llm::State::Ready(api), _) => {
                    self.screen.say(&format!("LLM server at {} answers ({api}, {})", llm.label(), a.model))
                }
                (_, Some(command)) => {
                    let spec = Spec {
                        name: "LLM server",
                        program: Path::new("sh"),
                        args: vec!["-c".into(), command.clone()],
                        env: Vec::new(),
                        log: s.log("llm"),
                    };
                    llm.start = Some(Proc::spawn(spec)?);
                    self.screen.say(&format!(
                        "starting the LLM server in the background: {} (log {})",
                        lcw_schema::profile::redact_urls(command),
                        s.log("llm").display()
                    ));
                }
                (llm::State::Waiting(why) | llm::State::Unusable(why), None) => self.screen.say(&format!(
                    "the LLM server at {} is {why}; our worker is drained until it answers",
                    llm.label()
                )),
            }
        }

        let profile = self.wait_for_devnet().await?;
        match keygen.wait(Duration::from_secs(120)).await {
            Some(status) if status.success() => {}
            Some(status) => bail!("lcw keygen failed ({status}):\n{}", keygen.tail(10)),
            None => bail!("lcw keygen did not finish within 120 s:\n{}", keygen.tail(10)),
        }
        let key = keystore_address(&s.keystore())?;
        self.key = Some(key);
        let chain = chain::Devnet::connect(&profile, a.block_time)?;
        chain.fund(key, GAS_MONEY_LCAI).await?;
        chain.demo_governance(&profile).await?;

        let network = s.network().to_string_lossy().into_owned();
        let key_text = key.to_string();
        if self.llm.is_some() {
            self.once(
                "lcw register",
                "register",
                &[
                    "register",
                    "--network",
                    &network,
                    "--models",
                    &a.model,
                    "--stake",
                    traffic::STAKE_LCAI,
                    "--password-file",
                    &password,
                ],
            )
            .await?;
            if !self.wait_for_llm(LLM_START_WAIT).await {
                // Its LLM server does not answer yet: no session is claimed that it could not serve.
                self.once("lcw drain", "drain", &["drain", "--network", &network, "--worker", &key_text]).await?;
            }
        }
        self.start_run(&network, &password).await?;
        self.print_up(&profile, key);
        let outcome_within = a.ack_timeout + a.completion_timeout + a.dispute_window + a.resolution_timeout;
        let plan = traffic::Plan {
            network: s.network(),
            rate: a.rate,
            workers: a.workers,
            model: a.model.clone(),
            outcome_within: Duration::from_secs(outcome_within),
        };
        let mut traffic = Traffic::new(plan, &s.lcw, &s.dir, s.log("simulate"));
        traffic.tick().await?;
        self.traffic = Some(traffic);
        Ok(profile)
    }

    /// Whether the LLM server answers within `limit`, when the demo started it (an installed
    /// server is up in seconds, and then our worker serves from the first session requests on).
    async fn wait_for_llm(&mut self, limit: Duration) -> bool {
        let Some(llm) = self.llm.as_mut() else { return false };
        let deadline = Instant::now() + limit;
        loop {
            if llm.ready() {
                return true;
            }
            let starting = llm.start.as_mut().is_some_and(|p| p.exited().is_none());
            if !starting || Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            llm.probe_now().await;
        }
    }

    /// Waits for `lcw devnet` to print that it is up; the profile it wrote.
    async fn wait_for_devnet(&mut self) -> anyhow::Result<Profile> {
        let deadline = Instant::now() + Duration::from_secs(120);
        let devnet = self.devnet.as_mut().context("the devnet was not started")?;
        loop {
            if procs::tail(&devnet.log, 40).lines().any(|l| l.starts_with("Ctrl-C stops the devnet")) {
                break;
            }
            if let Some(status) = devnet.exited() {
                bail!("lcw devnet stopped ({status}); its log ends with:\n{}", devnet.tail(15));
            }
            if Instant::now() > deadline {
                bail!("the devnet was not up within 120 s; its log ends with:\n{}", devnet.tail(15));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let path = self.s.network();
        Profile::load(&path).with_context(|| format!("reading the devnet profile {}", path.display()))
    }

    /// Runs an lcw command to its end (its output in logs/<log>.log).
    async fn once(&self, name: &'static str, log: &str, args: &[&str]) -> anyhow::Result<()> {
        let mut p = Proc::spawn(self.s.lcw(name, log, args))?;
        match p.wait(Duration::from_secs(180)).await {
            Some(status) if status.success() => Ok(()),
            Some(status) => bail!("{name} failed ({status}); its log ends with:\n{}", p.tail(10)),
            None => {
                p.stop(Duration::from_secs(2)).await;
                bail!("{name} did not finish within 180 s; its log ends with:\n{}", p.tail(10))
            }
        }
    }

    /// Starts `lcw run` and waits until its API is ready.
    async fn start_run(&mut self, network: &str, password: &str) -> anyhow::Result<()> {
        let s = &self.s;
        let keystore = s.keystore().to_string_lossy().into_owned();
        let listen = s.listen.to_string();
        let num_predict = s.args.num_predict.to_string();
        let mut args = vec![
            "run",
            "--network",
            network,
            "--keeper",
            "--key",
            &keystore,
            "--password-file",
            password,
            "--listen",
            &listen,
        ];
        let api = self.llm.as_ref().map(|l| l.api().to_string()).unwrap_or_default();
        if self.llm.is_some() {
            args.extend(["--work", "--llm-api", &api, "--models", &s.args.model, "--num-predict", &num_predict]);
            // Two jobs at once: one's transactions wait for their blocks while the other's
            // answer is generated.
            args.extend(["--concurrency", "2"]);
        }
        let mut spec = s.lcw("lcw run", "run", &args);
        if let Some(llm) = &self.llm {
            // In the environment, not the command line: a URL may carry an API key.
            spec.env.push(("LCW_LLM_URL", llm.url.clone()));
        }
        let mut run = Proc::spawn(spec)?;
        let ready = format!("http://{}/readyz", s.listen);
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if http.get(&ready).send().await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            if let Some(status) = run.exited() {
                bail!("lcw run stopped ({status}); its log ends with:\n{}", run.tail(15));
            }
            if Instant::now() > deadline {
                self.run = Some(run);
                bail!("lcw run was not ready within 120 s; see {}", s.log("run").display());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.run = Some(run);
        Ok(())
    }

    /// What to open, and what runs.
    fn print_up(&mut self, profile: &Profile, key: Address) {
        let s = &self.s;
        let a = &s.args;
        let ours = match &self.llm {
            Some(llm) => banner::Ours::Worker { model: &a.model, llm: llm.label(), serving: llm.ready() },
            None => banner::Ours::Nobody {
                simulated: profile.accounts_with(Role::Worker).next().map(|w| w.address).unwrap_or_default(),
            },
        };
        let up = banner::Up {
            after: self.started.elapsed(),
            called_as: &s.called_as,
            dir: &s.dir,
            listen: s.listen,
            rpc_url: &profile.rpc_url,
            chain_id: profile.chain_id,
            key,
            ours,
            windows: [a.block_time, a.ack_timeout, a.completion_timeout, a.dispute_window, a.resolution_timeout],
            rate: a.rate,
            workers: a.workers,
            reorg_every: s.reorg_every,
        };
        self.screen.clear();
        let mut out = std::io::stdout().lock();
        for line in banner::lines(&up) {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    }

    /// Keeps everything going and the status line current until a child fails.
    async fn watch(&mut self, profile: &Profile) -> anyhow::Result<()> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let graphql = format!("http://{}/graphql", self.s.listen);
        let chain = chain::Devnet::connect(profile, self.s.args.block_time)?;
        let up = Instant::now();
        let mut next_reorg = self.s.reorg_every.map(|e| up + e);
        let mut next_summary = up + SUMMARY_EVERY;
        let network = self.s.network().to_string_lossy().into_owned();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            for p in [self.devnet.as_mut(), self.run.as_mut()].into_iter().flatten() {
                if let Some(status) = p.exited() {
                    bail!("{} stopped ({status}); its log ends with:\n{}", p.name, p.tail(15));
                }
            }
            if let Some(traffic) = self.traffic.as_mut()
                && let Some(note) = traffic.tick().await?
            {
                self.screen.say(&note);
            }
            if self.llm.as_mut().is_some_and(LlmServer::tick) {
                self.undrain_at = Some(Instant::now());
            }
            if let (Some(at), Some(llm), Some(key)) = (self.undrain_at, &self.llm, self.key)
                && Instant::now() >= at
            {
                let took = status::duration(llm.waited());
                let key = key.to_string();
                match self.once("lcw undrain", "drain", &["undrain", "--network", &network, "--worker", &key]).await {
                    Ok(()) => {
                        self.undrain_at = None;
                        self.screen.say(&format!(
                            "the LLM server answers after {took}: our worker is undrained and claims sessions from \
                             the next session requests on"
                        ));
                    }
                    Err(e) => {
                        self.undrain_at = Some(Instant::now() + UNDRAIN_RETRY);
                        self.screen.say(&format!(
                            "warning: undraining our worker failed, trying again in {} s: {e:#}",
                            UNDRAIN_RETRY.as_secs()
                        ));
                    }
                }
            }
            let traffic_settled = self.traffic.as_ref().is_none_or(Traffic::settled_in);
            if let (Some(at), Some(every)) = (next_reorg, self.s.reorg_every)
                && Instant::now() >= at
                && traffic_settled
            {
                next_reorg = Some(Instant::now() + every);
                match chain.reorg(1 + self.reorgs % 3).await {
                    Ok(note) => {
                        self.reorgs += 1;
                        self.screen.say(&format!("reorg: {note}"));
                    }
                    Err(e) => self.screen.say(&format!("warning: the reorg failed: {e:#}")),
                }
            }
            let ours = match self.llm.as_mut() {
                None => Ours::None,
                Some(l) if l.ready() => Ours::Serving,
                Some(l) => Ours::Waiting(l.waiting_text()),
            };
            let key = self.llm.as_ref().and(self.key);
            match status::read(&http, &graphql, key).await {
                Ok(snapshot) => {
                    if Instant::now() >= next_summary {
                        next_summary = Instant::now() + SUMMARY_EVERY;
                        self.screen.say(&status::summary(&snapshot, up.elapsed()));
                    }
                    let reorgs = self.s.reorg_every.map(|_| self.reorgs);
                    self.screen.status(&status::line(&snapshot, &ours, reorgs));
                }
                Err(e) => self.screen.status(&format!("the API does not answer: {e}")),
            }
        }
    }

    /// Stops every child: the traffic and the LLM server first, then lcw run, then the devnet.
    async fn stop(&mut self) {
        self.screen.clear();
        let running: Vec<&str> = [
            ("the traffic", self.traffic.is_some()),
            ("the LLM server", self.llm.as_ref().is_some_and(|l| l.start.is_some())),
            ("lcw run", self.run.is_some()),
            ("the devnet", self.devnet.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect();
        if let Some((last, rest)) = running.split_last() {
            let list = if rest.is_empty() { (*last).to_owned() } else { format!("{} and {last}", rest.join(", ")) };
            self.screen.say(&format!("lcw demo: stopping {list}"));
        }
        if let Some(p) = self.traffic.as_mut().and_then(Traffic::current) {
            p.stop(Duration::from_secs(2)).await;
        }
        if let Some(p) = self.llm.as_mut().and_then(|l| l.start.as_mut()) {
            p.stop(Duration::from_secs(3)).await;
        }
        if let Some(p) = self.run.as_mut()
            && !p.stop(Duration::from_secs(15)).await
        {
            self.screen.say("lcw run did not stop within 15 s and was killed");
        }
        if let Some(p) = self.devnet.as_mut() {
            p.stop(Duration::from_secs(10)).await;
        }
        let dir = self.s.dir.display();
        if self.s.dir.join("lcw.db").exists() {
            self.screen.say(&format!(
                "lcw demo: stopped. The store stays in {dir}/lcw.db (`{} serve --db {dir}/lcw.db` serves it), the \
                 logs in {dir}/logs/",
                self.s.called_as
            ));
        } else {
            self.screen.say(&format!("lcw demo: stopped; the logs are in {dir}/logs/"));
        }
    }
}
