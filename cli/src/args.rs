//! Argument groups shared by several commands, parsed once into validated values.

use std::path::PathBuf;

use alloy::primitives::Address;
use anyhow::{Context, bail};
use clap::Args;
use lcw_schema::profile::{Contracts, Profile};

/// Where lcw keeps its files.
#[derive(Debug, Clone, Args)]
pub(crate) struct DataArgs {
    /// Data directory: the store (lcw.db), keys, the devnet profile.
    #[arg(long, env = "LCW_DATA_DIR", default_value = "./lcw-data", global = true)]
    pub data_dir: PathBuf,
}

/// Which store file to use.
#[derive(Debug, Clone, Args)]
pub(crate) struct StoreArgs {
    /// The store (default: <data-dir>/lcw.db).
    #[arg(long, env = "LCW_DB")]
    pub db: Option<PathBuf>,
}

impl StoreArgs {
    /// The store path.
    pub(crate) fn path(&self, data: &DataArgs) -> PathBuf {
        self.db.clone().unwrap_or_else(|| data.data_dir.join("lcw.db"))
    }
}

/// A URL that may carry a password (`postgres://user:password@host/db`): kept as given for the
/// client, shown only redacted, in `Debug` as everywhere. Parsing never fails here, so that clap
/// never quotes the value in an error; the command parses it and reports it redacted.
#[derive(Clone)]
pub(crate) struct SecretUrl(String);

impl SecretUrl {
    /// The URL as given, for the client only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for SecretUrl {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(SecretUrl(s.to_owned()))
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&lcw_replica::url::redact(&self.0))
    }
}

/// ` --network NAME` for a command line printed for the operator; nothing for the devnet.
pub(crate) fn network_flag(network: &str) -> String {
    if network == "devnet" { String::new() } else { format!(" --network {network}") }
}

/// Which network to talk to. `--network` takes `devnet` (the profile `lcw devnet` wrote in the
/// data dir), `testnet`, `mainnet` or a profile file; the official worker's variables override it.
#[derive(Debug, Clone, Args)]
pub(crate) struct NetworkArgs {
    /// Network: devnet | testnet | mainnet | path to a profile JSON file.
    #[arg(long, env = "LCW_NETWORK", default_value = "devnet")]
    pub network: String,
    /// JSON-RPC URL overriding the profile's (official worker: RPC_URL).
    #[arg(long, env = "RPC_URL", hide_env_values = true)]
    pub rpc_url: Option<String>,
    /// Chain id the RPC must answer (official worker: CHAIN_ID).
    #[arg(long, env = "CHAIN_ID")]
    pub chain_id: Option<u64>,
    /// JobRegistry address override (official worker: JOB_REGISTRY_ADDRESS).
    #[arg(long, env = "JOB_REGISTRY_ADDRESS")]
    pub job_registry: Option<String>,
    /// WorkerRegistry address override (official worker: WORKER_REGISTRY_ADDRESS).
    #[arg(long, env = "WORKER_REGISTRY_ADDRESS")]
    pub worker_registry: Option<String>,
    /// AIConfig address override (official worker: AI_CONFIG_ADDRESS).
    #[arg(long, env = "AI_CONFIG_ADDRESS")]
    pub ai_config: Option<String>,
    /// Beacon API URL override (official worker: BEACON_API_URL).
    #[arg(long, env = "BEACON_API_URL", hide_env_values = true)]
    pub beacon_url: Option<String>,
    /// Worker-gateway URL override: sign-in, heartbeats, drain and the response stream go
    /// through it (official worker: WORKER_GATEWAY_URL). `none` turns the preset's off.
    #[arg(long, env = "WORKER_GATEWAY_URL", hide_env_values = true)]
    pub gateway_url: Option<String>,
}

impl NetworkArgs {
    /// What a command line printed for the operator adds for this network: ` --network NAME`,
    /// nothing on the devnet (the default).
    pub(crate) fn flag(&self) -> String {
        network_flag(&self.network)
    }

