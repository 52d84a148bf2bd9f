//! The coordinator: owns the queue, pushes attempts to workers over their WebSockets, compares
//! results, and serves the user API.
//!
//! Code map:
//! - `grid`: the in-memory grid (active jobs, tasks, running attempts, connected workers) and
//!   every transition, one concept per module; calls the pure decisions in `runegrid_core` and
//!   records its effects (store changes, messages to workers, job events) as data.
//! - `app`: `App`, the grid behind its one lock with the writer, the reader, the program cache
//!   and the dashboard history; each entry point runs a transition and flushes its effects.
//! - `writer`: the one thread that writes the store, batching changes into transactions.
//! - `http`: the router: every module's routes merged, the middleware every answer passes
//!   through, `/health`, `/metrics`, `/v1/openapi.json`; its children serve accounts, jobs,
//!   job events (Server-Sent Events), uploads (programs, blobs) and workers.
//! - `api`: what handlers share: the error envelope, authentication, extractors.
//! - `submit`: job creation (used by `POST /v1/jobs` and chat requests).
//! - `metrics`: the coordinator's Prometheus metrics (`gauges` reads the grid when scraped).
//! - `limit`: per-address rate limits of the routes that need no token.
//! - `ws`: one task per worker connection: handshake, then messages in and out.
//! - `web`: the dashboard, the contribute page and the browser worker (files of `web/`, built in).
//! - `builtins`: the built-in programs (the Rune runner `rune`, the inference program `infer`),
//!   registered at startup and named in submissions.
//! - `programs`: metered modules as workers receive them, and the submission cache.
//! - `stats`: samples of the grid's activity for the dashboard.
//! - `blobs`: blobs by SHA-256: files, and with a PostgreSQL store the database behind them.
//! - `chat`: `/v1/chat/completions` and `/v1/models`: LLM inference as one-task jobs.
//!
//! Architecture Invariant: every mutation of grid state happens under the grid lock and its
//! effects are flushed in the same critical section, so the store, the workers and the
//! followers of a job see changes in the order they happened.

mod api;
mod app;
mod auth;
mod blobs;
mod books;
mod builtins;
#[cfg(test)]
mod cache_tests;
mod chat;
#[cfg(test)]
mod churn_tests;
pub mod failover;
mod grid;
mod http;
#[cfg(test)]
mod ledger_tests;
mod limit;
mod metrics;
mod programs;
#[cfg(test)]
mod regression_tests;
mod relay;
mod stats;
mod submit;
mod web;
mod writer;
mod ws;

use runegrid_store::{PostgresStore, SqliteStore, Store, StoreError};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use auth::hash_token;
pub use books::{BooksError, BooksReport, check_books, check_books_in};
pub use grid::{CreditTerms, DEFAULT_WELCOME_CREDITS, credits};
pub use http::openapi;
pub use limit::RateLimit;
pub use metrics::Metrics;

/// Where the coordinator keeps its records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StoreLocation {
    /// SQLite, the file [`DB_FILE`] in the data directory: nothing to install or run.
    #[default]
    DataDir,
    /// A PostgreSQL database (`postgres://user[:password]@host[:port]/database`), which must
    /// exist; the coordinator creates its tables.
    Postgres(String),
}

impl std::str::FromStr for StoreLocation {
    type Err = String;

    /// `sqlite` (the data directory's file) or a `postgres://` / `postgresql://` URL.
    fn from_str(s: &str) -> Result<StoreLocation, String> {
        if s == "sqlite" {
            Ok(StoreLocation::DataDir)
        } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Ok(StoreLocation::Postgres(s.to_string()))
        } else {
            Err("expected `sqlite` or a postgres:// URL".into())
        }
    }
}

impl StoreLocation {
    /// Opens a connection (creating the database file, or the tables, on first use).
    pub fn open(&self, data_dir: &Path) -> Result<Box<dyn Store>, StoreError> {
        self.open_fenced(data_dir, None)
    }

    /// Opens a connection whose writes are fenced by a lease (PostgreSQL only).
    fn open_fenced(
        &self,
        data_dir: &Path,
        fence: Option<runegrid_store::Fence>,
    ) -> Result<Box<dyn Store>, StoreError> {
        Ok(match self {
            StoreLocation::DataDir => Box::new(SqliteStore::open(&data_dir.join(DB_FILE))?),
            StoreLocation::Postgres(url) => {
                let mut s = PostgresStore::open(url)?;
                if let Some(f) = fence {
                    s.set_fence(f);
                }
                Box::new(s)
            }
        })
    }

