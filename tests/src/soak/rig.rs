//! Everything the soak runs: a devnet with windows short enough for jobs to cycle in minutes, the
//! real LLM server behind a gate, one fault-injecting RPC proxy per lcw process (and one for the
//! simulator, which holds back the simulator's keeper so that lcw's keeper is the one that acts
//! first), the simulated workers and lcw's own worker registered, and the two lcw processes.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::providers::ext::AnvilApi;
use alloy::providers::{DynProvider, Provider};
use anyhow::Context;
use lcw_schema::bindings::AIConfig;
use lcw_schema::profile::{Profile, Role};
use lcw_schema::suite::Suite;
use lcw_tests::TestNet;
use lcw_tests::gate::SlowGate;
use lcw_tests::llm::{LlmServer, MODEL};
use lcw_tests::proxy::{Faults, FlakyProxy, TxFaults};

use super::procs::{Proc, free_port};
use super::{Config, say};

/// The devnet's governance windows (seconds): short, so that jobs cycle within minutes.
pub(crate) const ACK_TIMEOUT: u64 = 20;
/// Seconds an acknowledged job has to complete.
pub(crate) const COMPLETION_TIMEOUT: u64 = 60;
/// Seconds after completion before a job is releasable.
pub(crate) const DISPUTE_WINDOW: u64 = 20;
/// Seconds the disputer has before a dispute defaults.
pub(crate) const RESOLUTION_TIMEOUT: u64 = 20;
/// Workers the simulator drives (dev worker accounts 0..SIM_WORKERS).
const SIM_WORKERS: usize = 3;
/// The password of the soak's keystores.
const PASSWORD: &str = "soak-password";
/// How long the simulator's keeper transactions are held back: a slower keeper on the same
/// network, so that lcw's keeper is first whenever it is up.
pub(crate) const SIM_KEEPER_DELAY: Duration = Duration::from_secs(8);

/// The running soak rig, shared by the fault injector, the traffic and the checks.
#[derive(Debug)]
pub(crate) struct Rig {
    /// The devnet (anvil stops when it is dropped).
    pub(crate) net: TestNet,
    /// A provider straight to anvil (no faults).
    pub(crate) anvil: DynProvider,
    /// The real LLM server.
    pub(crate) llm: Mutex<LlmServer>,
    /// The gate in front of it (lcw's worker talks to the gate).
    pub(crate) gate: tokio::sync::Mutex<SlowGate>,
    /// The keeper process's RPC.
    pub(crate) keeper_rpc: FlakyProxy,
    /// The worker process's RPC.
    pub(crate) worker_rpc: FlakyProxy,
    /// The simulator's RPC (holds its keeper's transactions).
    pub(crate) sim_rpc: FlakyProxy,
    /// `lcw run --keeper`.
    pub(crate) keeper: Mutex<Proc>,
    /// `lcw run --work`.
    pub(crate) worker: Mutex<Proc>,
    /// lcw's keeper key.
    pub(crate) keeper_addr: Address,
    /// lcw's worker key.
    pub(crate) worker_addr: Address,
    /// The keeper's store.
    pub(crate) keeper_db: PathBuf,
    /// The worker's store.
    pub(crate) worker_db: PathBuf,
    /// API ports of the keeper and the worker.
    pub(crate) api_ports: (u16, u16),
    /// The simulator's profile (its RPC is the simulator's proxy).
    pub(crate) sim_profile: PathBuf,
    /// The soak's directory.
    pub(crate) dir: PathBuf,
    /// The fee ceiling lcw runs with.
    pub(crate) max_fee_per_gas: u128,
    /// Wallets a low-balance episode emptied: the balance it put back once over (None while it
    /// runs). A reorg rolls anvil's state back, top-ups included, so it puts them back again.
    pub(crate) refills: Mutex<std::collections::HashMap<Address, Option<U256>>>,
}

