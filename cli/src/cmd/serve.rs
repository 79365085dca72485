//! `lcw serve`: the GraphQL API and dashboard over a store, read-only; and `lcw run`: indexer,
//! API and (optionally) settler in one process, the API pushed by the indexer's commits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use lcw_queries::{Access, Limits, Readiness, ServeConfig};
use lcw_settler::settle::{Mode, SettleConfig};

use crate::args::{DataArgs, KeyArgs, NetworkArgs, SecretUrl, StoreArgs, parse_address};

mod footprints;

/// API flags shared by `serve` and `run`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ApiArgs {
    /// Address to listen on. Anything but a loopback address also needs --public.
    #[arg(long, env = "LCW_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Allow listening on a non-loopback address (the API is read-only, but it tells anyone who
    /// can reach it about your worker).
    #[arg(long, env = "LCW_PUBLIC")]
    public: bool,
    /// Read connections to the store.
    #[arg(long, env = "LCW_API_POOL", default_value_t = 4)]
    pool: usize,
    /// Longest a request may run, in milliseconds.
    #[arg(long, env = "LCW_API_TIMEOUT_MS", default_value_t = 2_000)]
    timeout_ms: u64,
    #[command(flatten)]
    bounds: Box<ApiBounds>,
}

impl ApiArgs {
    fn config(&self, db: std::path::PathBuf, readiness: Readiness) -> anyhow::Result<ServeConfig> {
        if !self.listen.ip().is_loopback() && !self.public {
            anyhow::bail!(
                "--listen {} is not a loopback address; add --public to serve the API beyond this machine",
                self.listen
            );
        }
        let mut config = ServeConfig::new(db);
        config.listen = self.listen;
        config.pool = self.pool.clamp(1, 64);
        config.request_timeout = Duration::from_millis(self.timeout_ms.max(10));
        config.readiness = readiness;
        config.limits = self.bounds.limits()?;
        config.access = Access::new(&self.bounds.api_allow_host, &self.bounds.api_allow_origin)?;
        Ok(config)
    }
}

/// The API's bounds and browser isolation, shared by `serve` and `run`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ApiBounds {
    /// Largest POST /graphql body and WebSocket message, in bytes (only JSON bodies are accepted).
    #[arg(long, env = "LCW_API_MAX_BODY", default_value_t = Limits::default().body_bytes)]
    api_max_body: usize,
    /// Largest request head (request line and headers), in bytes.
    #[arg(long, env = "LCW_API_MAX_HEADER", default_value_t = Limits::default().header_bytes)]
    api_max_header: usize,
    /// Deepest field nesting of a query.
    #[arg(long, env = "LCW_API_MAX_DEPTH", default_value_t = Limits::default().depth)]
    api_max_depth: usize,
    /// Highest query complexity (fields, times page sizes for lists).
    #[arg(long, env = "LCW_API_MAX_COMPLEXITY", default_value_t = Limits::default().complexity)]
    api_max_complexity: usize,
    /// Most aliases in a query, counted with its fragments expanded.
    #[arg(long, env = "LCW_API_MAX_ALIASES", default_value_t = Limits::default().aliases)]
    api_max_aliases: usize,
    /// Most directives in a query, counted with its fragments expanded.
    #[arg(long, env = "LCW_API_MAX_DIRECTIVES", default_value_t = Limits::default().directives)]
    api_max_directives: usize,
    /// Longest a client may take to send a request's head, and then its body, in milliseconds.
    #[arg(long, env = "LCW_API_HEADER_TIMEOUT_MS", default_value_t = Limits::default().header_timeout.as_millis() as u64)]
    api_header_timeout_ms: u64,
    /// Longest a connection or WebSocket may stay silent before it is closed, in milliseconds.
    #[arg(long, env = "LCW_API_IDLE_TIMEOUT_MS", default_value_t = Limits::default().idle_timeout.as_millis() as u64)]
    api_idle_timeout_ms: u64,
    /// Most open HTTP connections; at the cap a new one replaces the longest-idle one.
    #[arg(long, env = "LCW_API_MAX_CONNECTIONS", default_value_t = Limits::default().connections)]
    api_max_connections: usize,
    /// Most POST /graphql requests executing at once; others wait up to --timeout-ms, then get 503.
    #[arg(long, env = "LCW_API_MAX_REQUESTS", default_value_t = Limits::default().requests)]
    api_max_requests: usize,
    /// Most open WebSockets (the dashboard keeps one per tab).
    #[arg(long, env = "LCW_API_MAX_WEBSOCKETS", default_value_t = Limits::default().websockets)]
    api_max_websockets: usize,
    /// Most subscriptions (and queries) running at once on one WebSocket.
    #[arg(long, env = "LCW_API_MAX_SUBSCRIPTIONS", default_value_t = Limits::default().subscriptions)]
    api_max_subscriptions: usize,
    /// Also serve requests naming this host (NAME or NAME:PORT; `*` for any), e.g. the name a
    /// reverse proxy forwards. Others than the listen address are refused (DNS rebinding).
    #[arg(long, env = "LCW_API_ALLOW_HOST", value_delimiter = ',')]
    api_allow_host: Vec<String>,
    /// Let web pages on this origin (SCHEME://HOST[:PORT]; `*` for any) use the API, with CORS.
    /// Pages on other origins are refused, WebSockets included.
    #[arg(long, env = "LCW_API_ALLOW_ORIGIN", value_delimiter = ',')]
    api_allow_origin: Vec<String>,
}

