//! # lcw-tests: end-to-end scenarios against the real parts
//!
//! Every scenario starts its own anvil (on a free port, in a temporary data dir) with the devnet
//! contracts deployed and configured, exactly as `lcw devnet` does, and drives it through the
//! typed bindings. Later scenarios add a real SQLite store and a real LLM server.
//!
//! [`TestNet`] is the harness: a devnet plus signing providers for its dev accounts, and helpers
//! that move chain time and decode reverts.

use std::time::Duration;

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::ext::AnvilApi;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use lcw_contracts::devnet::{Devnet, DevnetOptions};
use lcw_schema::profile::{Profile, Role};

pub use lcw_schema::bindings::decode_revert;

pub mod beacon;
pub mod binary;
pub mod gate;
pub mod gateway;
pub mod graphql_load;
pub mod hostile;
pub mod llm;
pub mod postgres;
pub mod proxy;
pub mod sortition;
pub mod stats;

/// A devnet for one test; anvil stops and the data dir is removed when it is dropped.
#[derive(Debug)]
pub struct TestNet {
    /// The devnet (anvil and its profile).
    pub devnet: Devnet,
    /// The data dir.
    pub dir: tempfile::TempDir,
}

impl TestNet {
    /// A devnet that mines one block per transaction (tests move time explicitly).
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A devnet with options adjusted by `f` (block time, windows, ...).
    pub async fn start_with(f: impl FnOnce(&mut DevnetOptions)) -> Self {
        init_tracing();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut options = DevnetOptions::new(dir.path());
        options.port = 0;
        options.block_time = 0;
        f(&mut options);
        let devnet = Devnet::start(&options).await.expect("devnet starts (run `make setup` to install anvil)");
        TestNet { devnet, dir }
    }

    /// The devnet's profile.
    pub fn profile(&self) -> &Profile {
        &self.devnet.profile
    }

    /// A read-only provider.
    pub fn provider(&self) -> DynProvider {
        ProviderBuilder::new().connect_http(self.devnet.profile.rpc_url.parse().expect("url")).erased()
    }

    /// The `index`-th dev account with `role`.
    pub fn signer(&self, role: Role, index: usize) -> PrivateKeySigner {
        let account = self.profile().accounts_with(role).nth(index).expect("dev account with that role");
        PrivateKeySigner::from_bytes(&account.private_key).expect("dev key")
    }

    /// A provider that signs as `signer`. Nonces are read from the chain for every transaction:
    /// a cached nonce would run ahead of the chain after a reorg removed transactions.
    pub fn wallet(&self, signer: PrivateKeySigner) -> DynProvider {
        ProviderBuilder::default()
            .filler(alloy::providers::fillers::GasFiller::default())
            .with_simple_nonce_management()
            .fetch_chain_id()
            .wallet(EthereumWallet::from(signer))
            .connect_http(self.devnet.profile.rpc_url.parse().expect("url"))
            .erased()
    }

    /// Moves chain time forward by `secs` and mines a block.
    pub async fn advance(&self, secs: u64) {
        let p = self.provider();
        p.anvil_increase_time(secs).await.expect("evm_increaseTime");
        p.anvil_mine(Some(1), None).await.expect("anvil_mine");
    }

    /// Makes the next block's timestamp exactly `ts`.
    pub async fn set_next_timestamp(&self, ts: u64) {
        self.provider().anvil_set_next_block_timestamp(ts).await.expect("evm_setNextBlockTimestamp");
    }

    /// Timestamp of the latest block.
    pub async fn now(&self) -> u64 {
        let p = self.provider();
        p.get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await
            .expect("block")
            .expect("latest")
            .header
            .timestamp
    }

    /// Native balance of `address`.
    pub async fn balance(&self, address: Address) -> U256 {
        self.provider().get_balance(address).await.expect("balance")
    }
}

/// The decoded revert of a failed contract call (`ErrorName { .. }`), or a panic with the error.
pub fn revert_of(err: alloy::contract::Error) -> String {
    match err.as_revert_data() {
        Some(data) => decode_revert(&data),
        None => panic!("expected a revert, got {err}"),
    }
}

