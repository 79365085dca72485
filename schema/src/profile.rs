//! Network profiles: which chain, how to reach it, and where the three contracts are.
//!
//! A profile is a JSON file (`lcw devnet` writes `<data-dir>/devnet.json`) or a built-in preset
//! (`testnet`, `mainnet`, with the real addresses from the upstream reference). Devnet profiles
//! also list the funded dev accounts and their roles. Private keys never appear in `Debug` output.

use std::fmt;
use std::path::{Path, PathBuf};

use alloy::primitives::{Address, B256, address};
use serde::{Deserialize, Serialize};

/// The role of a funded dev account in a devnet profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Deployed and owns the contracts (governance).
    Deployer,
    /// Signs session assignments (AIConfig dispatcher).
    Dispatcher,
    /// Resolves disputes (AIConfig disputer).
    Disputer,
    /// Opens sessions and submits jobs.
    Consumer,
    /// Runs a worker.
    Worker,
    /// Releases jobs and claims timeouts for bounties.
    Keeper,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Role::Deployer => "deployer",
            Role::Dispatcher => "dispatcher",
            Role::Disputer => "disputer",
            Role::Consumer => "consumer",
            Role::Worker => "worker",
            Role::Keeper => "keeper",
        };
        f.write_str(s)
    }
}

/// A funded dev account (devnet profiles only).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DevAccount {
    /// What the account is for.
    pub role: Role,
    /// Its address.
    pub address: Address,
    /// Its private key (a well-known anvil dev key; never a real one).
    pub private_key: B256,
}

impl fmt::Debug for DevAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevAccount")
            .field("role", &self.role)
            .field("address", &self.address)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// Addresses of the three watched contracts.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Contracts {
    /// WorkerRegistry.
    pub worker_registry: Address,
    /// JobRegistry.
    pub job_registry: Address,
    /// AIConfig.
    pub ai_config: Address,
}

impl Contracts {
    /// The three addresses, for log filters.
    pub fn all(&self) -> [Address; 3] {
        [self.worker_registry, self.job_registry, self.ai_config]
    }
}

/// A network profile.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Profile {
    /// A short name (`devnet`, `testnet`, ...).
    pub name: String,
    /// The chain id the RPC must answer.
    pub chain_id: u64,
    /// JSON-RPC over HTTP.
    pub rpc_url: String,
    /// Further JSON-RPC URLs used when the first fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rpc_fallback_urls: Vec<String>,
    /// JSON-RPC over WebSocket, for head subscriptions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ws_url: Option<String>,
    /// Beacon API, where blobs are read (anvil serves it on its RPC port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beacon_url: Option<String>,
    /// The worker gateway, if the network has one: sign-in, heartbeats, drain/undrain and the
    /// response stream (upstream WORKER_GATEWAY_URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_url: Option<String>,
    /// The first block with events of the watched contracts (where indexing starts).
    #[serde(default)]
    pub start_block: u64,
    /// Contract addresses.
    pub contracts: Contracts,
    /// Funded dev accounts (devnets only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<DevAccount>,
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Profile")
            .field("name", &self.name)
            .field("chain_id", &self.chain_id)
            .field("rpc_url", &redact_url(&self.rpc_url))
            .field("start_block", &self.start_block)
            .field("contracts", &self.contracts)
            .field("accounts", &self.accounts)
            .finish_non_exhaustive()
    }
}

/// Why a profile could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file could not be read.
    #[error("cannot read network profile {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid profile.
    #[error("network profile {path} is malformed at line {line}, column {column}: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Line of the error.
        line: usize,
        /// Column of the error.
        column: usize,
        /// What serde found wrong.
        message: String,
    },
    /// The file parses but its content is inconsistent.
    #[error("network profile {path} is invalid: {reason}")]
    Invalid {
        /// The file (or preset name).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The RPC answered with another chain id than the profile's.
    #[error(
        "network profile `{name}` is for chain {expected}, but the RPC at {url} answers chain {actual}; \
         use the profile written for that node (or start the devnet again)"
    )]
    WrongChain {
        /// Profile name.
        name: String,
        /// Chain id in the profile.
        expected: u64,
        /// Chain id the RPC reported.
        actual: u64,
        /// The RPC URL (credentials redacted).
        url: String,
    },
    /// A preset that cannot be used.
    #[error("{0}")]
    Preset(String),
    /// The profile has no account with a role a command needs.
    #[error("network profile `{name}` has no `{role}` account; devnet profiles written by `lcw devnet` list one")]
    NoAccount {
        /// Profile name.
        name: String,
        /// Missing role.
        role: Role,
    },
}

/// Result alias for profile operations.
pub type ProfileResult<T> = Result<T, ProfileError>;