impl ApiBounds {
    fn limits(&self) -> anyhow::Result<Limits> {
        let ms = |flag: &str, v: u64, min: u64| at_least(flag, v, min).map(Duration::from_millis);
        Ok(Limits {
            body_bytes: at_least("--api-max-body", self.api_max_body, 1024)?,
            header_bytes: at_least("--api-max-header", self.api_max_header, 1024)?,
            depth: at_least("--api-max-depth", self.api_max_depth, 2)?,
            complexity: at_least("--api-max-complexity", self.api_max_complexity, 10)?,
            aliases: self.api_max_aliases,
            directives: self.api_max_directives,
            header_timeout: ms("--api-header-timeout-ms", self.api_header_timeout_ms, 100)?,
            idle_timeout: ms("--api-idle-timeout-ms", self.api_idle_timeout_ms, 1_000)?,
            connections: at_least("--api-max-connections", self.api_max_connections, 1)?,
            requests: at_least("--api-max-requests", self.api_max_requests, 1)?,
            websockets: self.api_max_websockets,
            subscriptions: at_least("--api-max-subscriptions", self.api_max_subscriptions, 1)?,
        })
    }
}

fn at_least<T: PartialOrd + std::fmt::Display>(flag: &str, value: T, min: T) -> anyhow::Result<T> {
    anyhow::ensure!(value >= min, "{flag} {value} is too small; give at least {min}");
    Ok(value)
}

/// Serve the GraphQL API and the dashboard over a store (read-only).
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    api: ApiArgs,
    /// JSON-RPC URL of the node the store indexes: /readyz then compares the store with the
    /// node's head, and the dashboard shows each worker's wallet (its balance at the store's
    /// block) and gas runway. Without it, the store is ready when its last block is at most
    /// --max-lag old, and the wallet is unknown.
    #[arg(long, env = "LCW_HEAD_RPC")]
    head_rpc: Option<String>,
    /// Without --head-rpc: seconds the last indexed block may be behind the wall clock for /readyz.
    #[arg(long, env = "LCW_MAX_LAG", default_value_t = 60)]
    max_lag: u64,
    /// Serve a PostgreSQL replica of the store instead of the store file:
    /// postgres://USER:PASSWORD@HOST:PORT/DATABASE (no TLS), a replica kept by `lcw replicate`
    /// or `lcw index --replica`, or a streaming standby of one. Many servers may share one
    /// replica. The password is never printed.
    #[arg(long = "store", env = "LCW_SERVE_STORE", value_name = "URL", hide_env_values = true, conflicts_with = "db")]
    replica: Option<SecretUrl>,
    /// Serve Prometheus metrics at http://ADDR/metrics: the store's last indexed block and its
    /// workers' claims and refusals (not with --store).
    #[arg(long, env = "LCW_METRICS", conflicts_with = "replica")]
    metrics: Option<SocketAddr>,
}

