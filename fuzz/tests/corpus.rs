//! The committed seed corpus: `corpus/<target>/` holds a handful of small valid inputs per target
//! (built here, except the real `eth_getLogs` answers of an `lcw devnet`, taken from a node) and
//! every crash input found (`crash-*`, kept as regression seeds).
//!
//! `committed_seeds_are_current` fails when a built seed differs from its committed file
//! (`UPDATE_CORPUS=1 cargo test` rewrites them); `seeds_are_valid_inputs` checks that each seed is
//! the valid input it claims to be, so the fuzzer starts from the deep end of each parser.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aes::cipher::{KeyIvInit, StreamCipher};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use alloy::primitives::{Address, B256, Bytes, Log, LogData, U256, keccak256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolEvent;
use lcw_chain::rpc::FetchedLog;
use lcw_fuzz::api::Api;
use lcw_fuzz::log::{CONTRACTS, MANAGER, to_bytes};
use lcw_indexer::decode::Decoder;
use lcw_schema::bindings::{JobRegistry, SessionManager, WorkerRegistry};
use lcw_schema::profile::Profile;
use lcw_schema::suite::{EncryptionSecret, SessionKey, Suite, wrap_session_key_with};
use serde_json::{Value, json};

/// The password of every key-file seed (the targets open them with it).
const PASSWORD: &str = "fuzz-password-7c1e";
/// anvil's first dev key (public knowledge; never a real key).
const ANVIL_KEY0: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

type Seeds = BTreeMap<String, Vec<u8>>;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

/// The real answers (`corpus/get_logs/anvil-*.json`).
fn anvil_answers() -> Vec<(String, Vec<u8>)> {
    let dir = corpus().join("get_logs");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("anvil-"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "the real answers are in {}", dir.display());
    out
}

fn anvil_logs() -> Vec<FetchedLog> {
    #[derive(serde::Deserialize)]
    struct Answer {
        result: Vec<FetchedLog>,
    }
    let (_, one_of_each) = anvil_answers().into_iter().find(|(n, _)| n.contains("one-of-each")).unwrap();
    serde_json::from_slice::<Answer>(&one_of_each).unwrap().result
}

fn decode_log_seeds() -> Seeds {
    let decoder = Decoder::new(CONTRACTS);
    let mut seeds = Seeds::new();
    for fetched in anvil_logs() {
        let name = decoder.decode(&fetched.log).name.unwrap_or("undecodable");
        let emitter = ["job-registry", "worker-registry", "ai-config", "session-manager"]
            [lcw_fuzz::log::EMITTERS.iter().position(|a| *a == fetched.log.address).unwrap()];
        seeds.insert(format!("anvil-{emitter}-{name}"), to_bytes(&fetched.log).unwrap());
    }
    let log = |address: Address, data: LogData| to_bytes(&Log { address, data }).unwrap();
    let legacy = LogData::new_unchecked(
        vec![keccak256("WorkerJailed(address,uint256)"), B256::left_padding_from(&[0xa1; 20])],
        Bytes::from(U256::from(1_800_000_000u64).to_be_bytes::<32>().to_vec()),
    );
    seeds.insert("legacy-WorkerJailed".into(), log(CONTRACTS.worker_registry, legacy));
    let huge = JobRegistry::JobAcknowledged { jobId: U256::MAX, worker: Address::repeat_byte(9) };
    seeds.insert("job-id-past-64-bits".into(), log(CONTRACTS.job_registry, huge.encode_log_data()));
    let requested = SessionManager::SessionRequested {
        reqId: U256::from(4),
        user: Address::repeat_byte(0xc1),
        modelId: keccak256("gemma3-270m"),
        requestBlock: U256::from(120),
    };
    seeds.insert("session-manager-SessionRequested".into(), log(MANAGER, requested.encode_log_data()));
    let capability = WorkerRegistry::CapabilityRegistered { bit: 3, name: "vision".into() };
    seeds.insert("CapabilityRegistered".into(), log(CONTRACTS.worker_registry, capability.encode_log_data()));
    seeds
}

fn get_logs_seeds() -> Seeds {
    let mut seeds = Seeds::new();
    let one = json!({"jsonrpc": "2.0", "id": 1, "result": [lcw_fuzz::wire::to_json(&anvil_logs()[0])]});
    seeds.insert("one-log.json".into(), serde_json::to_vec(&one).unwrap());
    seeds.insert("empty.json".into(), br#"{"jsonrpc":"2.0","id":1,"result":[]}"#.to_vec());
    seeds.insert(
        "range-refused.json".into(),
        br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32005,"message":"query returned more than 10000 results. Try with this block range [0x1, 0x2a]."}}"#.to_vec(),
    );
    let mut pending = lcw_fuzz::wire::to_json(&anvil_logs()[1]);
    pending["blockNumber"] = Value::Null;
    pending["blockHash"] = Value::Null;
    pending["logIndex"] = Value::Null;
    seeds.insert(
        "pending-log.json".into(),
        serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 1, "result": [pending]})).unwrap(),
    );
    seeds
}