impl Profile {
    /// LightChain mainnet (chain 9200): JobRegistry from the official worker's docs and SDK,
    /// AIConfig from the official chat app's configuration, WorkerRegistry the genesis predeploy;
    /// beacon and worker gateway from the official Hub app. The SessionManager is read from AIConfig.
    pub fn mainnet() -> Self {
        Profile {
            name: "mainnet".into(),
            chain_id: 9200,
            rpc_url: "https://rpc.mainnet.lightchain.ai".into(),
            rpc_fallback_urls: Vec::new(),
            ws_url: None,
            beacon_url: Some("https://beacon.mainnet.lightchain.ai".into()),
            gateway_url: Some("https://worker-gateway.mainnet.lightchain.ai".into()),
            start_block: 0,
            contracts: Contracts {
                worker_registry: address!("0x0000000000000000000000000000000000001002"),
                job_registry: address!("0xfB15F90298e4CcD7106E76fFB5e520315cC42B0b"),
                ai_config: address!("0x24D11533C354092ed6E18b964257819cE78Ce77D"),
            },
            accounts: Vec::new(),
        }
    }

    /// LightChain testnet (chain 8200): addresses from the official worker's install guide; the
    /// SessionManager (deployed in the 2026-07-14 upgrade) is read from AIConfig.
    pub fn testnet() -> Self {
        Profile {
            name: "testnet".into(),
            chain_id: 8200,
            rpc_url: "https://rpc.testnet.lightchain.ai".into(),
            rpc_fallback_urls: Vec::new(),
            ws_url: None,
            beacon_url: Some("https://beacon.testnet.lightchain.ai".into()),
            gateway_url: Some("https://worker-gateway.testnet.lightchain.ai".into()),
            start_block: 0,
            contracts: Contracts {
                worker_registry: address!("0x0000000000000000000000000000000000001002"),
                job_registry: address!("0x531b3A87c5D785441B9cF55b98169F20FD9056a7"),
                ai_config: address!("0xeCF4Ca5Ba6D97ae586993e170764a1E92231b67e"),
            },
            accounts: Vec::new(),
        }
    }

    /// Resolves `--network`: `testnet`, `mainnet`, `devnet` (the profile `lcw devnet` wrote in
    /// `data_dir`), or a path to a profile file.
    pub fn resolve(network: &str, data_dir: &Path) -> ProfileResult<Self> {
        match network {
            "testnet" => Ok(Self::testnet()),
            "mainnet" => Ok(Self::mainnet()),
            "devnet" => {
                let path = data_dir.join("devnet.json");
                if !path.exists() {
                    return Err(ProfileError::Preset(format!(
                        "no devnet profile at {}; start one with `lcw devnet --data-dir {}` (or pass --network FILE)",
                        path.display(),
                        data_dir.display()
                    )));
                }
                Self::load(&path)
            }
            file => Self::load(Path::new(file)),
        }
    }

    /// Loads and validates a profile file.
    pub fn load(path: &Path) -> ProfileResult<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ProfileError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    /// Parses and validates profile JSON; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> ProfileResult<Self> {
        let profile: Profile = serde_json::from_str(text).map_err(|e| ProfileError::Malformed {
            path: path.to_owned(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        profile.validate().map_err(|reason| ProfileError::Invalid { path: path.to_owned(), reason })?;
        Ok(profile)
    }

    /// Writes the profile as pretty JSON, mode 0600 from the moment the file exists (devnet
    /// profiles hold dev keys, and an operator's may list real ones): a scratch file of a fresh
    /// name is created with that mode, never through a link, then renamed over `path`.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)? + "\n";
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("profile");
        let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        // A scratch file left by a crashed run of this process id is stale.
        let _ = std::fs::remove_file(&tmp);
        let written = options.open(&tmp).and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        });
        let placed = written.and_then(|()| std::fs::rename(&tmp, path));
        if placed.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        placed
    }

    fn validate(&self) -> Result<(), String> {
        if self.chain_id == 0 {
            return Err("chain_id must not be 0".into());
        }
        for url in std::iter::once(&self.rpc_url).chain(&self.rpc_fallback_urls) {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("rpc url `{}` must start with http:// or https://", redact_url(url)));
            }
        }
        if let Some(ws) = &self.ws_url
            && !(ws.starts_with("ws://") || ws.starts_with("wss://"))
        {
            return Err(format!("ws_url `{}` must start with ws:// or wss://", redact_url(ws)));
        }
        let c = &self.contracts;
        for (name, addr) in
            [("worker_registry", c.worker_registry), ("job_registry", c.job_registry), ("ai_config", c.ai_config)]
        {
            if addr == Address::ZERO {
                return Err(format!("contracts.{name} is the zero address"));
            }
        }
        for account in &self.accounts {
            let signer = alloy::signers::local::PrivateKeySigner::from_bytes(&account.private_key)
                .map_err(|_| format!("the {} account {} has an invalid private key", account.role, account.address))?;
            if signer.address() != account.address {
                return Err(format!(
                    "the {} account {} does not match its private key (which is for {})",
                    account.role,
                    account.address,
                    signer.address()
                ));
            }
        }
        Ok(())
    }

    /// Errors unless `actual` (from `eth_chainId`) is this profile's chain.
    pub fn check_chain_id(&self, actual: u64) -> ProfileResult<()> {
        if actual == self.chain_id {
            return Ok(());
        }
        Err(ProfileError::WrongChain {
            name: self.name.clone(),
            expected: self.chain_id,
            actual,
            url: redact_url(&self.rpc_url),
        })
    }

    /// Accounts with `role`, in profile order.
    pub fn accounts_with(&self, role: Role) -> impl Iterator<Item = &DevAccount> {
        self.accounts.iter().filter(move |a| a.role == role)
    }

    /// The first account with `role`.
    pub fn account(&self, role: Role) -> ProfileResult<&DevAccount> {
        self.accounts_with(role).next().ok_or(ProfileError::NoAccount { name: self.name.clone(), role })
    }
}