    /// Resolves the profile and applies overrides.
    pub(crate) fn profile(&self, data: &DataArgs) -> anyhow::Result<Profile> {
        let mut profile = if self.network == "devnet"
            && self.rpc_url.is_some()
            && self.job_registry.is_some()
            && self.worker_registry.is_some()
            && self.ai_config.is_some()
            && !data.data_dir.join("devnet.json").exists()
        {
            // Everything given by variables, as the official worker is configured.
            Profile {
                name: "env".into(),
                chain_id: self.chain_id.unwrap_or(0),
                rpc_url: String::new(),
                rpc_fallback_urls: Vec::new(),
                ws_url: None,
                beacon_url: None,
                gateway_url: None,
                start_block: 0,
                contracts: Contracts {
                    worker_registry: Address::ZERO,
                    job_registry: Address::ZERO,
                    ai_config: Address::ZERO,
                },
                accounts: Vec::new(),
            }
        } else {
            Profile::resolve(&self.network, &data.data_dir)?
        };
        if let Some(url) = &self.rpc_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!("--rpc-url / RPC_URL `{url}` must start with http:// or https://");
            }
            profile.rpc_url = url.clone();
        }
        if let Some(url) = &self.beacon_url {
            profile.beacon_url = Some(url.clone());
        }
        match self.gateway_url.as_deref().map(str::trim) {
            Some("" | "none" | "off") => profile.gateway_url = None,
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                profile.gateway_url = Some(url.trim_end_matches('/').to_owned())
            }
            Some(url) => bail!(
                "--gateway-url / WORKER_GATEWAY_URL `{}` must start with http:// or https:// (or be `none`)",
                lcw_schema::profile::redact_url(url)
            ),
            None => {}
        }
        let addr = |name: &str, v: &str| -> anyhow::Result<Address> {
            parse_address(v).with_context(|| format!("{name} override"))
        };
        if let Some(v) = &self.job_registry {
            profile.contracts.job_registry = addr("JOB_REGISTRY_ADDRESS", v)?;
        }
        if let Some(v) = &self.worker_registry {
            profile.contracts.worker_registry = addr("WORKER_REGISTRY_ADDRESS", v)?;
        }
        if let Some(v) = &self.ai_config {
            profile.contracts.ai_config = addr("AI_CONFIG_ADDRESS", v)?;
        }
        if let Some(id) = self.chain_id {
            if profile.name != "env" && id != profile.chain_id {
                bail!(
                    "CHAIN_ID / --chain-id says {id} but the `{}` profile is for chain {}; unset one of them",
                    profile.name,
                    profile.chain_id
                );
            }
            profile.chain_id = id;
        }
        if profile.chain_id == 0 {
            bail!("CHAIN_ID is required when the network comes from RPC_URL and the *_ADDRESS variables");
        }
        Ok(profile)
    }
}

/// The signing key: a keystore, or on a devnet the profile's dev key for the account.
#[derive(Debug, Clone, Args)]
pub(crate) struct KeyArgs {
    /// Encrypted keystore (geth v3 JSON) of the signing key (official worker: WORKER_KEYSTORE_PATH).
    #[arg(long, env = "WORKER_KEYSTORE_PATH")]
    pub key: Option<PathBuf>,
    /// File whose first line is the keystore password (else LCW_PASSWORD).
    #[arg(long, env = "LCW_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// The most this key pays.
    #[command(flatten)]
    pub fees: FeeArgs,
}

/// The operator's fee ceiling: no transaction of the key ever offers more, whatever the market
/// does. Each transaction is further bounded by what it is worth (docs/src/keeper.md, "Fees").
#[derive(Debug, Clone, Args)]
pub(crate) struct FeeArgs {
    /// Ceiling of maxFeePerGas, in wei or with a unit (`100gwei`). A transaction priced out by
    /// the market waits at the ceiling instead of paying more (official worker: MAX_GAS_PRICE).
    #[arg(long, env = "MAX_GAS_PRICE", default_value = "100gwei", value_parser = parse_fee, value_name = "FEE")]
    pub max_fee_per_gas: u128,
    /// Ceiling of maxFeePerBlobGas for completions, in wei or with a unit (`100gwei`).
    #[arg(long, env = "MAX_BLOB_GAS_PRICE", default_value = "100gwei", value_parser = parse_fee, value_name = "FEE")]
    pub max_fee_per_blob_gas: u128,
}