fn blob_seeds() -> Seeds {
    let mut seeds = Seeds::new();
    let prompt = SessionKey::from_bytes([0x5a; 32]).seal_with_nonce(b"Why is the sky blue?", [1; 12]);
    seeds.insert("encode-sealed-prompt".into(), [&[0u8][..], &prompt].concat());
    seeds.insert("encode-empty".into(), vec![0]);
    let blob = lcw_schema::blob::encode(b"a response of a few dozen bytes, sealed or not").unwrap();
    seeds.insert("decode-blob-prefix".into(), [&[1u8][..], &blob[..32 * 3]].concat());
    seeds.insert("limit-exactly".into(), vec![2, 0, 0, b'x']);
    seeds.insert("limit-one-over".into(), vec![2, 1, 0, b'x']);
    seeds.insert("decode-wrong-size".into(), vec![3, 0, 0, 0, 5]);
    seeds
}

fn secret(suite: Suite, byte: u8) -> EncryptionSecret {
    EncryptionSecret::from_bytes(suite, &[byte; 32]).unwrap()
}

fn suite_open_seeds() -> Seeds {
    let mut seeds = Seeds::new();
    let key = [0x5a; 32];
    let sealed = SessionKey::from_bytes(key).seal_with_nonce(b"{\"prompt\":\"hello\"}", [3; 12]);
    seeds.insert("open-sealed-prompt".into(), [&[0u8][..], &key, &sealed].concat());
    seeds.insert("seal-then-open".into(), [&[1u8][..], &key, &[4; 12], &[0, 9], b"a prompt"].concat());
    for (mode, suite, name) in [(2u8, Suite::P256AesGcm, "p256"), (3, Suite::X25519, "x25519")] {
        let recipient = secret(suite, 7);
        let wrapped =
            wrap_session_key_with(&recipient.public_key(), &SessionKey::from_bytes(key), &secret(suite, 8), [5; 12])
                .unwrap();
        seeds.insert(format!("unwrap-{name}"), [&[mode][..], &[7; 32], &wrapped].concat());
        let parts: [&[u8]; 7] = [&[4], &[mode - 2], &[7; 32], &[8; 32], &[5; 12], &key, &[1, 2]];
        seeds.insert(format!("wrap-then-unwrap-{name}"), parts.concat());
        seeds.insert(format!("wrap-for-{name}-key"), [&[5u8, mode - 2][..], &recipient.public_key()].concat());
    }
    seeds.insert("wrap-for-low-order-x25519-key".into(), [&[5u8, 1][..], &[0; 32]].concat());
    seeds
}

fn profile_seeds() -> Seeds {
    let mut seeds = Seeds::new();
    let signer: PrivateKeySigner = ANVIL_KEY0.parse().unwrap();
    let devnet = json!({
        "name": "devnet", "chain_id": 31337, "rpc_url": "http://127.0.0.1:8545",
        "ws_url": "ws://127.0.0.1:8545", "beacon_url": "http://127.0.0.1:8545", "start_block": 1,
        "contracts": { "worker_registry": CONTRACTS.worker_registry, "job_registry": CONTRACTS.job_registry,
                       "ai_config": CONTRACTS.ai_config },
        "accounts": [ { "role": "deployer", "address": signer.address(), "private_key": format!("0x{ANVIL_KEY0}") } ]
    });
    seeds.insert("devnet.json".into(), serde_json::to_vec_pretty(&devnet).unwrap());
    seeds.insert("testnet.json".into(), serde_json::to_vec_pretty(&Profile::testnet()).unwrap());
    let mut remote = serde_json::to_value(Profile::mainnet()).unwrap();
    remote["rpc_url"] = "https://user:secret@rpc.example/v2/abcdefghijklmnopqrstuvwxyz".into();
    remote["rpc_fallback_urls"] = json!(["https://rpc.mainnet.lightchain.ai/?apikey=abc", "http://[::1]:8545/v1"]);
    seeds.insert("remote-with-credentials.json".into(), serde_json::to_vec_pretty(&remote).unwrap());
    seeds.insert("url-with-user-info".into(), b"https://u:pw@eth.example:8443/v2/KEY123?x=1#f".to_vec());
    seeds.insert("url-loopback-path".into(), b"http://localhost:8080/v1/chat/completions".to_vec());
    seeds
}