pub(crate) async fn serve(args: ServeArgs, data: DataArgs) -> anyhow::Result<()> {
    if let Some(url) = &args.replica {
        return serve_replica(&args, lcw_replica::ReplicaUrl::parse(url.expose())?).await;
    }
    let db = args.store.path(&data);
    if !db.exists() {
        anyhow::bail!("no lcw store at {}; run `lcw index` first (or pass --db)", db.display());
    }
    // The node also gives the API the workers' wallets, read at the store's cursor block.
    let mut wallet_chain = None;
    let readiness = match &args.head_rpc {
        Some(url) => {
            let chain = lcw_chain::Chain::connect(url, Duration::from_secs(10))
                .await
                .with_context(|| format!("connecting to {}", lcw_schema::profile::redact_url(url)))?;
            wallet_chain = Some(chain.clone());
            // Readiness compares the store with this node's head: they must be one chain.
            let store = lcw_schema::store::Store::open_readonly(&db)?;
            if let Some(stored) = store.identity()?.filter(|s| s.chain_id != chain.chain_id) {
                anyhow::bail!(
                    "--head-rpc {} serves chain {}, but the store {} belongs to chain {}; point --head-rpc \
                     (LCW_HEAD_RPC) at a node of chain {}, or serve the store of that chain (--db)",
                    lcw_schema::profile::redact_url(url),
                    chain.chain_id,
                    db.display(),
                    stored.chain_id,
                    stored.chain_id
                );
            }
            Readiness::Head { head: watch_head(chain).await, confirmations: 0 }
        }
        None => Readiness::MaxLag(args.max_lag),
    };
    let mut config = args.api.config(db.clone(), readiness)?;
    config.operator = operator(&data, wallet_chain.map(|c| NodeWallet::new(c, None, DEFAULT_MIN_TIP)));
    let _metrics = args.metrics.map(|addr| crate::cmd::settle::serve_store_metrics(addr, db.clone()));
    let rx = crate::stop_on_signal("");
    println!("GraphQL on http://{0}/graphql, dashboard on http://{0}/ (store {1})", config.listen, db.display());
    lcw_queries::serve(config, None, rx).await.with_context(|| format!("serving {}", db.display()))
}

/// `lcw serve --store postgres://…`: the API over a replica. Readiness with --head-rpc checks
/// that the replica holds the node's chain, as for a store file.
async fn serve_replica(args: &ServeArgs, url: lcw_replica::ReplicaUrl) -> anyhow::Result<()> {
    let readiness = match &args.head_rpc {
        Some(rpc) => {
            let chain = lcw_chain::Chain::connect(rpc, Duration::from_secs(10))
                .await
                .with_context(|| format!("connecting to {}", lcw_schema::profile::redact_url(rpc)))?;
            let (probe, timeout) = (url.clone(), Duration::from_millis(args.api.timeout_ms.max(10)));
            let stored = tokio::task::spawn_blocking(move || -> anyhow::Result<Option<u64>> {
                let reader = lcw_replica::reader::Reader::connect(&probe, timeout)?;
                Ok(lcw_schema::store::chain_id(&reader)?)
            })
            .await??;
            if let Some(stored) = stored.filter(|s| *s != chain.chain_id) {
                anyhow::bail!(
                    "--head-rpc {} serves chain {}, but the replica {url} holds a store of chain {stored}; point \
                     --head-rpc (LCW_HEAD_RPC) at a node of chain {stored}, or serve that chain's replica",
                    lcw_schema::profile::redact_url(rpc),
                    chain.chain_id,
                );
            }
            Readiness::Head { head: watch_head(chain).await, confirmations: 0 }
        }
        None => Readiness::MaxLag(args.max_lag),
    };
    let mut config = args.api.config(std::path::PathBuf::new(), readiness)?;
    config.replica = Some(url.clone());
    let rx = crate::stop_on_signal("");
    let server =
        lcw_queries::Server::bind(&config, None).await.with_context(|| format!("serving the replica {url}"))?;
    println!("GraphQL on http://{0}/graphql, dashboard on http://{0}/ (replica {url})", server.local_addr()?);
    server.run(rx).await.with_context(|| format!("serving the replica {url}"))
}

/// The tip `lcw work` adds by default (its `WorkConfig`), for the runway of an API without a
/// worker in its process.
const DEFAULT_MIN_TIP: u128 = 1_000_000_000;

/// What the API cannot read from the store: the key sets in the data directory, and with a node
/// the workers' wallets.
fn operator(data: &DataArgs, wallet: Option<NodeWallet>) -> lcw_queries::Operator {
    let mut operator =
        lcw_queries::Operator::default().with_key_sets(crate::cmd::keys::key_sets_source(data.data_dir.clone()));
    if let Some(w) = wallet {
        operator = operator.with_wallet(Arc::new(w));
    }
    operator
}