impl FeeArgs {
    /// The ceiling.
    pub(crate) fn cap(&self) -> lcw_chain::FeeCap {
        lcw_chain::FeeCap::new(self.max_fee_per_gas, self.max_fee_per_blob_gas)
    }
}

fn parse_fee(text: &str) -> Result<u128, String> {
    let fee = lcw_chain::fees::parse_fee(text)?;
    if fee == 0 {
        return Err("a ceiling of 0 would never let a transaction in; give at least the network's base fee".into());
    }
    Ok(fee)
}

impl KeyArgs {
    /// The signer: the keystore when given, else the devnet profile's key for `account` (or for
    /// `role` when no account is named).
    pub(crate) fn signer(
        &self,
        profile: &Profile,
        account: Option<Address>,
        role: Option<lcw_schema::profile::Role>,
    ) -> anyhow::Result<alloy::signers::local::PrivateKeySigner> {
        if let Some(path) = &self.key {
            let password = lcw_chain::keys::password(self.password_file.as_deref())?;
            let signer = lcw_chain::keys::load_keystore(path, &password)?;
            return Ok(signer);
        }
        let dev = profile
            .accounts
            .iter()
            .find(|a| match (account, role) {
                (Some(addr), _) => a.address == addr,
                (None, Some(r)) => a.role == r,
                (None, None) => false,
            })
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "a signing key is needed: pass --key KEYSTORE (password in --password-file or LCW_PASSWORD){}",
                    if profile.accounts.is_empty() { "" } else { "; the devnet profile has no key for this account" }
                )
            })?;
        Ok(alloy::signers::local::PrivateKeySigner::from_bytes(&dev.private_key)?)
    }
}

/// Parses a comma-separated list of job ids.
pub(crate) fn parse_job_ids(input: &str) -> anyhow::Result<Vec<u64>> {
    input
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u64>().map_err(|_| anyhow::anyhow!("`{s}` is not a job id (expected a positive integer)")))
        .collect()
}

/// Parses a boolean the way the official worker does: true/false, 1/0, yes/no, on/off.
pub(crate) fn parse_bool(input: &str) -> Result<bool, String> {
    match input.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        other => Err(format!("`{other}` is not a boolean: use true/false, 1/0, yes/no or on/off")),
    }
}

/// Parses a 0x-prefixed 20-byte address with a clear error (any case accepted).
pub(crate) fn parse_address(input: &str) -> anyhow::Result<Address> {
    let s = input.trim();
    if !s.starts_with("0x") || s.len() != 42 || !s[2..].chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("`{s}` is not an address: expected 0x followed by 40 hex digits");
    }
    s.parse::<Address>().map_err(|e| anyhow::anyhow!("`{s}` is not an address: {e}"))
}

/// The memory the served models must fit in together (each stays loaded).
#[derive(Debug, Clone, Args)]
pub(crate) struct FitArgs {
    /// Memory the served models may fill together: `8GiB`, `512MiB`, or bytes (default: the
    /// machine's MemTotal, or the cgroup's limit when lower). Give it when the LLM server runs on
    /// another machine, or to keep memory for other work.
    #[arg(long, env = "LCW_MEMORY_LIMIT", value_parser = lcw_worker::fit::parse_size, value_name = "SIZE")]
    pub memory_limit: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_read_as_the_official_worker_reads_them() {
        for t in ["true", "1", "yes", "on", "TRUE", " On "] {
            assert_eq!(parse_bool(t), Ok(true), "{t}");
        }
        for f in ["false", "0", "no", "off"] {
            assert_eq!(parse_bool(f), Ok(false), "{f}");
        }
        assert!(parse_bool("maybe").unwrap_err().contains("yes/no"));
    }

    #[test]
    fn addresses_are_validated_with_reasons() {
        assert!(parse_address("0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266").is_ok());
        assert!(parse_address("0xF39FD6E51AAD88F6F4CE6AB8827279CFFFB92266").is_ok());
        let e = parse_address("f39fd6e51aad88f6f4ce6ab8827279cfffb92266").unwrap_err().to_string();
        assert!(e.contains("40 hex digits"), "{e}");
        assert!(parse_address("0x1234").is_err());
        assert!(parse_address("0xzz9fd6e51aad88f6f4ce6ab8827279cfffb92266").is_err());
    }
}
