//! `lcw keygen` and `lcw keys list|archive|recover`: the worker's key directory
//! (`lcw_worker::keys`), and with `keys list --network`, what the chain holds for each key.

use std::path::PathBuf;

use alloy::primitives::B256;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use lcw_queries::KeySetInfo;
use lcw_queries::keysets::{OnChain, still_staked};
use lcw_schema::suite::Suite;
use lcw_worker::keys::{KeyDir, KeyEntry, fingerprint, utc};

use crate::args::{DataArgs, NetworkArgs};
use crate::cmd::register::{Registration, registration};

/// `lcw keygen`.
#[derive(Debug, Args)]
pub(crate) struct KeygenArgs {
    /// Encryption suite: p256 (p256-aesgcm, LightChain's wire format) or x25519 (devnet extension).
    #[arg(long, env = "LCW_SUITE", default_value = "p256", value_parser = parse_suite)]
    suite: Suite,
    /// Keep an existing signing key (64 hex digits, 0x optional) instead of generating one. The
    /// variable keeps the key out of the shell history.
    #[arg(long, env = "LCW_IMPORT_KEY", hide_env_values = true, value_parser = secret_arg, value_name = "HEX")]
    import_key: Option<SecretArg>,
    /// File whose first line is the password for both keys (else LCW_PASSWORD).
    #[arg(long, env = "LCW_PASSWORD_FILE")]
    password_file: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// `lcw keys`.
#[derive(Debug, Args)]
pub(crate) struct KeysArgs {
    #[command(subcommand)]
    action: KeysAction,
}

#[derive(Debug, Subcommand)]
enum KeysAction {
    /// The active key set and every archived one; with --network, what the chain holds for each.
    List(ListArgs),
    /// Move the active keys into keys/archive/ (never deleted), making room for `lcw keygen`.
    Archive(ArchiveArgs),
    /// Make an archived key set active again (the current one is archived first).
    Recover(RecoverArgs),
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Also read registration, stake and encryption key on this network (devnet | testnet |
    /// mainnet | profile file).
    #[arg(long, env = "LCW_NETWORK")]
    network: Option<String>,
    /// JSON-RPC URL overriding the profile's (official worker: RPC_URL).
    #[arg(long, env = "RPC_URL")]
    rpc_url: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ArchiveArgs {
    /// Why (kept in the archive's archive.json).
    #[arg(long, default_value = "archived with `lcw keys archive`")]
    reason: String,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct RecoverArgs {
    /// The archived set: its directory, or its name under keys/archive/ (see `lcw keys list`).
    dir: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// A command-line value that must never be printed (clap's `Debug` of the arguments included).
#[derive(Clone)]
pub(crate) struct SecretArg(String);

impl std::fmt::Debug for SecretArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Never fails, so clap never echoes the value in an error.
fn secret_arg(s: &str) -> Result<SecretArg, String> {
    Ok(SecretArg(s.to_owned()))
}

fn parse_suite(s: &str) -> Result<Suite, String> {
    s.parse()
}

/// 32 bytes of hex, with an error that does not repeat the input.
fn parse_private_key(arg: &SecretArg) -> anyhow::Result<B256> {
    let s = arg.0.trim();
    let hex = s.strip_prefix("0x").unwrap_or(s);
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("--import-key / LCW_IMPORT_KEY is not a private key: expected 64 hex digits (0x optional)");
    }
    hex.parse::<B256>().map_err(|_| anyhow::anyhow!("--import-key / LCW_IMPORT_KEY is not a private key"))
}

pub(crate) async fn keygen(args: KeygenArgs, data: DataArgs) -> anyhow::Result<()> {
    let import = args.import_key.as_ref().map(parse_private_key).transpose()?;
    let password = lcw_chain::keys::password(args.password_file.as_deref())?;
    let keys = KeyDir::new(&data.data_dir);
    let created = keys.create(args.suite, &password, import)?;
    let fp = fingerprint(&created.public_key);
    if args.json {
        let mut v = serde_json::to_value(&created)?;
        v["fingerprint"] = fp.into();
        println!("{v}");
        return Ok(());
    }
    println!("created keys in {}", keys.path().display());
    println!("  address           {}", created.address);
    println!("  signing key       {}", if created.imported { "imported" } else { "generated" });
    println!("  encryption suite  {}", created.suite);
    println!("  encryption key    {} (fingerprint {fp})", created.public_key);
    println!("  signing keystore  {}", created.signing_path.display());
    println!("  encryption file   {}", created.encryption_path.display());
    println!("next: fund {} with the stake and gas, then `lcw register --models NAME`", created.address);
    Ok(())
}

pub(crate) async fn keys(args: KeysArgs, data: DataArgs) -> anyhow::Result<()> {
    let keys = KeyDir::new(&data.data_dir);
    match args.action {
        KeysAction::List(a) => list(&keys, a, &data).await,
        KeysAction::Archive(a) => {
            let to = keys.archive(&a.reason)?;
            let name = to.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if a.json {
                println!("{}", serde_json::json!({ "archived": to, "name": name }));
            } else {
                println!("archived the active keys to {}", to.display());
                println!("recover them with `lcw keys recover {name}`; `lcw keygen` may now create new ones");
            }
            Ok(())
        }
        KeysAction::Recover(a) => {
            keys.recover(&a.dir)?;
            let active = keys.list()?.into_iter().find(KeyEntry::is_active);
            if a.json {
                println!("{}", serde_json::to_string(&active)?);
            } else if let Some(e) = active {
                println!("recovered: {e}");
                println!("the previously active keys, if any, are in {}", keys.archive_dir().display());
            }
            Ok(())
        }
    }
}

async fn list(keys: &KeyDir, args: ListArgs, data: &DataArgs) -> anyhow::Result<()> {
    let entries = keys.list()?;
    let chain = match &args.network {
        Some(network) => Some(read_chain(&entries, network, args.rpc_url.clone(), data).await?),
        None => None,
    };
    let active_address = entries.iter().find(|e| e.is_active()).and_then(|e| e.address);
    let mut rows = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let on_chain = chain.as_ref().and_then(|c| c[i].clone());
        let key_matches = on_chain.as_ref().map(|r| e.public_key.as_ref() == Some(&r.key));
        // An archived set whose address still holds stake under its key (or under no other set)
        // is the only way back to that stake: the dashboard's rule too.
        let still_staked = on_chain.as_ref().is_some_and(|r| {
            let chain = OnChain { registered: r.registered, stake: r.stake, encryption_key: Some(r.key.as_ref()) };
            still_staked(&key_set_info(e), &chain, active_address)
        });
        rows.push((e, on_chain, key_matches, still_staked));
    }
    if args.json {
        let out: Vec<_> = rows
            .iter()
            .map(|(e, c, m, staked)| {
                serde_json::json!({
                    "active": e.is_active(),
                    "path": e.path,
                    "address": e.address,
                    "suite": e.suite,
                    "public_key": e.public_key,
                    "fingerprint": e.public_key.as_ref().map(|k| fingerprint(k)),
                    "archived_at": e.archived_at,
                    "archived_at_utc": e.archived_at.map(utc),
                    "reason": e.reason,
                    "chain": c.as_ref().map(|r| serde_json::json!({
                        "registered": r.registered,
                        "stake_wei": r.stake.to_string(),
                        "encryption_key": r.key,
                        "key_matches": m,
                    })),
                    "still_staked": staked,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(out));
        return Ok(());
    }
    if rows.is_empty() {
        println!("no keys in {}: run `lcw keygen`", keys.path().display());
    }
    for (e, c, m, staked) in &rows {
        println!("{e}");
        if let Some(reason) = &e.reason {
            println!("          reason: {reason}");
        }
        if let Some(r) = c {
            let key = match (r.registered, m) {
                (false, _) => String::new(),
                (true, Some(true)) => ", registered with this key".into(),
                (true, _) => format!(", registered with another key ({})", fingerprint(&r.key)),
            };
            println!(
                "          on chain: {}, stake {} LCAI{key}",
                if r.registered { "registered" } else { "not registered" },
                lcw_schema::types::Lcai(r.stake)
            );
        }
        if *staked {
            let name = e.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            println!(
                "          WARNING still staked: recover it with `lcw keys recover {name}`, or exit with it (`lcw exit`)"
            );
        }
    }
    Ok(())
}

/// A key set's public fields as the API shows them (`name` is what `lcw keys recover` takes).
fn key_set_info(e: &KeyEntry) -> KeySetInfo {
    KeySetInfo {
        active: e.is_active(),
        name: if e.is_active() {
            "keys".into()
        } else {
            e.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
        },
        address: e.address,
        suite: e.suite.map(|s| s.name().to_owned()),
        public_key: e.public_key.as_ref().map(|k| k.to_vec()),
        archived_at: e.archived_at,
        reason: e.reason.clone(),
    }
}

/// The API's view of the key sets in `data_dir`: the public fields `lcw keys list` reads (the
/// keystore's `address`, the encryption file's public key, `archive.json`), never a secret.
pub(crate) fn key_sets_source(data_dir: PathBuf) -> lcw_queries::operator::KeySetsSource {
    let keys = KeyDir::new(&data_dir);
    std::sync::Arc::new(move || Ok(keys.list()?.iter().map(key_set_info).collect()))
}

/// The registration of every entry's address, in order (`None` for entries without an address).
async fn read_chain(
    entries: &[KeyEntry],
    network: &str,
    rpc_url: Option<String>,
    data: &DataArgs,
) -> anyhow::Result<Vec<Option<Registration>>> {
    let net = NetworkArgs {
        network: network.to_owned(),
        rpc_url,
        chain_id: None,
        job_registry: None,
        worker_registry: None,
        ai_config: None,
        beacon_url: None,
        gateway_url: None,
    };
    let profile = net.profile(data)?;
    let chain = lcw_chain::Chain::open(&profile, std::time::Duration::from_secs(20)).await?;
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        out.push(match e.address {
            Some(a) => Some(registration(&chain, &profile, a).await.with_context(|| format!("reading {a}"))?),
            None => None,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_keys_are_validated_without_echoing_them() {
        let key = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
        assert!(parse_private_key(&SecretArg(key.into())).is_ok());
        assert!(parse_private_key(&SecretArg(format!("0x{key}"))).is_ok());
        let short = &key[..60];
        let e = parse_private_key(&SecretArg(short.into())).unwrap_err().to_string();
        assert!(e.contains("64 hex digits") && !e.contains(short), "{e}");
        assert_eq!(format!("{:?}", SecretArg(key.into())), "<redacted>");
    }
}
