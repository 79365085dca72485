//! `lcw`: one binary for the LightChain AI worker operator: devnet, indexer, settler, worker,
//! GraphQL API and the operator verbs. Commands are thin: they parse flags into validated values
//! and call the libraries.

mod args;
mod cmd;
mod notify;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::args::DataArgs;
use lcw_schema::profile::redact_urls;

#[derive(Debug, Parser)]
#[command(name = "lcw", version, about = "Indexer, settler, worker and API for LightChain AI worker operators")]
struct Cli {
    #[command(flatten)]
    data: DataArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a local devnet (anvil + contracts) until Ctrl-C.
    Devnet(cmd::devnet::DevnetArgs),
    /// Deploy the contracts to any node and write a network profile.
    Deploy(cmd::deploy::DeployArgs),
    /// Send simulated consumer traffic to a devnet.
    Simulate(cmd::simulate::SimulateArgs),
    /// Index WorkerRegistry, JobRegistry and AIConfig events into the store.
    Index(cmd::index::IndexArgs),
    /// Rebuild the projections from the raw logs (no RPC) and compare.
    Replay(cmd::replay::ReplayArgs),
    /// Check the store against the chain (or, with --replica, its PostgreSQL replica).
    Verify(cmd::verify::VerifyArgs),
    /// Copy the store into PostgreSQL for many readers (the store stays the source of truth).
    Replicate(cmd::replicate::ReplicateArgs),
    /// Release every job in the first block after its dispute window (worker or keeper).
    Settle(cmd::settle::SettleArgs),
    /// Serve the jobs assigned to this worker (ack, decrypt, run the model, encrypt, complete).
    Work(cmd::work::WorkArgs),
    /// Release what is releasable now and wait for it to be mined.
    Release(cmd::settle::ReleaseArgs),
    /// A worker's obligations, the exact moment it may deregister, and the next step.
    ExitPlan(cmd::operator::WorkerArgs),
    /// Earnings balance, stake, active jobs and gas money, from the contracts.
    Balance(cmd::operator::WorkerArgs),
    /// Stop taking new sessions (lcw's worker and, when configured, the gateway).
    Drain(cmd::operator::WorkerArgs),
    /// Take new sessions again.
    Undrain(cmd::operator::WorkerArgs),
    /// Withdraw the earnings balance (with --then-sweep ADDR, then sweep the wallet to ADDR).
    Withdraw(cmd::operator::WithdrawArgs),
    /// Send the wallet's spendable balance to a payout address, keeping the gas the open jobs need.
    Sweep(cmd::sweep::SweepArgs),
    /// claimTimeout for the worker's jobs past their deadline (shows the slash, asks first).
    ClearStuck(cmd::operator::ClearStuckArgs),
    /// deregisterWorker, refused with the exit plan while obligations remain.
    Deregister(cmd::operator::WorkerArgs),
    /// Drain, wait, release, withdraw and deregister; resumable.
    Exit(cmd::operator::ExitArgs),
    /// Create the worker's keys (signing keystore and encryption key) in <data-dir>/keys.
    Keygen(cmd::keys::KeygenArgs),
    /// List, archive or recover the worker's key sets.
    Keys(cmd::keys::KeysArgs),
    /// Register the worker (stake, encryption key) and add its models; idempotent.
    Register(cmd::register::RegisterArgs),
    /// Add models the worker serves.
    AddModels(cmd::register::AddModelsArgs),
    /// Remove models the worker serves.
    RemoveModels(cmd::register::ModelsArgs),
    /// Add LCAI to the worker's stake.
    TopUpStake(cmd::register::TopUpArgs),
    /// Lift a suspension whose cooldown has ended.
    Reinstate(cmd::register::OpArgs),
    /// Registration, stake, suspension, models, key match, jobs and balances.
    Status(cmd::register::StatusArgs),
    /// Read-only go-live checks (chain, registration, stake, gas money, keys, models, LLM, blobs).
    Preflight(cmd::preflight::PreflightArgs),
    /// Time the full local job path per model against the on-chain deadlines.
    Speedtest(cmd::speedtest::SpeedtestArgs),
    /// Serve the GraphQL API and the dashboard over a store (read-only).
    Serve(cmd::serve::ServeArgs),
    /// Index, serve the API, and (with --keeper, --worker, --work) settle and serve jobs, in one process.
    Run(cmd::serve::RunArgs),
    /// Run the whole product on a local devnet until Ctrl-C: lcw run with our worker, traffic, reorgs.
    #[command(long_about = cmd::demo::LONG_ABOUT)]
    Demo(cmd::demo::DemoArgs),
    /// Install, remove, inspect or follow lcw run as a systemd service.
    #[command(subcommand)]
    Service(cmd::service::ServiceCommand),
}