    /// Where it is, for logs (a URL without its password).
    pub fn describe(&self, data_dir: &Path) -> String {
        match self {
            StoreLocation::DataDir => data_dir.join(DB_FILE).display().to_string(),
            StoreLocation::Postgres(url) => runegrid_store::redact_url(url),
        }
    }
}

/// How the coordinator runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Blobs, the admin token file, and (by default) the database.
    pub data_dir: PathBuf,
    /// Where the records are kept.
    pub store: StoreLocation,
    /// How often workers must send a heartbeat; three missed intervals lose the worker.
    pub heartbeat: Duration,
    /// Extra time on top of a task's wall-time limit before its attempt's lease expires.
    pub lease_grace: Duration,
    /// When workers are trusted, spot-checked and quarantined.
    pub trust: runegrid_core::TrustParams,
    /// Whether `POST /v1/contributors` makes accounts for anonymous browser contributors.
    pub open_contributions: bool,
    /// Model weight files to hold as blobs (copied into the data directory at start, unless
    /// already there), so `/v1/chat/completions` can serve them.
    pub model_files: Vec<PathBuf>,
    /// Sign-ups (`POST /v1/contributors`) one client address may make; `None`: unlimited.
    pub signup_limit: Option<RateLimit>,
    /// Where the coordinator counts what it does (`GET /metrics`); each `Config::new` makes a
    /// registry of its own.
    pub metrics: Metrics,
    /// Prices, welcome credits, whether the grid charges at all.
    pub credits: grid::CreditTerms,
    /// Bytes of verified results the result cache keeps (0: no cache).
    pub cache_bytes: u64,
    /// The lease on a PostgreSQL store (several coordinators on one database, one active).
    pub failover: failover::FailoverConfig,
}

/// Sign-ups one address may make by default: a burst of 20, then 30 a minute.
pub const DEFAULT_SIGNUP_LIMIT: RateLimit = RateLimit {
    burst: 20,
    per_minute: 30,
};

impl Config {
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Config {
        Config {
            listen,
            data_dir,
            store: StoreLocation::DataDir,
            heartbeat: Duration::from_secs(2),
            lease_grace: Duration::from_secs(10),
            trust: runegrid_core::TrustParams::default(),
            open_contributions: true,
            model_files: Vec::new(),
            signup_limit: Some(DEFAULT_SIGNUP_LIMIT),
            metrics: Metrics::new(),
            credits: grid::CreditTerms::default(),
            cache_bytes: grid::DEFAULT_CACHE_BYTES,
            failover: failover::FailoverConfig::default(),
        }
    }
}