impl Rig {
    /// Sets everything up and starts the lcw processes; returns once both serve `/readyz`.
    pub(crate) async fn start(config: &Config) -> anyhow::Result<Rig> {
        let dir = config.dir.clone();
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["devnet", "keeper", "worker", "logs"] {
            std::fs::create_dir_all(dir.join(sub)).with_context(|| format!("creating {}", dir.display()))?;
        }
        let devnet_dir = dir.join("devnet");
        let net = TestNet::start_with(move |o| {
            o.data_dir = devnet_dir;
            o.block_time = 1;
            o.deploy.ack_timeout = ACK_TIMEOUT;
            o.deploy.completion_timeout = COMPLETION_TIMEOUT;
            o.deploy.dispute_window = DISPUTE_WINDOW;
            o.deploy.resolution_timeout = RESOLUTION_TIMEOUT;
        })
        .await;
        let anvil = net.provider();
        let profile = net.profile().clone();
        say!(
            "devnet at {} (chain {}): 1 s blocks, ack {ACK_TIMEOUT} s, completion {COMPLETION_TIMEOUT} s, dispute \
             window {DISPUTE_WINDOW} s, resolution {RESOLUTION_TIMEOUT} s",
            profile.rpc_url,
            profile.chain_id
        );
        // Every outcome slashes someone; a worker suspended after three offences would stop the
        // traffic, so suspensions are taken out of the picture.
        let deployer = net.wallet(net.signer(Role::Deployer, 0));
        let ai = AIConfig::new(profile.contracts.ai_config, &deployer);
        lcw_tests::send!(ai.setSuspensionThreshold(U256::from(1u64 << 40)));

        let server = tokio::task::spawn_blocking(LlmServer::start).await.context("starting the LLM server")?;
        let gate = SlowGate::start(&server.url).await;
        say!("LLM server {} ({MODEL}) behind the gate {}", server.url, gate.url);

        let quiet = |seed| Faults { seed, ..Faults::default() };
        let keeper_rpc = FlakyProxy::start(&profile.rpc_url, quiet(config.seed ^ 1)).await;
        let worker_rpc = FlakyProxy::start(&profile.rpc_url, quiet(config.seed ^ 2)).await;
        let sim_rpc = FlakyProxy::start(&profile.rpc_url, quiet(config.seed ^ 3)).await;
        // Every transaction the node accepts from lcw, with the head then: how a revert is judged.
        keeper_rpc.record_accepted();
        worker_rpc.record_accepted();
        let sim_keeper = profile.account(Role::Keeper)?.address;
        sim_rpc.set_tx_faults(TxFaults {
            hold_from: vec![sim_keeper],
            hold_for: SIM_KEEPER_DELAY,
            ..TxFaults::default()
        });

        let mut sim_workers = Vec::new();
        let stake = U256::from(5_000u64) * U256::from(10u64).pow(U256::from(18u64));
        for i in 0..SIM_WORKERS {
            sim_workers
                .push(lcw_tests::parties::register_worker_with_stake(&net, i, Suite::P256AesGcm, stake).await.address);
        }

        let lcw = &config.lcw;
        let env = vec![("LCW_PASSWORD".to_owned(), PASSWORD.to_owned())];
        // The money path at debug (skips, refusals, bumps), so that a failed invariant can be
        // traced to the log line that explains it.
        let mut run_env = env.clone();
        run_env.push((
            "LCW_LOG".to_owned(),
            "info,refinery_core=warn,alloy_pubsub=warn,lcw_settler=debug,lcw_chain::outbox=debug,lcw_worker=debug"
                .to_owned(),
        ));
        run_env.push(("NO_COLOR".to_owned(), "1".to_owned()));
        let keeper_dir = dir.join("keeper");
        let worker_dir = dir.join("worker");
        let keeper_addr = keygen(lcw, &keeper_dir, &env)?;
        let worker_addr = keygen(lcw, &worker_dir, &env)?;
        let funds = U256::from(100_000u64) * U256::from(10u64).pow(U256::from(18u64));
        anvil.anvil_set_balance(keeper_addr, funds).await?;
        anvil.anvil_set_balance(worker_addr, funds).await?;
        let direct = net.devnet.profile_path.to_string_lossy().into_owned();
        run_once(
            lcw,
            &worker_dir,
            &env,
            &["register", "--network", &direct, "--models", MODEL, "--stake", "2000"],
            &dir.join("logs/register.log"),
        )?;
        say!(
            "lcw keeper {keeper_addr}, lcw worker {worker_addr} (registered, 2000 LCAI), simulated workers {sim_workers:?}"
        );

        let with_rpc = |rpc: &str, path: &Path| -> anyhow::Result<String> {
            let mut p: Profile = profile.clone();
            p.rpc_url = rpc.to_owned();
            p.ws_url = None;
            p.beacon_url = Some(rpc.to_owned());
            p.save(path).with_context(|| format!("writing {}", path.display()))?;
            Ok(path.to_string_lossy().into_owned())
        };
        let keeper_profile = with_rpc(&keeper_rpc.url, &keeper_dir.join("network.json"))?;
        let worker_profile = with_rpc(&worker_rpc.url, &worker_dir.join("network.json"))?;
        let sim_profile = dir.join("sim-network.json");
        with_rpc(&sim_rpc.url, &sim_profile)?;

        let api_ports = (free_port(), free_port());
        let fee = config.max_fee_per_gas.to_string();
        let data_dir = |d: &Path| d.to_string_lossy().into_owned();
        let keystore = keeper_dir.join("keys/signing.json").to_string_lossy().into_owned();
        let keeper_args: Vec<String> = [
            "--data-dir",
            &data_dir(&keeper_dir),
            "run",
            "--network",
            &keeper_profile,
            "--keeper",
            "--key",
            &keystore,
            "--max-fee-per-gas",
            &fee,
            "--listen",
            &format!("127.0.0.1:{}", api_ports.0),
        ]
        .map(str::to_owned)
        .to_vec();
        let gate_url = gate.url.clone();
        let num_predict = config.num_predict.to_string();
        let worker_args: Vec<String> = [
            "--data-dir",
            &data_dir(&worker_dir),
            "run",
            "--network",
            &worker_profile,
            "--work",
            "--llm-url",
            &gate_url,
            "--llm-api",
            "openai",
            "--models",
            MODEL,
            "--num-predict",
            &num_predict,
            "--llm-timeout",
            "30",
            "--max-fee-per-gas",
            &fee,
            "--listen",
            &format!("127.0.0.1:{}", api_ports.1),
        ]
        .map(str::to_owned)
        .to_vec();
        let mut keeper = Proc::new("keeper", lcw, keeper_args, run_env.clone(), dir.join("logs/keeper.log"));
        let mut worker = Proc::new("worker", lcw, worker_args, run_env, dir.join("logs/worker.log"));
        keeper.spawn()?;
        worker.spawn()?;
        let rig = Rig {
            net,
            anvil,
            llm: Mutex::new(server),
            gate: tokio::sync::Mutex::new(gate),
            keeper_rpc,
            worker_rpc,
            sim_rpc,
            keeper: Mutex::new(keeper),
            worker: Mutex::new(worker),
            keeper_addr,
            worker_addr,
            keeper_db: keeper_dir.join("lcw.db"),
            worker_db: worker_dir.join("lcw.db"),
            api_ports,
            sim_profile,
            refills: Mutex::default(),
            dir,
            max_fee_per_gas: config.max_fee_per_gas,
        };
        for (name, port) in [("keeper", rig.api_ports.0), ("worker", rig.api_ports.1)] {
            anyhow::ensure!(
                rig.ready(port, Duration::from_secs(180)).await,
                "lcw run ({name}) did not become ready within 180 s; see {}",
                rig.dir.join(format!("logs/{name}.log")).display()
            );
        }
        say!("lcw run --keeper (api :{}) and lcw run --work (api :{}) are ready", rig.api_ports.0, rig.api_ports.1);
        Ok(rig)
    }