fn main() -> std::process::ExitCode {
    // TLS for https RPC URLs uses rustls with ring (no aws-lc build on 2 cores).
    lcw_schema::ensure_tls();
    init_tracing();
    let cli = parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Devnet(args) => cmd::devnet::run(args, cli.data).await,
            Command::Deploy(args) => cmd::deploy::run(args).await,
            Command::Simulate(args) => cmd::simulate::run(args, cli.data).await,
            Command::Index(args) => cmd::index::run(args, cli.data).await,
            Command::Serve(args) => cmd::serve::serve(args, cli.data).await,
            Command::Run(args) => cmd::serve::run(args, cli.data).await,
            Command::Demo(args) => cmd::demo::run(args, cli.data).await,
            Command::Replay(args) => cmd::replay::run(args, cli.data).await,
            Command::Verify(args) => cmd::verify::run(args, cli.data).await,
            Command::Replicate(args) => cmd::replicate::run(args, cli.data).await,
            Command::Settle(args) => cmd::settle::run(args, cli.data).await,
            Command::Work(args) => cmd::work::run(args, cli.data).await,
            Command::Release(args) => cmd::settle::release(args, cli.data).await,
            Command::ExitPlan(args) => cmd::operator::plan(args, cli.data).await,
            Command::Balance(args) => cmd::operator::balance(args, cli.data).await,
            Command::Drain(args) => cmd::operator::drain(args, cli.data, true).await,
            Command::Undrain(args) => cmd::operator::drain(args, cli.data, false).await,
            Command::Withdraw(args) => cmd::operator::withdraw(args, cli.data).await,
            Command::Sweep(args) => cmd::sweep::run(args, cli.data).await,
            Command::ClearStuck(args) => cmd::operator::clear_stuck(args, cli.data).await,
            Command::Deregister(args) => cmd::operator::deregister(args, cli.data).await,
            Command::Exit(args) => cmd::operator::exit(args, cli.data).await,
            Command::Keygen(args) => cmd::keys::keygen(args, cli.data).await,
            Command::Keys(args) => cmd::keys::keys(args, cli.data).await,
            Command::Register(args) => cmd::register::register(args, cli.data).await,
            Command::AddModels(args) => cmd::register::add_models(args, cli.data).await,
            Command::RemoveModels(args) => cmd::register::remove_models(args, cli.data).await,
            Command::TopUpStake(args) => cmd::register::top_up_stake(args, cli.data).await,
            Command::Reinstate(args) => cmd::register::reinstate(args, cli.data).await,
            Command::Status(args) => cmd::register::status(args, cli.data).await,
            Command::Preflight(args) => cmd::preflight::run(args, cli.data).await,
            Command::Speedtest(args) => cmd::speedtest::run(args, cli.data).await,
            Command::Service(command) => cmd::service::run(command, cli.data),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Errors that embed their source's text (`cannot read ...: No such file`) would
            // print it twice: a cause already shown is skipped.
            // Every URL is redacted on the way out: a node's URL may carry an API key, and not
            // every library keeps it out of its error text.
            let mut shown = redact_urls(&e.to_string());
            eprintln!("error: {shown}");
            for cause in e.chain().skip(1).map(|c| redact_urls(&c.to_string())) {
                if !shown.contains(&cause) {
                    eprintln!("  caused by: {cause}");
                    shown.push('\n');
                    shown.push_str(&cause);
                }
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// The command line. `--help` shows which variable each flag reads (`[env: RPC_URL]`) but never its
/// value: node URLs carry API keys, and a help text gets pasted into bug reports. Set on every
/// argument of every subcommand here, so that no flag added later can forget it.
fn parse() -> Cli {
    fn hide(cmd: clap::Command) -> clap::Command {
        cmd.mut_args(|a| a.hide_env_values(true)).mut_subcommands(hide)
    }
    let matches = hide(Cli::command()).get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// A log line on its way to stderr: written whole when the event is formatted, every URL in it
/// redacted (a library's message, an error or a span field may quote a node's URL, API key
/// included).
struct RedactedLine(Vec<u8>);

impl std::io::Write for RedactedLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactedLine {
    fn drop(&mut self) {
        let line = redact_urls(&String::from_utf8_lossy(&self.0));
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
    }
}

/// Logs go to stderr, URLs redacted; `LCW_LOG` (or `RUST_LOG`) filters, `LCW_LOG_FORMAT=json`
/// switches format.
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let mut filter = EnvFilter::try_from_env("LCW_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info,refinery_core=warn,alloy_pubsub=warn"));
    // alloy's HTTP transport puts the whole RPC URL, API key included, on its debug span, and
    // logs nothing else under that target: it is off whatever the user asked for.
    if let Ok(off) = "alloy_transport_http=off".parse() {
        filter = filter.add_directive(off);
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(|| RedactedLine(Vec::new()));
    if std::env::var("LCW_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// A future that resolves on Ctrl-C or SIGTERM. The handlers are installed by this call, not
/// when the future is first polled: a command calls it before it prints that it is up, so a
/// signal sent the moment that line is read stops it cleanly instead of killing it.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let int = signal(SignalKind::interrupt());
        let term = signal(SignalKind::terminate());
        async move {
            match (int, term) {
                (Ok(mut int), Ok(mut term)) => {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                (Ok(mut one), Err(_)) | (Err(_), Ok(mut one)) => {
                    one.recv().await;
                }
                (Err(_), Err(_)) => std::future::pending::<()>().await,
            }
        }
    }
    #[cfg(not(unix))]
    {
        async move {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// A stop flag that turns true on Ctrl-C or SIGTERM, after logging `stopping` (when not empty).
/// The handlers are installed before this returns.
pub(crate) fn stop_on_signal(stopping: &'static str) -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let signal = shutdown_signal();
    tokio::spawn(async move {
        signal.await;
        if !stopping.is_empty() {
            tracing::info!("{stopping}");
        }
        let _ = tx.send(true);
    });
    rx
}