/// A coordinator failure at startup.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("store: {0}")]
    Store(#[from] runegrid_store::StoreError),
    #[error("cannot use data directory {path}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server: {0}")]
    Serve(std::io::Error),
    #[error("cannot use the model file {path}: {message}")]
    Model { path: String, message: String },
    #[error("cannot register the built-in program {0}: {1}")]
    Builtin(&'static str, String),
    #[error(transparent)]
    Failover(#[from] failover::FailoverError),
}

/// A running coordinator.
pub struct Running {
    pub addr: SocketAddr,
    /// Path of the file holding the admin token (written on first start).
    pub admin_token_file: PathBuf,
    pub server: tokio::task::JoinHandle<Result<(), CoordinatorError>>,
    app: Arc<app::App>,
    lease: Option<failover::Keeper>,
}

impl Running {
    /// Waits until every state change made so far is committed: call before exiting so a
    /// stopped coordinator leaves nothing to redo.
    pub async fn flush(&self) {
        self.app.flush_trust();
        self.app.writer.flush().await;
    }

    /// A clean stop: flushes, then gives the lease up (when on a shared database) so that a
    /// standby takes over at once.
    pub async fn shutdown(&self) {
        self.flush().await;
        if let Some(lease) = &self.lease {
            lease.release().await;
        }
    }
}

/// A coordinator listening, not serving yet (see [`Bound::activate`]).
pub struct Bound {
    pub addr: SocketAddr,
    config: Config,
    switch: failover::Switch,
    standby: Arc<failover::Standby>,
    server: tokio::task::JoinHandle<Result<(), CoordinatorError>>,
}

/// Name of the database file inside the data directory.
pub const DB_FILE: &str = "runegrid.sqlite";
/// Name of the admin token file inside the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Binds the listener and starts serving, once it is the active coordinator: see [`bind`] and
/// [`Bound::activate`].
pub async fn start(config: Config) -> Result<Running, CoordinatorError> {
    bind(config).await?.activate().await
}

/// Binds the listener and answers there as a standby (503 `standby`, see [`failover`]) until
/// [`Bound::activate`] switches it to the coordinator's routes.
pub async fn bind(config: Config) -> Result<Bound, CoordinatorError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| CoordinatorError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| CoordinatorError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(CoordinatorError::Serve)?;
    let standby = Arc::new(failover::Standby::default());
    let switch = failover::Switch::new(standby.router());
    let root = axum::Router::new().fallback_service(switch.clone());
    let server = tokio::spawn(async move {
        // The peer address is what rate limits count by.
        axum::serve(
            listener,
            root.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .map_err(CoordinatorError::Serve)
    });
    Ok(Bound {
        addr,
        config,
        switch,
        standby,
        server,
    })
}

impl Bound {
    /// The URL this coordinator gives as its own (`--advertise`, else its address).
    pub fn advertise(&self) -> String {
        self.config
            .failover
            .advertise
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.addr))
    }

    /// On PostgreSQL, stands by until this coordinator holds the lease; then opens the store,
    /// recovers unfinished work and serves.
    pub async fn activate(self) -> Result<Running, CoordinatorError> {
        let config = self.config.clone();
        let (fence, lease) = match &config.store {
            StoreLocation::Postgres(url) => {
                let (lease, fence) = failover::take_lease(
                    url,
                    &self.advertise(),
                    config.failover.lease_ttl,
                    self.standby.clone(),
                )
                .await?;
                (
                    Some(fence),
                    Some(failover::keep(lease, config.failover.lease_ttl)),
                )
            }
            StoreLocation::DataDir => (None, None),
        };
        let mut write_store = config.store.open_fenced(&config.data_dir, fence)?;
        let read_store = config.store.open(&config.data_dir)?;
        let admin_token_file = config.data_dir.join(ADMIN_TOKEN_FILE);
        auth::ensure_admin(
            write_store.as_mut(),
            &admin_token_file,
            config.credits.welcome,
        )?;
        // Blocking: the first start of a data directory pre-initializes the Rune runner (seconds).
        let (write_store, builtins) = tokio::task::spawn_blocking(move || {
            let registered = builtins::ALL
                .iter()
                .map(|b| Ok((b.sha256(), builtins::register(write_store.as_mut(), b)?)))
                .collect::<Result<Vec<_>, CoordinatorError>>();
            (write_store, registered)
        })
        .await
        .map_err(|e| CoordinatorError::Builtin("rune", format!("registering panicked: {e}")))?;
        let builtins = builtins?;
        let app = app::App::recover(config.clone(), write_store, read_store)?;
        for (sha, program) in builtins {
            app.cache_program(sha, Arc::new(program));
        }
        for path in &config.model_files {
            let store = app.blobs.clone();
            let p = path.clone();
            tokio::task::spawn_blocking(move || import_model(&store, &p))
                .await
                .expect("model import panicked")
                .map_err(|message| CoordinatorError::Model {
                    path: path.display().to_string(),
                    message,
                })?;
        }
        let app = Arc::new(app);
        tokio::spawn(app::ticker(app.clone()));
        tokio::spawn(app::straggler_watch(app.clone()));
        self.switch.set(http::router(app.clone()));
        let addr = self.addr;
        tracing::info!(%addr, data = %config.data_dir.display(), store = %config.store.describe(&config.data_dir), "coordinator listening");
        Ok(Running {
            app,
            addr,
            admin_token_file,
            server: self.server,
            lease,
        })
    }
}

/// Makes a model file a blob (hashing and copying it unless the blob store has it already; with
/// a PostgreSQL store, copying it into the database unless it is there: once, not at every
/// start).
fn import_model(store: &blobs::BlobStore, path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    // A known model's file already stored (its hash was checked when it was stored).
    if let Some(m) = runegrid_infer::MODELS
        .iter()
        .find(|m| m.file == name && store.size(m.sha256) == Some(meta.len()))
    {
        store.publish(m.sha256).map_err(|e| e.to_string())?;
        tracing::info!(model = m.id, blob = m.sha256, "model weights in place");
        return Ok(());
    }
    let started = std::time::Instant::now();
    let info = store.import(path, None).map_err(|e| e.to_string())?;
    match runegrid_infer::MODELS
        .iter()
        .find(|m| m.sha256 == info.sha256)
    {
        Some(m) => tracing::info!(
            model = m.id,
            blob = %info.sha256,
            ms = started.elapsed().as_millis() as u64,
            "model weights stored"
        ),
        None => tracing::warn!(
            path = %path.display(),
            blob = %info.sha256,
            "stored a file that is not the weights of a known model; jobs can mount it as a blob"
        ),
    }
    Ok(())
}

/// Reads the admin token a coordinator wrote into its data directory.
pub fn read_admin_token(data_dir: &Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(data_dir.join(ADMIN_TOKEN_FILE))?
        .trim()
        .to_string())
}