/// A worker's wallet from the node: its balance at a block, and a job's gas at the fees the
/// worker would sign with (as the worker reckons its runway: ack and completion gas limits at
/// the next max fee, the blob at twice the blob base fee, each under the operator's ceiling).
struct NodeWallet {
    chain: lcw_chain::Chain,
    cap: lcw_chain::FeeCap,
    min_tip: u128,
}

impl NodeWallet {
    /// `cap`: the operator's fee ceiling, where this process has one.
    fn new(chain: lcw_chain::Chain, cap: Option<lcw_chain::FeeCap>, min_tip: u128) -> Self {
        NodeWallet { chain, cap: cap.unwrap_or(lcw_chain::FeeCap::new(u128::MAX, u128::MAX)), min_tip }
    }
}

/// An error with any URL in it redacted (it reaches the log).
fn redacted(e: impl std::fmt::Display) -> lcw_queries::operator::SourceError {
    lcw_schema::profile::redact_urls(&e.to_string()).into()
}

impl lcw_queries::WalletSource for NodeWallet {
    fn balance(
        &self,
        address: alloy::primitives::Address,
        block: u64,
    ) -> futures::future::BoxFuture<'static, Result<alloy::primitives::U256, lcw_queries::operator::SourceError>> {
        use alloy::providers::Provider;
        let chain = self.chain.clone();
        Box::pin(async move { chain.provider().get_balance(address).number(block).await.map_err(redacted) })
    }

    fn job_cost(&self) -> futures::future::BoxFuture<'static, Result<u128, lcw_queries::operator::SourceError>> {
        use alloy::providers::Provider;
        let (chain, cap, min_tip) = (self.chain.clone(), self.cap, self.min_tip);
        Box::pin(async move {
            let (fees, blob) = futures::join!(chain.fees(min_tip), chain.provider().get_blob_base_fee());
            let per_gas = fees.map_err(redacted)?.max_fee.min(cap.per_gas);
            let per_blob_gas = blob.map_err(redacted)?.max(1).saturating_mul(2).min(cap.per_blob_gas);
            let gas = u128::from(lcw_worker::pipeline::ACK_GAS + lcw_worker::pipeline::COMPLETE_GAS);
            Ok(per_gas
                .saturating_mul(gas)
                .saturating_add(per_blob_gas.saturating_mul(u128::from(alloy::eips::eip4844::DATA_GAS_PER_BLOB))))
        })
    }
}

/// Polls the node's head every 2 s into a shared number (for readiness).
async fn watch_head(chain: lcw_chain::Chain) -> Arc<AtomicU64> {
    let head = Arc::new(AtomicU64::new(chain.head().await.map(|h| h.number).unwrap_or(0)));
    let shared = head.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            match chain.head().await {
                Ok(h) => shared.store(h.number, Ordering::Relaxed),
                Err(e) => tracing::debug!(error = %e, "reading the head for readiness failed"),
            }
        }
    });
    head
}

/// Index, serve the API, and (with --keeper, --worker, --work) settle and serve jobs, in one process.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    network: NetworkArgs,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    key: KeyArgs,
    #[command(flatten)]
    api: ApiArgs,
    /// Also settle as a keeper: every worker's due releases and timeouts, for the bounties.
    #[arg(long, conflicts_with = "worker")]
    keeper: bool,
    /// Also settle this worker's jobs (with its key or any funded key).
    #[arg(long)]
    worker: Option<String>,
    /// Also serve this worker's jobs (keys in <data-dir>/keys, LLM flags as for `lcw work`);
    /// settles them too unless --keeper or --worker says otherwise.
    #[arg(long)]
    work: bool,
    #[command(flatten)]
    llm: crate::cmd::work::LlmArgs,
    #[command(flatten)]
    tuning: crate::cmd::work::WorkTuning,
    #[command(flatten)]
    sortition: crate::cmd::work::SortitionArgs,
    /// No API.
    #[arg(long)]
    no_api: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics: the indexer's, the sortition claims
    /// of the workers run beside this store, the settler's and the worker's when they run, and
    /// with --replica the replica's lag.
    #[arg(long, env = "LCW_METRICS")]
    metrics: Option<SocketAddr>,
    #[command(flatten)]
    replica: crate::cmd::replicate::KeepReplicaArgs,
}