/// Waits until `f` returns true, polling every 100 ms, up to `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Test logs go to the test's captured output; `RUST_LOG` filters.
pub fn init_tracing() {
    lcw_schema::ensure_tls();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// The API's example operations, `queries/examples/*.graphql`, by file stem.
pub fn query_examples() -> std::collections::BTreeMap<String, String> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../queries/examples");
    let mut out = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("queries/examples") {
        let path = entry.expect("an entry of queries/examples").path();
        if path.extension().is_some_and(|e| e == "graphql") {
            let name = path.file_stem().expect("a file name").to_string_lossy().into_owned();
            out.insert(name, std::fs::read_to_string(&path).expect("an example reads"));
        }
    }
    out
}

/// A 32-byte value for tests.
pub fn b256(n: u8) -> B256 {
    B256::repeat_byte(n)
}

/// The first event of type `E` in a receipt.
pub fn event<E: alloy::sol_types::SolEvent>(receipt: &alloy::rpc::types::TransactionReceipt) -> Option<E> {
    receipt.inner.logs().iter().find_map(|l| l.log_decode::<E>().ok().map(|d| d.inner.data))
}

/// All events of type `E` in a receipt.
pub fn events<E: alloy::sol_types::SolEvent>(receipt: &alloy::rpc::types::TransactionReceipt) -> Vec<E> {
    receipt.inner.logs().iter().filter_map(|l| l.log_decode::<E>().ok().map(|d| d.inner.data)).collect()
}

/// Lifecycle helpers: the parties of the protocol acting through the real contracts.
pub mod parties {
    use alloy::primitives::{Address, Bytes, U256};
    use alloy::providers::{DynProvider, Provider};
    use alloy::rpc::types::TransactionReceipt;
    use lcw_contracts::deploy::DEFAULT_MODEL;
    use lcw_contracts::simulate::dispatcher::{create_session_digest, disputer_secret, sign_digest};
    use lcw_schema::bindings::{AIConfig, JobRegistry, WorkerRegistry};
    use lcw_schema::profile::Role;
    use lcw_schema::suite::{EncryptionSecret, SessionKey, Suite, wrap_session_key};
    use lcw_schema::types::ModelId;

    use super::{TestNet, event};

    /// The devnet model's id.
    pub fn model() -> alloy::primitives::B256 {
        ModelId::from_name(DEFAULT_MODEL).0
    }

    /// Sends a contract call and returns its receipt, panicking with the decoded revert when
    /// gas estimation fails or the mined transaction reverted.
    #[macro_export]
    macro_rules! send {
        ($call:expr) => {{
            // Estimate, then add a third: an exact estimate can fall short when storage the
            // call touches changed between estimation and inclusion.
            let call = $call;
            let estimate = match call.estimate_gas().await {
                Ok(g) => g,
                Err(e) => panic!("{} reverted: {}", stringify!($call), $crate::revert_of(e)),
            };
            let call = call.gas(estimate + estimate / 3);
            match call.send().await {
                Ok(pending) => {
                    let receipt = pending.get_receipt().await.expect("receipt");
                    if !receipt.status() {
                        let replay = call.call().block((receipt.block_number.unwrap_or(1) - 1).into()).await;
                        panic!(
                            "{} was mined in block {:?} but reverted (gas used {} of {}): {}",
                            stringify!($call),
                            receipt.block_number,
                            receipt.gas_used,
                            estimate + estimate / 3,
                            replay.err().map($crate::revert_of).unwrap_or_else(|| "succeeds when replayed".into())
                        );
                    }
                    receipt
                }
                Err(e) => panic!("{} reverted: {}", stringify!($call), $crate::revert_of(e)),
            }
        }};
    }

    /// A registered worker with its signing provider and encryption secret.
    #[derive(Debug)]
    pub struct Worker {
        /// Address.
        pub address: Address,
        /// Signing provider.
        pub provider: DynProvider,
        /// Encryption secret matching the registered key.
        pub secret: EncryptionSecret,
    }

    /// Registers the `index`-th worker account with `suite`, the minimum stake and the model.
    pub async fn register_worker(net: &TestNet, index: usize, suite: Suite) -> Worker {
        register_worker_with_stake(net, index, suite, U256::ZERO).await
    }