/// Hides what may be a credential in a URL: RPC URLs often embed API keys (in the user info,
/// the path or the query), and they must not reach logs, errors or the API. User info becomes
/// `***@`; the path and query of a remote node become `/…`. A loopback URL keeps its path unless
/// it has a query or a segment that looks like a key ([`key_like`]): a local proxy may carry the
/// provider's key in its path as well.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (host, path) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (host, hidden_user) = match host.rsplit_once('@') {
        Some((_, h)) => (h, true),
        None => (host, false),
    };
    // The host without its port; an IPv6 address is bracketed and full of colons.
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => host.split(':').next().unwrap_or(host),
    };
    let loopback = matches!(name, "127.0.0.1" | "localhost" | "::1");
    let opaque = path.contains(['?', '#']) || path.split('/').any(key_like);
    let path = if path.is_empty() || path == "/" || (loopback && !opaque) { path } else { "/…" };
    format!("{scheme}://{}{host}{path}", if hidden_user { "***@" } else { "" })
}

/// Whether a path segment may be a credential: long (`0123456789abcdef0123`, a UUID), or of
/// eight characters or more mixing letters and digits (`SECRETKEY123`). Words such as `v1`,
/// `chat`, `completions` or `rpc` are not.
fn key_like(segment: &str) -> bool {
    let mixed = segment.chars().any(|c| c.is_ascii_digit()) && segment.chars().any(|c| c.is_ascii_alphabetic());
    segment.len() >= 20 || (segment.len() >= 8 && mixed)
}

