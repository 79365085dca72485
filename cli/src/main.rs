//! `lcw`: one binary for the LightChain AI worker operator: devnet, indexer, settler, worker,
//! GraphQL API and the operator verbs. Commands are thin: they parse flags into validated values
//! and call the libraries.

mod args;
mod cmd;

use clap::{Parser, Subcommand};

use crate::args::DataArgs;

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
    /// Check the store against the chain.
    Verify(cmd::verify::VerifyArgs),
}

fn main() -> std::process::ExitCode {
    // TLS for https RPC URLs uses rustls with ring (no aws-lc build on 2 cores).
    lcw_schema::ensure_tls();
    init_tracing();
    let cli = Cli::parse();
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
            Command::Replay(args) => cmd::replay::run(args, cli.data).await,
            Command::Verify(args) => cmd::verify::run(args, cli.data).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr; `LCW_LOG` (or `RUST_LOG`) filters, `LCW_LOG_FORMAT=json` switches format.
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("LCW_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info,refinery_core=warn,alloy_pubsub=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("LCW_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