    /// Waits until the process behind `port` answers `/readyz` with 200.
    pub(crate) async fn ready(&self, port: u16, timeout: Duration) -> bool {
        let http = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}/readyz");
        lcw_tests::wait_until(timeout, || {
            let req = http.get(&url).timeout(Duration::from_secs(2)).send();
            async move { req.await.is_ok_and(|r| r.status().is_success()) }
        })
        .await
    }

    /// The chain's head (straight from anvil).
    pub(crate) async fn head(&self) -> u64 {
        self.anvil.get_block_number().await.unwrap_or_default()
    }

    /// Whether `address` is one of lcw's keys.
    pub(crate) fn is_lcw(&self, address: Address) -> bool {
        address == self.keeper_addr || address == self.worker_addr
    }

    /// The managed process of `name` (`keeper` or `worker`).
    pub(crate) fn proc(&self, name: &str) -> &Mutex<Proc> {
        if name == "keeper" { &self.keeper } else { &self.worker }
    }
}

/// `lcw keygen` into `dir`; returns the signing key's address.
fn keygen(lcw: &Path, dir: &Path, env: &[(String, String)]) -> anyhow::Result<Address> {
    run_once(lcw, dir, env, &["keygen", "--suite", "p256"], &dir.join("keygen.log"))?;
    let keystore: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("keys/signing.json"))?)?;
    let address = keystore.get("address").and_then(|a| a.as_str()).context("the keystore has no address")?;
    Ok(format!("0x{}", address.trim_start_matches("0x")).parse()?)
}

/// Runs one lcw command to completion with `--data-dir dir`; its output goes to `log`.
fn run_once(lcw: &Path, dir: &Path, env: &[(String, String)], args: &[&str], log: &Path) -> anyhow::Result<()> {
    let out = std::fs::File::create(log)?;
    let status = std::process::Command::new(lcw)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(out.try_clone()?)
        .stderr(out)
        .status()
        .with_context(|| format!("running {}", lcw.display()))?;
    anyhow::ensure!(status.success(), "lcw {} failed ({status}):\n{}", args.join(" "), super::procs::tail(log, 20));
    Ok(())
}