/// [`redact_url`] applied to every URL in `text` (an error message that may quote one, such as
/// reqwest's "error sending request for url (…)").
pub fn redact_urls(text: &str) -> String {
    const SCHEMES: [&str; 6] = ["https://", "http://", "wss://", "ws://", "postgresql://", "postgres://"];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = SCHEMES.iter().filter_map(|s| rest.find(s)).min() {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let end = tail.find(|c: char| c.is_whitespace() || "()<>\"'`[]{}".contains(c)).unwrap_or(tail.len());
        // Punctuation that ends a sentence is not part of the URL.
        let url = tail[..end].trim_end_matches(['.', ',', ';', ':']);
        out.push_str(&redact_url(url));
        rest = &tail[url.len()..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANVIL_KEY0: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

    fn sample() -> String {
        format!(
            r#"{{ "name": "devnet", "chain_id": 31337, "rpc_url": "http://127.0.0.1:8545",
              "ws_url": "ws://127.0.0.1:8545", "beacon_url": "http://127.0.0.1:8545", "start_block": 0,
              "contracts": {{ "worker_registry": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
                             "job_registry": "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512",
                             "ai_config": "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0" }},
              "accounts": [ {{ "role": "deployer", "address": "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
                              "private_key": "{ANVIL_KEY0}" }} ] }}"#
        )
    }

    #[test]
    fn parses_the_documented_format_and_round_trips() {
        let p = Profile::parse(&sample(), Path::new("devnet.json")).unwrap();
        assert_eq!(p.chain_id, 31337);
        assert_eq!(p.account(Role::Deployer).unwrap().address, address!("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"));
        let again = Profile::parse(&serde_json::to_string(&p).unwrap(), Path::new("x")).unwrap();
        assert_eq!(again, p);
    }

    #[test]
    fn malformed_profile_names_file_and_position() {
        let err = Profile::parse("{ \"name\": \"devnet\", ", Path::new("/tmp/p.json")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/tmp/p.json") && msg.contains("line 1"), "{msg}");
        let err = Profile::parse(&sample().replace("\"chain_id\": 31337", "\"chain_id\": \"x\""), Path::new("p"))
            .unwrap_err();
        assert!(matches!(err, ProfileError::Malformed { .. }), "{err}");
    }

    #[test]
    fn account_key_must_match_address() {
        let bad = sample()
            .replace("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266", "0x70997970C51812dc3A010C7d01b50e0d17dc79C8");
        let err = Profile::parse(&bad, Path::new("p")).unwrap_err().to_string();
        assert!(err.contains("does not match its private key"), "{err}");
    }

    #[test]
    fn wrong_chain_is_explained() {
        let p = Profile::parse(&sample(), Path::new("p")).unwrap();
        assert!(p.check_chain_id(31337).is_ok());
        let msg = p.check_chain_id(8200).unwrap_err().to_string();
        assert!(msg.contains("chain 31337") && msg.contains("chain 8200"), "{msg}");
    }

    #[test]
    fn debug_hides_keys_and_url_credentials() {
        let p = Profile::parse(&sample(), Path::new("p")).unwrap();
        assert!(!format!("{p:?}").contains("ac0974bec"));
        assert_eq!(
            redact_url("https://user:pw@rpc.example/v2/abcdefghijklmnopqrstuvwxyz"),
            "https://***@rpc.example/…"
        );
        assert_eq!(redact_url("http://127.0.0.1:8545"), "http://127.0.0.1:8545");
    }

    #[test]
    fn keys_in_paths_and_queries_are_hidden_wherever_a_url_appears() {
        // Remote nodes: the whole path and query, however short the key.
        assert_eq!(redact_url("https://eth.example/v2/SHORTKEY"), "https://eth.example/…");
        assert_eq!(redact_url("https://rpc.example/?apikey=abc"), "https://rpc.example/…");
        assert_eq!(redact_url("https://rpc.example?apikey=abc"), "https://rpc.example/…");
        assert_eq!(redact_url("https://rpc.example/"), "https://rpc.example/");
        // Loopback: the path stays (an LLM server's endpoint), a key in it does not.
        assert_eq!(
            redact_url("http://127.0.0.1:8080/v1/chat/completions"),
            "http://127.0.0.1:8080/v1/chat/completions"
        );
        assert_eq!(redact_url("http://localhost:1/v2/0123456789abcdef0123"), "http://localhost:1/…");
        assert_eq!(redact_url("http://127.0.0.1:1/v2/SECRETKEY123"), "http://127.0.0.1:1/…");
        assert_eq!(redact_url("http://127.0.0.1:8545/rpc"), "http://127.0.0.1:8545/rpc");
        assert_eq!(redact_url("http://127.0.0.1:1/x?key=1"), "http://127.0.0.1:1/…");
        assert_eq!(redact_url("http://[::1]/v1"), "http://[::1]/v1");
        assert_eq!(redact_url("http://[::1]:8080/v1"), "http://[::1]:8080/v1");
        // In text: reqwest quotes the URL in parentheses; sentence punctuation survives.
        let e = "eth_chainId: error sending request for url (https://u:pw@eth.example/v2/KEY123): refused. See http://127.0.0.1:8545.";
        assert_eq!(
            redact_urls(e),
            "eth_chainId: error sending request for url (https://***@eth.example/…): refused. See http://127.0.0.1:8545."
        );
        assert_eq!(redact_urls("no url here"), "no url here");
        assert_eq!(
            redact_urls("wss://node.example/ws/KEY and ws://127.0.0.1:8546"),
            "wss://node.example/… and ws://127.0.0.1:8546"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_saved_profile_is_private_from_creation_and_leaves_no_scratch_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("devnet.json");
        let p = Profile::parse(&sample(), Path::new("p")).unwrap();
        p.save(&path).unwrap();
        // Saved again over a world-readable file: the new file is 0600, not the old mode.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        p.save(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(Profile::load(&path).unwrap(), p);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("devnet.json")]);
    }

    #[test]
    fn presets_resolve() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Profile::resolve("testnet", dir.path()).unwrap().chain_id, 8200);
        let mainnet = Profile::resolve("mainnet", dir.path()).unwrap();
        assert_eq!(mainnet.chain_id, 9200);
        assert_eq!(mainnet.contracts.ai_config, address!("0x24D11533C354092ed6E18b964257819cE78Ce77D"));
        assert!(mainnet.gateway_url.as_deref().is_some_and(|g| g.contains("mainnet")));
        let msg = Profile::resolve("devnet", dir.path()).unwrap_err().to_string();
        assert!(msg.contains("lcw devnet"), "{msg}");
    }
}