pub(crate) async fn run(args: RunArgs, data: DataArgs) -> anyhow::Result<()> {
    let worker = args.worker.as_deref().map(parse_address).transpose().context("--worker")?;
    let replica = args.replica.url()?;
    let profile = args.network.profile(&data)?;
    let db = args.store.path(&data);
    // The worker first: its keys and LLM are checked before anything starts.
    let work = if args.work {
        let mut config = crate::cmd::work::work_config(&args.network, &args.key, &args.llm, &data, db.clone()).await?;
        args.tuning.apply(&mut config);
        args.sortition.apply(&mut config)?;
        Some(config)
    } else {
        None
    };
    let own = work.as_ref().map(|w| w.signer.clone());
    let settle_mode = match (args.keeper, worker, &own) {
        (true, ..) => Some(Mode::Keeper),
        (false, Some(w), _) => Some(Mode::Worker(w)),
        (false, None, Some(s)) => Some(Mode::Worker(s.address())),
        (false, None, None) => None,
    };
    let signer = match settle_mode {
        // Serving and settling its own jobs with one key: the outbox's lanes share its nonces.
        Some(Mode::Worker(w)) if own.as_ref().is_some_and(|s| s.address() == w) => own.clone(),
        Some(Mode::Keeper) => Some(args.key.signer(&profile, None, Some(lcw_schema::profile::Role::Keeper))?),
        Some(Mode::Worker(w)) => Some(
            args.key
                .signer(&profile, Some(w), Some(lcw_schema::profile::Role::Worker))
                .or_else(|e| args.key.signer(&profile, None, Some(lcw_schema::profile::Role::Keeper)).map_err(|_| e))?,
        ),
        None => None,
    };
    // For the API's readiness only: no round trip now, so that `lcw run` starts (and its
    // indexer, settler and worker wait for the node) while the node is down.
    let chain = lcw_chain::Chain::lazy(&profile, Duration::from_secs(10))?;
    let head = watch_head(chain).await;
    let mut api_config =
        (!args.no_api).then(|| args.api.config(db.clone(), Readiness::Head { head, confirmations: 0 })).transpose()?;
    if let Some(api) = api_config.as_mut() {
        let min_tip = work.as_ref().map_or(DEFAULT_MIN_TIP, |w| w.min_tip);
        let wallet = NodeWallet::new(
            lcw_chain::Chain::lazy(&profile, Duration::from_secs(10))?,
            Some(args.key.fees.cap()),
            min_tip,
        );
        api.operator = operator(&data, Some(wallet));
    }

    let mut signal = crate::stop_on_signal("stopping");
    // A signal stops every part; so does the worker when it ends for good (deregistered and
    // owing nothing), through the same channel.
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let on_signal = stop_tx.clone();
    tokio::spawn(async move {
        if signal.wait_for(|stopped| *stopped).await.is_ok() {
            let _ = on_signal.send(true);
        }
    });
    // The indexer's commits, as block numbers, for the API's subscriptions.
    let (commits_tx, mut commits_rx) = tokio::sync::watch::channel(lcw_indexer::Committed::default());
    let (blocks_tx, blocks_rx) = tokio::sync::watch::channel(0u64);
    tokio::spawn(async move {
        while commits_rx.changed().await.is_ok() {
            let b = commits_rx.borrow_and_update().block;
            if blocks_tx.send(b).is_err() {
                return;
            }
        }
    });
    let mut config = lcw_indexer::IndexerConfig::new(profile.clone(), db.clone());
    config.progress = lcw_indexer::ProgressMode::Logs;
    config.live.poll_interval = Duration::from_millis(100);
    config.metrics = args.metrics;
    let indexer_stop = stop.clone();
    let replica_commits = commits_tx.subscribe();
    // Through a node outage the indexer waits and starts again; the worker and the settler
    // keep their obligations.
    let mut indexer = tokio::spawn(lcw_indexer::keep_running(config, indexer_stop, Some(commits_tx)));
    // Under systemd (NOTIFY_SOCKET): READY=1, STATUS=, WATCHDOG=1 while the indexer and the worker
    // make progress, STOPPING=1 (see crate::notify).
    let supervision =
        crate::notify::Supervision::start(&profile, db.clone(), own.as_ref().map(|s| s.address()), stop.clone());
    crate::cmd::settle::wait_for_store(&db, stop.clone(), None).await?;
    // The indexer checks the store's network too, but the settler and the worker would start first.
    lcw_schema::store::Store::open_readonly_as(&db, &lcw_schema::store::Identity::of(&profile))?;

    let mut tasks: Vec<(&str, tokio::task::JoinHandle<anyhow::Result<()>>)> = Vec::new();
    if let Some(url) = replica {
        let live = crate::cmd::replicate::LiveReplica::start(url, db.clone(), replica_commits, stop.clone());
        if let Some(api) = api_config.as_mut() {
            api.replica_status = Some(live.status.clone());
        }
        // The replica is for readers: an error only a person can fix (a refused login, another
        // network's replica) ends the follower, never the settler or the worker, which keep
        // their obligations. It stays in indexerStatus.replica and the log.
        let status = live.status.clone();
        tokio::spawn(async move {
            let failure = match live.task.await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => format!("{e:#}"),
                Err(e) => format!("the replica's task failed: {e}"),
            };
            tracing::error!(
                error = %failure,
                "the PostgreSQL replica is no longer kept up to date; indexing, settling and serving jobs go on: \
                 fix the replica and restart lcw run"
            );
            status.fail(failure, lcw_schema::store::unix_now());
        });
    }
    if let (Some(api), Some(w)) = (api_config.as_mut(), work.as_ref()) {
        // The footprints of the models this worker serves, measured on its LLM server.
        let source = footprints::start(w.llm.clone(), w.models.clone(), w.live_models.clone(), stop.clone());
        api.operator = api.operator.clone().with_footprints(source);
    }
    if let Some(api) = api_config {
        println!("GraphQL on http://{0}/graphql, dashboard on http://{0}/", api.listen);
        let rx = stop.clone();
        tasks.push(("API", tokio::spawn(async move { Ok(lcw_queries::serve(api, Some(blocks_rx), rx).await?) })));
    }
    if let (Some(mode), Some(signer)) = (settle_mode, signer) {
        let mut config = SettleConfig::new(profile.clone(), db.clone(), mode, signer);
        config.fee_cap = args.key.fees.cap();
        if args.metrics.is_some() {
            let metrics = config.metrics.clone();
            lcw_indexer::metrics::register(Arc::new(move || metrics.render()));
        }
        let rx = stop.clone();
        tasks.push((
            "settler",
            tokio::spawn(async move {
                let summary = lcw_settler::settle::run(config, rx).await?;
                tracing::info!(?summary, "settler stopped");
                Ok(())
            }),
        ));
    }
    if let Some(config) = work {
        if args.metrics.is_some() {
            let metrics = config.metrics.clone();
            lcw_indexer::metrics::register(Arc::new(move || metrics.render()));
        }
        let rx = stop.clone();
        tasks.push((
            "worker",
            tokio::spawn(supervision.worker(async move {
                let summary = lcw_worker::pipeline::run(config, rx).await?;
                tracing::info!(
                    acked = summary.acked,
                    completed = summary.completed,
                    refused = summary.refused.len(),
                    failed = summary.failed.len(),
                    reverted = summary.reverted,
                    ended = %summary.ended,
                    "worker stopped"
                );
                if let lcw_worker::pipeline::Ended::Deregistered { .. } = summary.ended {
                    // Nothing left to serve or settle: the indexer, the settler and the API stop
                    // as on a signal, and lcw run exits 0.
                    tracing::warn!("lcw run stops: {}", summary.ended);
                    let _ = stop_tx.send(true);
                }
                Ok(())
            })),
        ));
    }
    supervision.started();
    let names: Vec<&str> = tasks.iter().map(|(n, _)| *n).collect();
    let handles: Vec<_> = tasks.into_iter().map(|(_, t)| t).collect();
    let others = async move {
        if handles.is_empty() {
            std::future::pending::<()>().await;
        }
        let (r, i, _) = futures::future::select_all(handles).await;
        (r, i)
    };
    tokio::select! {
        r = &mut indexer => {
            match r {
                Ok(Ok(_)) | Ok(Err(lcw_indexer::IndexerError::Interrupted)) => Ok(()),
                Ok(Err(e)) => Err(anyhow::Error::new(e).context("the indexer stopped")),
                Err(e) => Err(anyhow::anyhow!("the indexer task failed: {e}")),
            }
        }
        (r, i) = others => {
            let name = names.get(i).copied().unwrap_or("task");
            match r {
                Ok(Ok(())) if *stop.borrow() => {
                    if name == "worker" {
                        // The indexer ends its last commit before the process exits.
                        let _ = tokio::time::timeout(Duration::from_secs(10), &mut indexer).await;
                    }
                    Ok(())
                }
                Ok(Ok(())) => Err(anyhow::anyhow!("the {name} stopped")),
                Ok(Err(e)) => Err(e.context(format!("the {name} stopped"))),
                Err(e) => Err(anyhow::anyhow!("the {name} task failed: {e}")),
            }
        }
    }
}
