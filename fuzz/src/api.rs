//! The GraphQL API over the small store ([`crate::store`]), served by the real router in this
//! process: a request is handed to the router as `lcw serve` hands it one, Host and local
//! address included.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode, header};
use lcw_queries::{ApiState, Db, LocalAddr, Readiness};
use tower::ServiceExt;

use crate::{scratch, store};

/// The address the API pretends to listen on.
pub const LOCAL: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);

/// The router, its runtime and its store.
pub struct Api {
    runtime: tokio::runtime::Runtime,
    app: axum::Router,
    db: String,
    _commits: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").field("db", &self.db).finish_non_exhaustive()
    }
}

impl Api {
    /// The API of this process, built on first use over a fresh store in the scratch dir.
    pub fn get() -> &'static Api {
        static API: OnceLock<Api> = OnceLock::new();
        // Start-up invariants of the targets: without the store and a runtime nothing can run.
        API.get_or_init(|| {
            let path = store::build(scratch::dir()).expect("the fuzz store builds");
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("a tokio runtime");
            let (commits, rx) = tokio::sync::watch::channel(0);
            let app = runtime.block_on(async {
                let db = Db::open(&path, 2, Duration::from_secs(2)).expect("the fuzz store opens read-only");
                let state = ApiState { db, readiness: Readiness::MaxLag(3_600), commits: rx, replica: None };
                lcw_queries::router(state, Duration::from_secs(2))
            });
            Api { runtime, app, db: path.display().to_string(), _commits: commits }
        })
    }

    /// The store's path, as the process knows it.
    pub fn db(&self) -> &str {
        &self.db
    }

    /// POSTs `body` to `/graphql` as JSON; the answer's status and body.
    pub fn post(&self, body: &[u8]) -> (StatusCode, Bytes) {
        let request = Request::post("/graphql")
            .header(header::HOST, LOCAL.to_string())
            .header(header::CONTENT_TYPE, "application/json")
            .extension(LocalAddr(LOCAL))
            .body(Body::from(body.to_vec()))
            .expect("a request from constant parts");
        self.runtime.block_on(async {
            let response = match self.app.clone().oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap_or_default();
            (status, body)
        })
    }
}