    /// Registers with the minimum stake plus `extra` wei.
    pub async fn register_worker_with_stake(net: &TestNet, index: usize, suite: Suite, extra: U256) -> Worker {
        let signer = net.signer(Role::Worker, index);
        let address = signer.address();
        let provider = net.wallet(signer);
        let secret = EncryptionSecret::generate(suite);
        let wr = WorkerRegistry::new(net.profile().contracts.worker_registry, &provider);
        let ai = AIConfig::new(net.profile().contracts.ai_config, &provider);
        let stake = ai.getMinWorkerStake().call().await.expect("min stake") + extra;
        crate::send!(wr.registerWorker(secret.public_key().into()).value(stake));
        crate::send!(wr.addSupportedModel(model()));
        Worker { address, provider, secret }
    }

    /// An open session: id, consumer provider, and the session key.
    #[derive(Debug)]
    pub struct Session {
        /// Session id.
        pub id: U256,
        /// The consumer's signing provider.
        pub consumer: DynProvider,
        /// The consumer's address.
        pub consumer_address: Address,
        /// The session key.
        pub key: SessionKey,
        /// The receipt of createSession.
        pub receipt: TransactionReceipt,
    }

    /// Opens a dispatcher-signed session between the `consumer`-th consumer and `worker`,
    /// prepaying `deposit`.
    pub async fn open_session(net: &TestNet, consumer: usize, worker: &Worker, deposit: U256) -> Session {
        open_session_for(net, consumer, worker, deposit, model()).await
    }

    /// [`open_session`] for `model` (a model the devnet registers besides the default one).
    pub async fn open_session_for(
        net: &TestNet,
        consumer: usize,
        worker: &Worker,
        deposit: U256,
        model: alloy::primitives::B256,
    ) -> Session {
        let signer = net.signer(Role::Consumer, consumer);
        let consumer_address = signer.address();
        let provider = net.wallet(signer);
        let key = SessionKey::generate();
        let enc_worker: Bytes = wrap_session_key(&worker.secret.public_key(), &key).expect("wrap").into();
        let disputer_key = net.profile().account(Role::Disputer).expect("disputer").private_key;
        let enc_disputer: Bytes =
            wrap_session_key(&disputer_secret(&disputer_key).public_key(), &key).expect("wrap").into();
        let c = net.profile().contracts;
        let jr = JobRegistry::new(c.job_registry, &provider);
        let nonce = jr.nonce(consumer_address).call().await.expect("nonce");
        let expiry = U256::from(net.now().await + 3600);
        let digest = create_session_digest(
            net.profile().chain_id,
            c.job_registry,
            consumer_address,
            model,
            worker.address,
            &enc_worker,
            &enc_disputer,
            nonce,
            expiry,
        );
        let sig = sign_digest(&net.signer(Role::Dispatcher, 0), digest).expect("sign");
        let receipt =
            crate::send!(jr.createSession(model, worker.address, enc_worker, enc_disputer, sig, expiry).value(deposit));
        let created = event::<JobRegistry::SessionCreated>(&receipt).expect("SessionCreated");
        Session { id: created.sessionId, consumer: provider, consumer_address, key, receipt }
    }

    /// Submits a job on `session` (fee from the prepaid balance); returns the job id.
    pub async fn submit(net: &TestNet, session: &Session, blob: alloy::primitives::B256) -> U256 {
        let jr = JobRegistry::new(net.profile().contracts.job_registry, &session.consumer);
        let receipt = crate::send!(jr.submitJob(session.id, blob));
        event::<JobRegistry::JobSubmitted>(&receipt).expect("JobSubmitted").jobId
    }

    /// Posts `payload` as a blob from the consumer; returns its versioned hash.
    pub async fn post_blob(consumer: &DynProvider, from: Address, payload: &[u8]) -> alloy::primitives::B256 {
        use alloy::network::{TransactionBuilder, TransactionBuilder4844};
        let sidecar = lcw_schema::blob::sidecar(&[payload]).expect("sidecar");
        let hash = lcw_schema::blob::versioned_hashes(&sidecar)[0];
        let blob_fee = consumer.get_blob_base_fee().await.expect("eth_blobBaseFee").max(1) * 2;
        let tx = alloy::rpc::types::TransactionRequest::default()
            .with_to(from)
            .with_max_fee_per_blob_gas(blob_fee)
            .with_blob_sidecar(alloy::eips::eip7594::BlobTransactionSidecarVariant::Eip4844(sidecar));
        let receipt = consumer.send_transaction(tx).await.expect("blob tx").get_receipt().await.expect("receipt");
        assert!(receipt.status(), "blob transaction mined");
        hash
    }

