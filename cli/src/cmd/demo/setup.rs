//! The demo's settings, validated once, and its directory: emptied at each start (only when it
//! is an earlier demo's), with a password for its keystore.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::primitives::Address;
use anyhow::{Context, bail};

use super::DemoArgs;
use super::procs::Spec;
use crate::args::DataArgs;

/// The file that marks a directory as the demo's (it is emptied at each start).
pub(super) const MARKER: &str = ".lcw-demo";
/// What a plain `lcw devnet` leaves in a data dir: a directory holding only these may be taken.
const DEVNET_LEFTOVERS: [&str; 8] = [
    "devnet.json",
    "devnet.out",
    "devnet.err",
    "anvil.log",
    "anvil-accounts.json",
    "lcw.db",
    "lcw.db-wal",
    "lcw.db-shm",
];
/// The demo's validated settings.
#[derive(Debug)]
pub(super) struct Settings {
    /// This binary, which every child runs.
    pub(super) lcw: PathBuf,
    /// How the user called it, for the commands printed.
    pub(super) called_as: String,
    pub(super) dir: PathBuf,
    pub(super) listen: SocketAddr,
    pub(super) reorg_every: Option<Duration>,
    pub(super) args: DemoArgs,
}

impl Settings {
    pub(super) fn new(args: DemoArgs, data: &DataArgs) -> anyhow::Result<Settings> {
        if !(args.rate > 0.0 && args.rate <= 50.0) {
            bail!("--rate {} is out of range: give jobs per second between 0.01 and 50", args.rate);
        }
        if !(1..=12).contains(&args.workers) {
            bail!(
                "--workers {} is out of range: the devnet has keys for 1 to 12 simulated workers (the traffic needs \
                 at least one)",
                args.workers
            );
        }
        for (flag, v) in [
            ("--block-time", args.block_time),
            ("--ack-timeout", args.ack_timeout),
            ("--completion-timeout", args.completion_timeout),
            ("--dispute-window", args.dispute_window),
            ("--resolution-timeout", args.resolution_timeout),
        ] {
            if v == 0 {
                bail!("{flag} must be at least 1 second");
            }
        }
        if args.model.trim().is_empty() {
            bail!("--model must name a model");
        }
        let lcw = std::env::current_exe().context("finding the lcw binary")?;
        let called_as = std::env::args().next().filter(|a| !a.is_empty()).unwrap_or_else(|| "lcw".into());
        let dir = args.dir.clone().unwrap_or_else(|| data.data_dir.join("demo"));
        let listen = listen_address(args.listen)?;
        let reorg_every = (args.reorg_every > 0).then(|| Duration::from_secs(args.reorg_every));
        Ok(Settings { lcw, called_as, dir, listen, reorg_every, args })
    }

    pub(super) fn log(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{name}.log"))
    }

    pub(super) fn network(&self) -> PathBuf {
        self.dir.join("devnet.json")
    }

    pub(super) fn password(&self) -> PathBuf {
        self.dir.join("password")
    }

    pub(super) fn keystore(&self) -> PathBuf {
        self.dir.join("keys/signing.json")
    }

    /// An lcw child on the demo's directory.
    pub(super) fn lcw(&self, name: &'static str, log: &str, args: &[&str]) -> Spec<'_> {
        let mut all = vec!["--data-dir".to_owned(), self.dir.to_string_lossy().into_owned()];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        Spec { name, program: &self.lcw, args: all, env: Vec::new(), log: self.log(log) }
    }
}

/// The API's address: the one asked for (loopback only; port 0 picks one), else 127.0.0.1:8080
/// when free, else a free port.
fn listen_address(asked: Option<SocketAddr>) -> anyhow::Result<SocketAddr> {
    let free = |ip| TcpListener::bind((ip, 0)).and_then(|l| l.local_addr()).context("finding a free port");
    match asked {
        Some(a) if !a.ip().is_loopback() => {
            bail!("--listen {a}: the demo serves its API on this machine only; give 127.0.0.1:PORT")
        }
        Some(a) if a.port() == 0 => free(a.ip()),
        Some(a) => match TcpListener::bind(a) {
            Ok(_) => Ok(a),
            Err(e) => bail!("--listen {a} is not free ({e}); pick another port, or 127.0.0.1:0 for any free one"),
        },
        None => {
            let default: SocketAddr = ([127, 0, 0, 1], 8080).into();
            if TcpListener::bind(default).is_ok() { Ok(default) } else { free(default.ip()) }
        }
    }
}

/// Empties the demo's directory (refusing one that holds anything but an earlier demo or devnet)
/// and marks it.
pub(super) fn prepare(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        let entries: Vec<String> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let ours = entries.iter().any(|e| e == MARKER);
        let leftovers = entries.iter().all(|e| DEVNET_LEFTOVERS.contains(&e.as_str()));
        if !ours && !leftovers {
            bail!(
                "{} is not empty and is not an earlier demo's directory (it holds {}); the demo empties its \
                 directory at each start, so pass --dir with a new or empty one",
                dir.display(),
                entries.join(", ")
            );
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir.join("logs")).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join(MARKER), "lcw demo: emptied at each start\n")?;
    Ok(())
}

/// A password for the demo's keystore, readable by the user only.
pub(super) fn write_password(path: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let secret = alloy::signers::local::PrivateKeySigner::random();
    let text = alloy::primitives::hex::encode(secret.to_bytes());
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{text}")?;
    Ok(())
}

/// The address of a keystore (geth v3 JSON).
pub(super) fn keystore_address(path: &Path) -> anyhow::Result<Address> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))?;
    let address = json.get("address").and_then(|a| a.as_str()).context("the keystore names no address")?;
    crate::args::parse_address(&format!("0x{}", address.trim_start_matches("0x")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_is_taken_only_when_empty_or_an_earlier_demos() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("demo");
        prepare(&dir).unwrap();
        std::fs::write(dir.join("lcw.db"), "x").unwrap();
        prepare(&dir).unwrap();
        assert!(!dir.join("lcw.db").exists(), "emptied");
        assert!(dir.join(MARKER).exists() && dir.join("logs").is_dir());

        let devnet = tmp.path().join("devnet");
        std::fs::create_dir_all(&devnet).unwrap();
        std::fs::write(devnet.join("devnet.json"), "{}").unwrap();
        prepare(&devnet).unwrap();

        let precious = tmp.path().join("precious");
        std::fs::create_dir_all(precious.join("keys")).unwrap();
        std::fs::write(precious.join("lcw.db"), "x").unwrap();
        let e = prepare(&precious).unwrap_err().to_string();
        assert!(e.contains("is not an earlier demo's directory") && e.contains("--dir"), "{e}");
        assert!(precious.join("lcw.db").exists(), "left alone");
    }

    #[test]
    fn the_api_listens_on_this_machine_only() {
        let e = listen_address(Some("0.0.0.0:8080".parse().unwrap())).unwrap_err().to_string();
        assert!(e.contains("127.0.0.1:PORT"), "{e}");
        let any = listen_address(Some("127.0.0.1:0".parse().unwrap())).unwrap();
        assert!(any.port() != 0);
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let e = listen_address(Some(taken.local_addr().unwrap())).unwrap_err().to_string();
        assert!(e.contains("is not free"), "{e}");
        assert!(listen_address(None).unwrap().ip().is_loopback());
    }
}