/// The kinds of key derivation a keystore seed uses, all cheap.
#[derive(Clone, Copy)]
enum Kdf {
    Pbkdf2 { c: u32 },
    Scrypt { n: u64, r: u32, p: u32 },
}

fn derive(kdf: Kdf, salt: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    match kdf {
        Kdf::Pbkdf2 { c } => pbkdf2::pbkdf2::<hmac::Hmac<sha2::Sha256>>(PASSWORD.as_bytes(), salt, c, &mut out),
        Kdf::Scrypt { n, r, p } => {
            let params = scrypt::Params::new(n.trailing_zeros() as u8, r, p).unwrap();
            scrypt::scrypt(PASSWORD.as_bytes(), salt, &params, &mut out).unwrap();
        }
    }
    out
}

/// A geth v3 keystore of anvil's first key, as geth writes one, with cheap KDF parameters.
fn keystore(kdf: Kdf, crypto: &str, address: bool) -> Vec<u8> {
    let (salt, iv) = ([0x11u8; 32], [0x22u8; 16]);
    let derived = derive(kdf, &salt);
    let mut ciphertext = alloy::hex::decode(ANVIL_KEY0).unwrap();
    ctr::Ctr128BE::<aes::Aes128>::new(derived[..16].into(), &iv.into()).apply_keystream(&mut ciphertext);
    let mac = keccak256([&derived[16..], &ciphertext[..]].concat());
    let kdfparams = match kdf {
        Kdf::Pbkdf2 { c } => json!({"c": c, "dklen": 32, "prf": "hmac-sha256", "salt": alloy::hex::encode(salt)}),
        Kdf::Scrypt { n, r, p } => json!({"dklen": 32, "n": n, "p": p, "r": r, "salt": alloy::hex::encode(salt)}),
    };
    let kdf_name = match kdf {
        Kdf::Pbkdf2 { .. } => "pbkdf2",
        Kdf::Scrypt { .. } => "scrypt",
    };
    let mut file = json!({
        "crypto": {
            "cipher": "aes-128-ctr",
            "ciphertext": alloy::hex::encode(&ciphertext),
            "cipherparams": {"iv": alloy::hex::encode(iv)},
            "kdf": kdf_name,
            "kdfparams": kdfparams,
            "mac": alloy::hex::encode(mac),
        },
        "id": "3198bc9c-6672-5ab3-d995-4942343ae5b6",
        "version": 3,
    });
    if crypto != "crypto" {
        let object = file.as_object_mut().unwrap();
        let value = object.remove("crypto").unwrap();
        object.insert(crypto.into(), value);
    }
    if address {
        let signer: PrivateKeySigner = ANVIL_KEY0.parse().unwrap();
        file["address"] = alloy::hex::encode(signer.address()).into();
    }
    serde_json::to_vec(&file).unwrap()
}

fn keystore_seeds() -> Seeds {
    let mut seeds = Seeds::new();
    seeds.insert("pbkdf2.json".into(), keystore(Kdf::Pbkdf2 { c: 2 }, "crypto", true));
    seeds.insert("scrypt.json".into(), keystore(Kdf::Scrypt { n: 4, r: 1, p: 1 }, "crypto", true));
    seeds.insert("scrypt-no-address.json".into(), keystore(Kdf::Scrypt { n: 2, r: 2, p: 2 }, "crypto", false));
    seeds.insert("capital-crypto.json".into(), keystore(Kdf::Pbkdf2 { c: 1 }, "Crypto", false));
    seeds
}

/// The worker's `encryption.json` of a fixed secret, as `worker/src/keys.rs` writes it, with a
/// cheap scrypt cost.
fn encryption_file(suite: Suite) -> Vec<u8> {
    let secret = secret(suite, 0x31);
    let public = Bytes::from(secret.public_key());
    let (salt, nonce) = ([0x44u8; 16], [0x55u8; 12]);
    let key = derive(Kdf::Scrypt { n: 4, r: 1, p: 1 }, &salt);
    let aad = [suite.name().as_bytes(), &public].concat();
    let ciphertext = aes_gcm::Aes256Gcm::new(&key.into())
        .encrypt(&nonce.into(), Payload { msg: secret.to_bytes().as_ref(), aad: &aad })
        .unwrap();
    let file = json!({
        "version": 1,
        "suite": suite,
        "public_key": public,
        "kdf": "scrypt",
        "kdfparams": {"n": 4, "r": 1, "p": 1, "dklen": 32, "salt": alloy::hex::encode(salt)},
        "nonce": alloy::hex::encode(nonce),
        "ciphertext": alloy::hex::encode(ciphertext),
    });
    serde_json::to_vec_pretty(&file).unwrap()
}