    /// A job submitted with a real encrypted prompt.
    #[derive(Debug)]
    pub struct Submitted {
        /// Job id.
        pub job: u64,
        /// The prompt in clear.
        pub prompt: String,
        /// The session key (the consumer's side: it opens the response).
        pub key: SessionKey,
    }

    /// Seals `prompt` with the session key, posts it as a blob and submits the job.
    pub async fn submit_prompt(net: &TestNet, session: &Session, prompt: &str) -> Submitted {
        let key = SessionKey::from_bytes(*session.key.expose());
        let blob = post_blob(&session.consumer, session.consumer_address, &key.seal(prompt.as_bytes())).await;
        let job = submit(net, session, blob).await.to::<u64>();
        Submitted { job, prompt: prompt.to_owned(), key }
    }

    /// Acknowledges and completes `job` as `worker`; returns the JobCompleted receipt.
    pub async fn ack_and_complete(net: &TestNet, worker: &Worker, job: U256) -> TransactionReceipt {
        let jr = JobRegistry::new(net.profile().contracts.job_registry, &worker.provider);
        crate::send!(jr.acknowledgeJob(job));
        crate::send!(jr.completeJob(job, super::b256(0x01), super::b256(0xcc)))
    }
}

/// Indexer helpers: run it in-process, wait for it, compare stores.
pub mod indexing {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use lcw_indexer::{IndexerConfig, ProgressMode, Summary};
    use lcw_schema::profile::Profile;
    use lcw_schema::store::Store;
    use lcw_schema::store::projections::{self, PROJECTION_TABLES, RAW_TABLES, TableDiff};
    use lcw_schema::store::raw::Cursor;

    /// A test configuration: quiet, fast polling.
    pub fn config(profile: &Profile, db: &Path) -> IndexerConfig {
        let mut c = IndexerConfig::new(profile.clone(), db.to_owned());
        c.progress = ProgressMode::Off;
        c.live.poll_interval = Duration::from_millis(50);
        c
    }

    /// Indexes to the head and returns the summary.
    pub async fn until_head(profile: &Profile, db: &Path) -> Summary {
        let mut c = config(profile, db);
        c.until_head = true;
        let (_tx, rx) = tokio::sync::watch::channel(false);
        lcw_indexer::run(c, rx, None).await.expect("indexing to the head")
    }

    /// A live indexer running in the background.
    #[derive(Debug)]
    pub struct Follower {
        /// Stops it.
        pub stop: tokio::sync::watch::Sender<bool>,
        /// Its task.
        pub task: tokio::task::JoinHandle<Result<Summary, lcw_indexer::IndexerError>>,
        /// The store.
        pub db: PathBuf,
    }

    impl Follower {
        /// Starts following `profile` into `db`.
        pub fn start(profile: &Profile, db: &Path) -> Follower {
            let c = config(profile, db);
            let (stop, rx) = tokio::sync::watch::channel(false);
            let task = tokio::spawn(lcw_indexer::run(c, rx, None));
            Follower { stop, task, db: db.to_owned() }
        }

        /// Stops it and returns its summary.
        pub async fn finish(self) -> Summary {
            let _ = self.stop.send(true);
            self.task.await.expect("indexer task").expect("indexer ran cleanly")
        }
    }

    /// The store's cursor (number, hash), if any.
    pub fn cursor(db: &Path) -> Option<(u64, alloy::primitives::B256)> {
        let store = Store::open_readonly(db).ok()?;
        Cursor::get(store.conn()).ok().flatten().map(|c| (c.block_number, c.block_hash))
    }

    /// Waits until the store's cursor is `block` with `hash`.
    pub async fn wait_for(db: &Path, block: u64, hash: alloy::primitives::B256, timeout: Duration) -> bool {
        super::wait_until(timeout, || async { cursor(db) == Some((block, hash)) }).await
    }

    /// Differences between two stores of the same chain: raw logs and every projection.
    pub fn differences(a: &Path, b: &Path) -> Vec<TableDiff> {
        let store = Store::open_readonly(a).expect("store a");
        let mut tables: Vec<&str> = RAW_TABLES.to_vec();
        tables.extend(PROJECTION_TABLES);
        projections::compare_tables(store.conn(), b, &tables).expect("compare")
    }
}