fn encryption_key_seeds() -> Seeds {
    let mut seeds = Seeds::new();
    seeds.insert("p256.json".into(), encryption_file(Suite::P256AesGcm));
    seeds.insert("x25519.json".into(), encryption_file(Suite::X25519));
    seeds
}

/// Every example of `queries/examples/`, with variables naming rows of the fuzz store.
fn graphql_seeds() -> Seeds {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../queries/examples");
    let worker = Address::from_slice(&keccak256([&[b'a'][..], &10u64.to_be_bytes()].concat())[12..]);
    let variables = json!({
        "id": "1", "worker": worker, "reqId": 1, "first": 10, "model": keccak256("gemma3-270m"),
    });
    let mut seeds = Seeds::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "graphql") {
            let query = std::fs::read_to_string(&path).unwrap();
            // Only the variables the operation declares.
            let declared: serde_json::Map<String, Value> = variables
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| query.contains(&format!("${k}:")))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let body = json!({"query": query, "variables": declared});
            let name = path.file_stem().unwrap().to_string_lossy();
            seeds.insert(format!("{name}.json"), serde_json::to_vec(&body).unwrap());
        }
    }
    let fragments = "query { jobs(first: 5) { nodes { ...J } } worker(address: \"0x0000000000000000000000000000000000000001\") { address } } fragment J on Job { id state timeline { name } }";
    seeds.insert("fragments.json".into(), serde_json::to_vec(&json!({"query": fragments})).unwrap());
    seeds
}

fn all_seeds() -> BTreeMap<&'static str, Seeds> {
    BTreeMap::from([
        ("decode_log", decode_log_seeds()),
        ("get_logs", get_logs_seeds()),
        ("blob", blob_seeds()),
        ("suite_open", suite_open_seeds()),
        ("profile", profile_seeds()),
        ("keystore", keystore_seeds()),
        ("encryption_key", encryption_key_seeds()),
        ("graphql", graphql_seeds()),
    ])
}

#[test]
fn committed_seeds_are_current() {
    let update = std::env::var_os("UPDATE_CORPUS").is_some();
    let mut stale = Vec::new();
    for (target, seeds) in all_seeds() {
        let dir = corpus().join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds {
            let path = dir.join(&name);
            if update {
                std::fs::write(&path, &bytes).unwrap();
            } else if std::fs::read(&path).ok().as_ref() != Some(&bytes) {
                stale.push(format!("{target}/{name}"));
            }
        }
    }
    assert!(stale.is_empty(), "stale or missing seeds (UPDATE_CORPUS=1 cargo test rewrites them): {stale:?}");
}

#[test]
fn seeds_are_valid_inputs() {
    let decoder = Decoder::new(CONTRACTS);
    for (name, bytes) in decode_log_seeds() {
        let decoded = decoder.decode(&lcw_fuzz::log::from_bytes(&bytes));
        assert_eq!(decoded.event.is_ok(), name != "job-id-past-64-bits", "{name}: {decoded:?}");
    }
    for (name, bytes) in get_logs_seeds().into_iter().chain(anvil_answers()) {
        let answer: Value = serde_json::from_slice(&bytes).unwrap();
        let logs = serde_json::from_value::<Vec<FetchedLog>>(answer["result"].clone());
        assert_eq!(logs.is_ok(), !name.contains("pending") && !name.contains("refused"), "{name}: {logs:?}");
    }
    for (name, bytes) in profile_seeds().into_iter().filter(|(n, _)| n.ends_with(".json")) {
        Profile::parse(std::str::from_utf8(&bytes).unwrap(), Path::new(&name)).unwrap();
    }
    let keys = lcw_worker::keys::KeyDir::new(lcw_fuzz::scratch::dir());
    std::fs::create_dir_all(keys.path()).unwrap();
    for (name, bytes) in keystore_seeds() {
        assert!(lcw_fuzz::kdf::keystore_within_budget(&bytes), "{name}");
        std::fs::write(keys.signing_path(), &bytes).unwrap();
        let signer =
            lcw_chain::keys::load_keystore(&keys.signing_path(), PASSWORD).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(signer.to_bytes(), ANVIL_KEY0.parse::<B256>().unwrap(), "{name}");
    }
    for (name, bytes) in encryption_key_seeds() {
        assert!(lcw_fuzz::kdf::encryption_file_within_budget(&bytes), "{name}");
        std::fs::write(keys.encryption_path(), &bytes).unwrap();
        keys.load_encryption(PASSWORD).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for (name, bytes) in graphql_seeds() {
        let (status, body) = Api::get().post(&bytes);
        let answer: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, 200, "{name}: {answer}");
        assert!(answer.get("errors").is_none(), "{name}: {answer}");
    }
}
